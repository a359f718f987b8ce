"""`xpr triton`: the written config.pbtxt parses with Triton's own ModelConfig schema and says what Triton needs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from xpr_deploy.config import get_config
from xpr_deploy.triton import TritonError, write_repository

text_format = pytest.importorskip("google.protobuf.text_format")
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] not installed")

H, W = 448, 224


def _tiny_onnx(path: Path, batch: int | str) -> None:
    """A real ONNX graph with the bundle's I/O: logits = mean of each view; prob = softmax[:, 1]."""
    b: int | str = batch
    cc = helper.make_tensor_value_info("cc", TensorProto.FLOAT, [b, 1, H, W])
    mlo = helper.make_tensor_value_info("mlo", TensorProto.FLOAT, [b, 1, H, W])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [b, 2])
    prob = helper.make_tensor_value_info("prob", TensorProto.FLOAT, [b])
    axes = helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3])
    one = helper.make_tensor("one", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("ReduceMean", ["cc", "axes"], ["a"], keepdims=0),
        helper.make_node("ReduceMean", ["mlo", "axes"], ["m"], keepdims=0),
        helper.make_node("Unsqueeze", ["a", "one"], ["a1"]),
        helper.make_node("Unsqueeze", ["m", "one"], ["m1"]),
        helper.make_node("Concat", ["a1", "m1"], ["logits"], axis=1),
        helper.make_node("Softmax", ["logits"], ["sm"], axis=1),
        helper.make_node("Gather", ["sm", "one_s"], ["prob"], axis=1),
    ]
    one_s = helper.make_tensor("one_s", TensorProto.INT64, [], [1])
    graph = helper.make_graph(nodes, "tiny", [cc, mlo], [logits, prob], [axes, one, one_s])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _engine(backend: str, path: str, version: str) -> dict:
    return {
        "backend": backend, "version": version, "compute_capability": "8.6", "compute_capabilities": ["8.6"],
        "hw_compat": "same", "flags": [], "strongly_typed": True, "timing_cache_sha256": None, "path": path,
        "sha256": "0" * 64, "onnx": "model.onnx", "plugins_required": [],
    }  # fmt: skip


def _manifest(batch: int | str, engines: list[dict] | None = None, with_selection: bool = False) -> dict:
    """Follows export/manifest.schema.json (checked below for the static case)."""
    outputs = [
        {"name": "logits", "dtype": "float32", "shape": [batch, 2]},
        {"name": "prob", "dtype": "float32", "shape": [batch]},
    ]
    if with_selection:
        outputs.append({"name": "sel_cc_s1_b0", "dtype": "int64", "shape": [batch, 64]})
    return {
        "format": "xpr-bundle",
        "format_version": 2,
        "name": "xpr_tiny",
        "toolkit_version": "0.1.0",
        "created_utc": "2026-11-28T13:00:00Z",
        "model": "model.onnx",
        "graphs": {"fp32": "model.onnx"},
        "precision": "fp32",
        "opset": 18,
        "ir_version": 10,
        "batch": 1,
        "inputs": [
            {"name": "cc", "dtype": "float32", "shape": [batch, 1, H, W]},
            {"name": "mlo", "dtype": "float32", "shape": [batch, 1, H, W]},
        ],
        "outputs": outputs,
        "io": {"cc": "cc", "mlo": "mlo", "logits": "logits", "prob": "prob"},
        "model_config": {**get_config("tiny").to_dict(), "img_size": [H, W], "prune_rates": [0.5] * 4},
        "preprocessing": {"version": "xpr-preproc-1"},
        "label_rule": "birads-4-5",
        "class_names": ["benign", "malignant"],
        "threshold": 0.42,
        "blocks": [
            {"view": "cc", "stage": 1, "block": 0, "window_grid": [16, 8], "windows": 128, "k": 64, "pruned": True}
        ],
        "source_checkpoint": {"path": None, "weights_sha256": None, "random_seed": 0},
        "engines": engines or [],
        "files": {"model.onnx": "0" * 64},
        "manifest_sha256": "0" * 64,
    }


def _bundle(tmp_path: Path, batch: int = 1, max_batch: int | None = None, **kw) -> Path:
    """A sealed bundle: every file hashed (engines get placeholder bytes), as `xpr export` writes it.
    `max_batch`: a dynamic batch axis (-1 in the manifest's shapes, `batch` in the graph's)."""
    from xpr_deploy.bundle import write_sealed
    from xpr_deploy.io import sha256_file

    bundle = tmp_path / "bundle"
    bundle.mkdir(parents=True)
    _tiny_onnx(bundle / "model.onnx", batch if max_batch is None else "batch")
    m = _manifest(batch if max_batch is None else -1, **kw)
    if max_batch is not None:
        m["max_batch"] = max_batch
    for i, e in enumerate(m["engines"]):
        path = bundle / e["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(np.arange(64, dtype=np.uint8).tobytes() + bytes([i]))
        e["sha256"] = sha256_file(path)
    m["files"] = {p.relative_to(bundle).as_posix(): sha256_file(p) for p in bundle.rglob("*") if p.is_file()}
    write_sealed(bundle, m)
    return bundle


def _parse(path: Path):
    text = path.read_text()
    cfg = text_format.Parse(text, model_config_pb2.ModelConfig())
    # round trip: what the schema prints parses back to the same message
    again = text_format.Parse(text_format.MessageToString(cfg), model_config_pb2.ModelConfig())
    assert again == cfg
    return cfg


def test_fixture_is_a_verified_bundle(tmp_path: Path) -> None:
    from xpr_deploy.bundle import BundleView

    view = BundleView.open(_bundle(tmp_path, engines=[_engine("tensorrt", "model.sm86.engine", "11.4.0")]))
    assert view.engines[0].flavour == "tensorrt"


def test_static_bundle_gives_max_batch_0_with_batch_in_dims(tmp_path: Path) -> None:
    res = write_repository(_bundle(tmp_path), tmp_path / "repo", instances=2)
    m, py = res.models
    assert py.platform == "python" and _parse(py.config).max_batch_size == 0
    assert m.path == tmp_path / "repo" / "xpr_tiny_onnx" / "1" / "model.onnx"
    assert onnx.load(str(m.path)).graph.input[0].name == "cc"
    cfg = _parse(m.config)
    dt = model_config_pb2.DataType
    assert cfg.name == "xpr_tiny_onnx" and cfg.platform == "onnxruntime_onnx"
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [
        ("cc", dt.TYPE_FP32, [1, 1, H, W]),
        ("mlo", dt.TYPE_FP32, [1, 1, H, W]),
    ]
    assert [(o.name, list(o.dims)) for o in cfg.output] == [("logits", [1, 2]), ("prob", [1])]
    assert cfg.output[0].label_filename == "labels.txt"
    assert (m.config.parent / "labels.txt").read_text().split() == ["benign", "malignant"]
    assert cfg.instance_group[0].count == 2
    assert cfg.parameters["xpr_threshold"].string_value == "0.42"
    assert cfg.parameters["xpr_preprocessing"].string_value == "xpr-preproc-1"


def test_static_bundle_refuses_max_batch(tmp_path: Path) -> None:
    with pytest.raises(TritonError, match="static batch"):
        write_repository(_bundle(tmp_path), tmp_path / "repo", max_batch=8)


def test_dynamic_batch_bundle_gives_max_batch_and_the_batcher(tmp_path: Path) -> None:
    res = write_repository(_bundle(tmp_path, max_batch=8, with_selection=True), tmp_path / "repo")
    onnx_m, py = res.models
    for m in (onnx_m, py):
        cfg = _parse(m.config)
        assert cfg.max_batch_size == 8 and cfg.HasField("dynamic_batching")
        assert list(cfg.input[0].dims) == [1, H, W]
        assert [list(o.dims) for o in cfg.output] == [[2], [1], [64]]
    with pytest.raises(TritonError, match="more than the bundle takes"):
        write_repository(_bundle(tmp_path / "b", max_batch=8), tmp_path / "repo2", max_batch=16)
    res = write_repository(_bundle(tmp_path / "c", max_batch=8), tmp_path / "repo3", max_batch=2)
    assert _parse(res.models[1].config).max_batch_size == 2


def test_onnx_model_is_planned_like_the_validated_session(tmp_path: Path) -> None:
    """The onnxruntime_onnx model asks Triton's backend for the session options xpr validates with
    (memory-pattern planner off, sequential); the python model and the engine model get none of them."""
    from xpr_deploy.runners.onnxrt import OrtSettings, session_options, triton_parameters

    res = write_repository(_bundle(tmp_path), tmp_path / "repo")
    onnx_model, py = res.models
    params = {k: v.string_value for k, v in _parse(onnx_model.config).parameters.items()}
    assert params["enable_mem_pattern"] == "0" and params["execution_mode"] == "0" and params["enable_mem_arena"] == "1"
    assert "intra_op_thread_count" not in params  # xpr's default: ONNX Runtime picks the thread count
    assert not {"enable_mem_pattern", "execution_mode"} & set(_parse(py.config).parameters)
    two = triton_parameters(OrtSettings(threads=2, low_memory=False, cpu_arena=False))
    assert two == {"enable_mem_pattern": "1", "enable_mem_arena": "0", "execution_mode": "0",
                   "intra_op_thread_count": "2", "inter_op_thread_count": "1"}  # fmt: skip
    assert session_options(OrtSettings()).enable_mem_pattern is False


def test_python_model_copies_the_bundle_and_names_its_environment(tmp_path: Path) -> None:
    from xpr_deploy.bundle import BundleView
    from xpr_deploy.triton import PythonModelOptions

    bundle = _bundle(tmp_path)
    opts = PythonModelOptions(kind="auto", instances=3, threads=2, sys_path=("/np1", "/src"), dynamic_batching=False)
    res = write_repository(bundle, tmp_path / "repo", python=opts)
    py = res.models[-1]
    assert py.platform == "python" and py.path.name == "model.py" and "XprTritonModel" in py.path.read_text()
    cfg = _parse(py.config)
    assert cfg.backend == "python" and not cfg.platform
    assert cfg.instance_group[0].count == 3
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.Kind.KIND_AUTO
    assert json.loads(cfg.parameters["xpr_sys_path"].string_value) == ["/np1", "/src"]
    assert cfg.parameters["xpr_threads"].string_value == "2" and cfg.parameters["xpr_backend"].string_value == "onnx"
    copy = BundleView.open(py.path.parent / "bundle")  # the copy verifies, and is the same bundle
    assert copy.digest == BundleView.open(bundle).digest == cfg.parameters["xpr_bundle_sha256"].string_value
    with pytest.raises(TritonError, match="--kind"):
        write_repository(bundle, tmp_path / "repo", python=PythonModelOptions(kind="tpu"))
    res = write_repository(bundle, tmp_path / "repo4", python=PythonModelOptions(enabled=False))
    assert [m.platform for m in res.models] == ["onnxruntime_onnx"]


def test_dynamic_batch_config_leaves_batch_out_of_dims(tmp_path: Path) -> None:
    """The config writer alone, for a dynamic batch axis named by a symbol."""
    from xpr_deploy.triton import TensorSpec, config_pbtxt

    ins = [TensorSpec(n, "float32", ("batch", 1, H, W)) for n in ("cc", "mlo")]
    outs = [TensorSpec("logits", "float32", ("batch", 2)), TensorSpec("prob", "float32", ("batch",)),
            TensorSpec("sel_cc_s1_b0", "int64", ("batch", 64))]  # fmt: skip
    path = tmp_path / "config.pbtxt"
    path.write_text(config_pbtxt("m", "onnxruntime_onnx", ins, outs, 8, 1, "KIND_AUTO", "model.onnx", {}, path))
    cfg = _parse(path)
    assert cfg.max_batch_size == 8 and cfg.HasField("dynamic_batching")
    assert list(cfg.input[0].dims) == [1, H, W]
    logits, prob, sel = cfg.output
    assert list(logits.dims) == [2]
    # a [B] output under batching: dims [1] reshaped to a scalar per request
    assert list(prob.dims) == [1] and prob.HasField("reshape") and list(prob.reshape.shape) == []
    assert sel.data_type == model_config_pb2.DataType.TYPE_INT64 and list(sel.dims) == [64]


def test_versions_accumulate(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    write_repository(bundle, tmp_path / "repo")
    res = write_repository(bundle, tmp_path / "repo")
    assert res.models[0].version == 2
    assert sorted(p.name for p in (tmp_path / "repo" / "xpr_tiny_onnx").iterdir() if p.is_dir()) == ["1", "2"]


def test_tensorrt_engine_gets_tensorrt_plan_and_rtx_is_skipped(tmp_path: Path) -> None:
    engines = [
        _engine("tensorrt-rtx", "rtx/model.sm86.engine", "1.7.1"),
        _engine("tensorrt", "model.sm86.engine", "11.4.0"),
    ]
    bundle = _bundle(tmp_path, engines=engines)
    res = write_repository(bundle, tmp_path / "repo")
    assert [m.platform for m in res.models] == ["onnxruntime_onnx", "tensorrt_plan", "python"]
    assert any("TensorRT-RTX" in s for s in res.skipped)
    trt = res.models[1]
    assert trt.path.name == "model.plan" and trt.path.read_bytes() == (bundle / "model.sm86.engine").read_bytes()
    cfg = _parse(trt.config)
    assert cfg.platform == "tensorrt_plan" and cfg.default_model_filename == "model.plan"
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.Kind.KIND_GPU
    assert cfg.parameters["xpr_engine_version"].string_value == "11.4.0"


def test_not_a_bundle_names_the_folder(tmp_path: Path) -> None:
    from xpr_deploy.bundle import BundleError

    with pytest.raises(BundleError, match=str(tmp_path)):
        write_repository(tmp_path, tmp_path / "repo")


def test_cli(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from xpr_deploy.cli import app

    bundle = _bundle(tmp_path)
    res = CliRunner().invoke(
        app, ["triton", str(bundle), "--repo", str(tmp_path / "repo"), "--instances", "2", "--json"]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert [m["platform"] for m in out["models"]] == ["onnxruntime_onnx", "python"]
    assert _parse(Path(out["models"][0]["config"])).instance_group[0].count == 2
    res = CliRunner().invoke(app, ["triton", str(bundle), "--repo", str(tmp_path / "repo"), "--max-batch", "4"])
    assert isinstance(res.exception, TritonError) and "static batch" in str(res.exception)
