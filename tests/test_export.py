"""Export: static-K ONNX bundle (FP32, strongly typed FP16, plugin mode), lint, manifest, bad input via the CLI."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from test_export_support import XPR, xpr_here

from xpr_deploy.bundle import MANIFEST_SCHEMA, SCHEMA_FILE, BundleView, schema_json
from xpr_deploy.config import get_config
from xpr_deploy.export.lint import MAX_TOPK_K, lint_model
from xpr_deploy.io import sha256_file
from xpr_deploy.model.summary import block_table
from xpr_deploy.model.xpruning import build_model


# ---- static facts ---------------------------------------------------------------------------
def test_schema_file_is_the_code_schema() -> None:
    assert SCHEMA_FILE.read_text() == schema_json()
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(MANIFEST_SCHEMA)


def test_paper_k_fits_tensorrt_topk() -> None:
    ks = [b.k for b in block_table(get_config("paper")) if b.k < b.windows]
    assert max(ks) == 1536 <= MAX_TOPK_K  # stage 1: N = 3072, K = 1536


# ---- the FP16 bundle (FP32 + FP16 graphs, selection outputs, TensorRT-RTX engine, parity) -------
def test_bundle_layout_and_manifest(fp16_bundle) -> None:
    root = fp16_bundle.path
    man = BundleView.open(root).manifest  # verified: seal, schema, paths, hashes
    assert man["model"] == "model.fp16.onnx" and man["graphs"] == {"fp32": "model.onnx", "fp16": "model.fp16.onnx"}
    assert {p.name for p in root.iterdir()} == {
        "model.onnx",
        "model.fp16.onnx",
        "engines",
        "parity.json",
        "manifest.json",
    }
    assert not list(root.parent.glob(".*tmp"))  # atomic: no temporary siblings left
    for rel, digest in man["files"].items():
        assert sha256_file(root / rel) == digest
    assert set(man["files"]) == {"model.onnx", "model.fp16.onnx", "engines/model.sm86.engine", "parity.json"}
    assert man["inputs"] == [
        {"name": "cc", "dtype": "float32", "shape": [1, 1, 448, 224]},
        {"name": "mlo", "dtype": "float32", "shape": [1, 1, 448, 224]},
    ]
    pruned = [b for b in man["blocks"] if b["pruned"]]
    assert len(man["blocks"]) == 16 and len(pruned) == 16
    assert pruned[0] == {
        "view": "cc", "stage": 1, "block": 0, "window_grid": [16, 8], "windows": 128, "k": 64,
        "shifted": False, "shift_size": [0, 0], "pruned": True, "selection_output": "sel_cc_s1_b0",
    }  # fmt: skip
    # the shift per dimension is the model's own (tiny's 14x7 stage 4 shifts rows only): C++ reads it from here
    model = build_model("tiny")
    shifts = {(b["view"], b["stage"], b["block"]): b["shift_size"] for b in man["blocks"]}
    assert shifts == {key: list(blk.shift_size) for key, blk in model.blocks()}
    assert shifts[("mlo", 4, 1)] == [3, 0] and shifts[("cc", 1, 1)] == [3, 3]
    assert [o["name"] for o in man["outputs"]][:2] == ["logits", "prob"] and len(man["outputs"]) == 18
    assert man["label_rule"] == "synthetic:lesion" and man["class_names"] == ["benign", "malignant"]
    assert man["preprocessing"]["version"] == "xpr-preproc-1" and man["threshold"] == 0.5
    assert man["source_checkpoint"]["path"] and man["source_checkpoint"]["weights_sha256"]
    (eng,) = man["engines"]
    assert eng["backend"] == "tensorrt-rtx" and eng["compute_capability"] == "8.6" and eng["onnx"] == "model.fp16.onnx"
    assert eng["path"] == "engines/model.sm86.engine" and eng["strongly_typed"] and eng["plugins_required"] == []


def test_graphs_are_static_k_and_lint_clean(fp16_bundle) -> None:
    root = fp16_bundle.path
    for name in ("model.onnx", "model.fp16.onnx"):
        proto = onnx.load(str(root / name), load_external_data=False)
        rep = lint_model(proto, expected_topk=16)
        assert rep.ok, rep.errors
        assert rep.op_counts["TopK"] == 16 and rep.topk_k == [64, 64, 16, 16, 4, 4, 64, 64, 16, 16, 4, 4, 1, 1, 1, 1]
        assert "Shape" not in rep.op_counts and "NonZero" not in rep.op_counts
        assert proto.ir_version <= 10 and proto.opset_import[0].version >= 17
        inits = {i.name: i for i in proto.graph.initializer}
        for n in proto.graph.node:
            if n.op_type in ("ScatterND", "ScatterElements"):
                assert all(a.name != "reduction" or a.s == b"none" for a in n.attribute)
            if n.op_type == "Gather":  # window-axis / token-axis indices, never K*49*C-sized
                idx = inits.get(n.input[1])
                if idx is not None:
                    assert np.prod(idx.dims) <= 2 * 448 * 224 // 16
        # attention masks are tables of distinct masks (<= 4 per shifted block), not [N, 49, 49] per window
        masks = [list(i.dims) for i in proto.graph.initializer if len(i.dims) == 3 and i.dims[1:] == [49, 49]]
        assert masks and all(m[0] <= 4 for m in masks), masks
        # windows are scored from token norms on the [1, H, W, C] map: no [1, N, 49, C] copy before TopK
        shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
                  for v in onnx.shape_inference.infer_shapes(proto).graph.value_info}  # fmt: skip
        l2_in = [shapes.get(n.input[0]) for n in proto.graph.node if n.op_type == "ReduceL2"]
        assert len(l2_in) == 16 and all(s is not None and s[2] != 49 and s[1] * s[2] % 49 == 0 for s in l2_in), l2_in


def test_fp16_graph_is_strongly_typed_with_fp32_islands(fp16_bundle) -> None:
    proto = onnx.load(str(fp16_bundle.path / "model.fp16.onnx"))
    g = proto.graph
    assert [i.type.tensor_type.elem_type for i in g.input] == [TensorProto.FLOAT] * 2
    assert [o.type.tensor_type.elem_type for o in g.output[:2]] == [TensorProto.FLOAT] * 2
    inits = {i.name: i.data_type for i in g.initializer}
    matmul_w = [inits[n.input[1]] for n in g.node if n.op_type == "MatMul" and n.input[1] in inits]
    assert matmul_w and all(t == TensorProto.FLOAT16 for t in matmul_w)
    conv_w = [inits[n.input[1]] for n in g.node if n.op_type == "Conv"]
    assert conv_w == [TensorProto.FLOAT16] * 2
    ln_scale = [inits[n.input[1]] for n in g.node if n.op_type == "LayerNormalization"]
    assert ln_scale and all(t == TensorProto.FLOAT for t in ln_scale)  # FP32 LayerNorm islands
    gemm_w = [inits[n.input[1]] for n in g.node if n.op_type == "Gemm"]
    assert gemm_w == [TensorProto.FLOAT] * 2  # the head stays FP32
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    for n in g.node:
        if n.op_type in ("TopK", "ReduceL2"):
            assert types[n.input[0]] == TensorProto.FLOAT  # window scores + TopK in FP32
    assert fp16_bundle.manifest["fp32_islands"]


def test_export_parity_meets_the_tolerances(fp16_bundle) -> None:
    rep = fp16_bundle.parity
    by = {c.name: c for c in rep.candidates}
    f32 = by["onnxruntime-fp32"]
    assert f32.status == "pass" and f32.max_abs_logits is not None and f32.max_abs_logits <= 1e-4
    # kept sets identical away from ties (a near-tie swap is reported, never hidden)
    assert f32.selection_flips == 0 and f32.tie_samples <= rep.samples // 2
    for name in ("onnxruntime-fp16", "eager-fp16"):
        assert by[name].status == "pass" and by[name].max_abs_prob_all <= 1e-2 and by[name].selection_flips == 0
    assert by["engine"].status == "skipped" and by["engine"].reason
    saved = json.loads((fp16_bundle.path / "parity.json").read_text())
    assert saved["ok"] is True and saved["reference"] == "eager-fp32" and len(saved["candidates"]) == 4


# ---- plugin mode ----------------------------------------------------------------------------
def test_plugin_graph_has_one_custom_node_per_block_and_runs_in_ort(plugin_bundle) -> None:
    import onnxruntime as ort

    root = plugin_bundle.path
    proto = onnx.load(str(root / "model.onnx"))
    nodes = [n for n in proto.graph.node if n.op_type == "XprWindowSelect"]
    assert len(nodes) == 16 and all(n.domain == "xpr" for n in nodes)
    attrs = {a.name: helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert attrs == {"k": 64, "window": 7, "plugin_version": b"2", "plugin_namespace": b"xpr"}
    inits = {i.name: i for i in proto.graph.initializer}
    assert list(inits[nodes[0].input[1]].dims) == [128, 49]  # token index [N, T] of stage 1 (tiny)
    assert [f.name for f in proto.functions] == ["XprWindowSelect"] and "TopK" not in {
        n.op_type for n in proto.graph.node
    }
    rep = lint_model(proto, expected_topk=16, plugin=True)
    assert rep.ok, rep.errors
    assert not lint_model(proto, expected_topk=16).ok  # without --plugin the custom op is an error
    by = {c.name: c for c in plugin_bundle.parity.candidates}
    assert by["onnxruntime-fp32"].status == "pass" and by["onnxruntime-fp32"].max_abs_logits <= 1e-4
    man = plugin_bundle.manifest
    assert man["plugin"]["op_type"] == "XprWindowSelect" and man["plugin"]["required_at_runtime"] is False
    (eng,) = man["engines"]
    assert eng["plugins"] == {"XprWindowSelect": "local-function"} and eng["plugins_required"] == []
    sess = ort.InferenceSession(str(root / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["logits", "prob"]


# ---- lint negatives (small hand-made graphs) --------------------------------------------------
def _graph(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    m = helper.make_model(
        helper.make_graph(nodes, "g", inputs, outputs, list(inits)), opset_imports=[helper.make_opsetid("", 18)]
    )
    m.ir_version = 10
    return m


def test_lint_rejects_dynamic_k_unknown_ops_reductions_and_dynamic_dims() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    kin = helper.make_tensor_value_info("k", TensorProto.INT64, [1])
    v = helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, None])
    i = helper.make_tensor_value_info("i", TensorProto.INT64, [1, None])
    m = _graph([helper.make_node("TopK", ["x", "k"], ["v", "i"])], [x, kin], [v, i])
    errs = " | ".join(lint_model(m).errors)
    assert "K is not a constant" in errs and "dynamic shape" in errs

    big = helper.make_tensor("kbig", TensorProto.INT64, [1], [4000])
    x2 = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5000])
    v2 = helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, 4000])
    i2 = helper.make_tensor_value_info("i", TensorProto.INT64, [1, 4000])
    m = _graph([helper.make_node("TopK", ["x", "kbig"], ["v", "i"])], [x2], [v2, i2], [big])
    assert any("outside [1, 3840]" in e for e in lint_model(m).errors)

    y = helper.make_tensor_value_info("y", TensorProto.INT64, [2, 2])
    x3 = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])
    m = _graph([helper.make_node("NonZero", ["x"], ["y"])], [x3], [y])
    assert any("NonZero" in e and "allow-list" in e for e in lint_model(m).errors)

    idx = helper.make_tensor("idx", TensorProto.INT64, [1, 1], [0])
    upd = helper.make_tensor("upd", TensorProto.FLOAT, [1, 2], [1.0, 2.0])
    out = helper.make_tensor_value_info("o", TensorProto.FLOAT, [2, 2])
    m = _graph([helper.make_node("ScatterND", ["x", "idx", "upd"], ["o"], reduction="add")], [x3], [out], [idx, upd])
    assert any("reduction" in e for e in lint_model(m).errors)
    assert lint_model(m, expected_topk=1).errors[-1].startswith("0 window selections")


# ---- bad input through the CLI: one line, non-zero exit, no partial bundle ---------------------
def _xpr(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The console script in a process of its own (the paper-size export: gigabytes, TensorRT's builder)."""
    return subprocess.run([str(XPR), *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def _one_line_error(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    assert "Traceback" not in res.stderr
    return lines[0]


def _no_bundle(parent: Path) -> None:
    left = [p.name for p in parent.iterdir()] if parent.is_dir() else []
    assert left == [] or left == ["not-a-folder"], left


def test_cli_missing_checkpoint(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    msg = _one_line_error(
        xpr_here(
            capfd, monkeypatch, "export", str(tmp_path / "nope"), "--out", str(out / "b"), "--no-engine", cwd=tmp_path
        )
    )
    assert "no such checkpoint" in msg
    _no_bundle(out)


def test_cli_corrupt_checkpoint(
    tmp_path: Path, trained_ckpt: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "meta.json").write_text("{not json")
    (bad / "model.safetensors").write_bytes(b"\x00" * 100)
    out = tmp_path / "out"
    msg = _one_line_error(
        xpr_here(capfd, monkeypatch, "export", str(bad), "--out", str(out / "b"), "--no-engine", cwd=tmp_path)
    )
    assert "corrupt" in msg
    trunc = tmp_path / "trunc"
    trunc.mkdir()
    (trunc / "meta.json").write_text((trained_ckpt / "meta.json").read_text())
    (trunc / "model.safetensors").write_bytes((trained_ckpt / "model.safetensors").read_bytes()[:5000])
    msg = _one_line_error(
        xpr_here(capfd, monkeypatch, "export", str(trunc), "--out", str(out / "b"), "--no-engine", cwd=tmp_path)
    )
    assert "model.safetensors" in msg
    _no_bundle(out)


def test_cli_unwritable_output(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the bundle's parent should be")
    t0 = time.perf_counter()
    msg = _one_line_error(
        xpr_here(
            capfd,
            monkeypatch,
            "export",
            "--config",
            "tiny",
            "--out",
            str(blocker / "b"),
            "--no-engine",
            "--parity-samples",
            "0",
            cwd=tmp_path,
        )
    )
    assert "cannot write" in msg and time.perf_counter() - t0 < 120  # fails before the export work
    assert blocker.is_file()


def test_cli_trt_flavour_tensorrt_missing(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    out = tmp_path / "out"
    msg = _one_line_error(
        xpr_here(
            capfd,
            monkeypatch,
            "export",
            "--config",
            "tiny",
            "--trt-flavour",
            "tensorrt",
            "--out",
            str(out / "b"),
            cwd=tmp_path,
        )
    )
    assert "tensorrt is not available" in msg
    _no_bundle(out)


# ---- paper size (slow) ----------------------------------------------------------------------
@pytest.mark.slow
def test_paper_fp16_export_lints_and_builds_sm86(tmp_path: Path) -> None:
    """2688x896, random weights: FP16 graph passes the lint, TensorRT-RTX builds the sm_86 engine."""
    pytest.importorskip("tensorrt_rtx")
    out = tmp_path / "paper-fp16"
    t0 = time.perf_counter()
    res = _xpr(
        "export", "--config", "paper", "--fp16", "--no-fp32", "--parity-samples", "0",
        "--trt-flavour", "tensorrt-rtx", "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    assert res.returncode == 0, res.stderr[-2000:]
    man = BundleView.open(out).manifest
    lint = man["lint"]["fp16"]
    assert lint["ok"] and lint["op_counts"]["TopK"] == 24 and max(lint["topk_k"]) == 1536
    (eng,) = man["engines"]
    assert eng["compute_capability"] == "8.6" and (out / eng["path"]).stat().st_size > 0
    print(f"\npaper fp16: export {man['timings']['export_fp16_s']} s, engine parse {eng['parse_seconds']} s, "
          f"build {eng['build_seconds']} s, total wall {wall:.0f} s")  # fmt: skip


# ---- dynamic batch (--max-batch) ------------------------------------------------------------------
def test_dynamic_batch_survives_chunked_cross_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    """The paper graph chunks its cross-attention queries (the score tensor would be 507 MiB); the
    chunk count once came from the batch size, so `--max-batch` exported a graph fixed at the example
    batch 2. Tiny with a small score budget takes the chunked path too: the batch must stay `batch`,
    and batch 3 must give each sample's batch-1 logits."""
    import onnxruntime as ort

    from xpr_deploy.export.onnx import to_proto
    from xpr_deploy.model import ctb
    from xpr_deploy.model.xpruning import random_model

    monkeypatch.setattr(ctb, "EXPORT_SCORE_BYTES", 100_000)  # tiny: 98 queries x 3136 B -> 7 chunks
    model = random_model("tiny", 0)
    proto = to_proto(model, max_batch=4)
    assert sum(n.op_type == "Softmax" and "fusion" in str(n.metadata_props) for n in proto.graph.node) > 2
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((3, 1, *model.cfg.img_size)).astype(np.float32)
    y = np.random.default_rng(2).standard_normal((3, 1, *model.cfg.img_size)).astype(np.float32)
    together = sess.run(["logits"], {"cc": x, "mlo": y})[0]
    alone = np.concatenate([sess.run(["logits"], {"cc": x[i : i + 1], "mlo": y[i : i + 1]})[0] for i in range(3)])
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_dynamic_batch_export_profile_and_batch_invariance(tmp_path: Path) -> None:
    """--max-batch 4: batch axis -1 in the manifest and `batch` in the graph, K still constants, the
    TensorRT-RTX engine gets a 1/opt/4 profile, and validate's batch invariance (each sample in a batch
    of 4 against itself alone) passes; the verified reader and the runner take 1..4 samples."""
    from xpr_deploy.export.bundle import ExportOptions, load_source
    from xpr_deploy.runners import make_runner
    from xpr_deploy.validate import export_and_validate

    model, meta = load_source(None, "tiny", 0)
    res = export_and_validate(model, meta, tmp_path / "dyn", ExportOptions(max_batch=4, parity_samples=4))
    view = BundleView.open(res.path)
    assert view.dynamic_batch and view.max_batch == 4 and view.batch == 1
    assert view.accepts_batch(3) and not view.accepts_batch(5)
    assert all(t["shape"][0] == -1 for t in [*view.inputs, *view.outputs])
    proto = onnx.load(str(view.graph()))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    rep = lint_model(proto, dynamic_batch=True)
    assert rep.ok and rep.topk_k, rep.errors
    assert not lint_model(proto).ok  # the static lint still refuses a dynamic graph
    if importlib.util.find_spec("tensorrt_rtx") is not None:  # installed (the `trt` extra, CI): the engine is built
        assert view.engines, res.manifest.get("engine_skipped")
        assert view.engines[0].entry["profile"] == {"min": 1, "opt": 1, "max": 4}
    else:
        assert res.manifest["engine_skipped"] and not view.engines
    assert res.parity is not None and res.parity.ok
    [inv] = res.parity.batch_invariance
    assert inv["batch"] == 4 and inv["ok"] and inv["max_abs_logits"] <= 1e-4 and not inv["kept_sets_differ"]
    x = np.random.default_rng(0).standard_normal((3, 1, *model.cfg.img_size)).astype(np.float32)
    with make_runner(view.root, "onnx") as r:
        assert r.infer({"cc": x, "mlo": x})["prob"].shape == (3,)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("trt_flavour", "tensorrt-llm", "--trt-flavour must be auto, tensorrt-rtx or tensorrt, not 'tensorrt-llm'"),
        ("hw_compat", "hopper+", "--hw-compat must be same or ampere+, not 'hopper+'"),
    ],
)
def test_engine_options_are_checked_against_the_manifest_schema(option: str, value: str, message: str) -> None:
    """The TensorRT flavours and hardware-compatibility levels are listed once (bundle.schema): what export
    accepts is what the manifest schema and the engine builder accept."""
    from xpr_deploy.bundle.schema import HW_COMPAT, TRT_FLAVOURS
    from xpr_deploy.errors import ConfigError
    from xpr_deploy.export import ExportOptions
    from xpr_deploy.trt_engine.build import TRT_FLAVOURS as BUILT

    engine = MANIFEST_SCHEMA["properties"]["engines"]["items"]["properties"]
    assert engine["backend"]["enum"] == list(TRT_FLAVOURS) and BUILT is TRT_FLAVOURS
    assert engine["hw_compat"]["enum"] == list(HW_COMPAT)
    with pytest.raises(ConfigError, match=f"^{message}$".replace("+", r"\+").replace("(", r"\(")):
        ExportOptions(**{option: value}).check()


def test_export_request_fails_before_the_model_is_loaded(tmp_path: Path) -> None:
    """`check_export_request` is what `xpr export` checks before loading anything: the options, and a
    TensorRT flavour asked for by name (not when --no-engine says no engine will be built);
    `int8_request`: --int8 and --calib go together."""
    from xpr_deploy.errors import BackendUnavailable, ConfigError
    from xpr_deploy.export import ExportOptions
    from xpr_deploy.export.bundle import check_export_request
    from xpr_deploy.export.int8 import Int8Options, int8_request

    check_export_request(ExportOptions(engine=False, trt_flavour="tensorrt"))
    with pytest.raises(ConfigError, match=r"^--trt-flavour must be"):
        check_export_request(ExportOptions(engine=False, trt_flavour="rtx"))
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(BackendUnavailable, match=r"^tensorrt is not available"):
            check_export_request(ExportOptions(trt_flavour="tensorrt"))
    assert int8_request(False, None) is None
    assert int8_request(True, tmp_path, 4, "entropy", 7) == Int8Options(tmp_path, 4, "entropy", seed=7)
    for int8, calib in ((True, None), (False, tmp_path)):
        with pytest.raises(ConfigError, match=r"^--int8 and --calib DATA go together"):
            int8_request(int8, calib)
