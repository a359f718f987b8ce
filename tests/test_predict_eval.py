"""`xpr predict` gives `xpr eval`'s per-breast probabilities for the same breasts (eager and ONNX)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xpr_deploy.cli import app
from xpr_deploy.config import get_config

CFG = get_config("tiny")


@pytest.fixture(scope="module")
def ckpt(untied_tiny_checkpoint) -> Path:
    return untied_tiny_checkpoint({"threshold": 0.5})


def _run(*args: str) -> dict:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def _by_breast(predicted: dict) -> dict[tuple[str, str], float]:
    # VinDr's study id is the images/<study_id>/ folder; predict names studies by StudyInstanceUID
    return {(Path(b["cc"]).parent.name, b["laterality"]): b["prob"] for b in predicted["breasts"]}


@pytest.fixture(scope="module")
def evaluated(ckpt: Path, synth_vindr: Path) -> dict[tuple[str, str], float]:
    out = _run("eval", str(ckpt), str(synth_vindr), "--split", "all", "--device", "cpu", "--json")
    return {(b["study"], b["laterality"]): b["prob"] for b in out["breasts"]}


def test_eager_predict_matches_eval(ckpt: Path, synth_vindr: Path, evaluated: dict) -> None:
    pred = _by_breast(_run("predict", str(ckpt), str(synth_vindr / "images"), "--backend", "eager", "--json"))
    assert len(evaluated) == 8 and set(pred) == set(evaluated)
    for key, p in evaluated.items():
        assert pred[key] == pytest.approx(p, abs=1e-5), key


@pytest.fixture(scope="module")
def bundle(ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same checkpoint exported with kept-window outputs (no engine, no parity run: not under test here)."""
    from xpr_deploy.export.bundle import ExportOptions, export_bundle, load_source

    model, meta = load_source(ckpt)
    opts = ExportOptions(with_selection=True, engine=False, parity_samples=0)
    return export_bundle(model, meta, tmp_path_factory.mktemp("export") / "bundle", opts).path


def test_onnx_predict_matches_eval(bundle: Path, synth_vindr: Path, evaluated: dict) -> None:
    pred = _by_breast(_run("predict", str(bundle), str(synth_vindr / "images"), "--json"))
    assert set(pred) == set(evaluated)
    for key, p in evaluated.items():
        assert pred[key] == pytest.approx(p, abs=1e-5), key


def test_onnx_and_eager_keep_the_same_windows(bundle: Path, ckpt: Path, synth_vindr: Path) -> None:
    """The heatmaps of both backends come from identical kept-window sets, block by block."""
    from xpr_deploy.data.dicom import preprocess_file
    from xpr_deploy.data.folder import load_folder
    from xpr_deploy.runners import kept_windows, make_runner, open_source, probabilities

    src_b, src_c = open_source(bundle), open_source(ckpt)
    p = load_folder(sorted((synth_vindr / "images").iterdir())[0]).pairs[0]
    feed = {
        "cc": preprocess_file(p.cc, src_c.settings)[None, None],
        "mlo": preprocess_file(p.mlo, src_c.settings)[None, None],
    }
    with make_runner(src_b, "onnx") as onnx_runner, make_runner(src_c, "eager", selection=True) as eager_runner:
        out_onnx, out_eager = onnx_runner.infer(feed), eager_runner.infer(feed)
        sel_onnx = kept_windows(out_onnx, onnx_runner.selection, src_b.cfg)
        sel_eager = kept_windows(out_eager, eager_runner.selection, src_c.cfg)
    assert probabilities(out_onnx, src_b.io)[0] == pytest.approx(probabilities(out_eager, src_c.io)[0], abs=1e-5)
    assert set(sel_onnx) == set(sel_eager)
    for key in sel_eager:
        assert set(sel_onnx[key][0].tolist()) == set(sel_eager[key][0].tolist()), key


def test_engine_backend_fails_with_the_reason(bundle: Path, synth_vindr: Path) -> None:
    from xpr_deploy.bundle import BundleError
    from xpr_deploy.predict import predict

    with pytest.raises(BundleError, match="no engine"):
        predict(bundle, [synth_vindr / "images"], backend="engine")


def test_triton_repository_from_a_real_bundle(bundle: Path, tmp_path: Path) -> None:
    """What Triton's onnxruntime backend checks on load: config names, types and dims equal the graph's."""
    import onnx
    from google.protobuf import text_format

    pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] not installed")
    from xpr_deploy.triton import write_repository

    res = write_repository(bundle, tmp_path / "repo")
    m, py = res.models  # no engine in this bundle: the onnxruntime_onnx model and the python model
    assert (m.platform, py.platform) == ("onnxruntime_onnx", "python")
    cfg = text_format.Parse(m.config.read_text(), pb2.ModelConfig())
    graph = onnx.load(str(m.path)).graph
    types = {onnx.TensorProto.FLOAT: pb2.DataType.TYPE_FP32, onnx.TensorProto.INT64: pb2.DataType.TYPE_INT64}

    def dims(vi: onnx.ValueInfoProto) -> list[int]:
        return [d.dim_value for d in vi.type.tensor_type.shape.dim]

    assert cfg.max_batch_size == 0
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [
        (v.name, types[v.type.tensor_type.elem_type], dims(v)) for v in graph.input
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in cfg.output] == [
        (v.name, types[v.type.tensor_type.elem_type], dims(v)) for v in graph.output
    ]
    assert any(o.name.startswith("sel_") for o in cfg.output)


def test_engine_backend_without_a_gpu_says_why(bundle: Path, synth_vindr: Path, tmp_path: Path) -> None:
    """An engine entry that passes the hash check: no GPU here (or no TensorRT-RTX) is BackendUnavailable."""
    import hashlib
    import shutil

    from xpr_deploy.errors import BackendUnavailable
    from xpr_deploy.predict import predict
    from xpr_deploy.trt_engine.build import gpu_compute_capability

    if gpu_compute_capability() is not None:
        pytest.skip("an NVIDIA GPU is present: the engine would be loaded for real")
    from xpr_deploy.bundle import write_sealed

    copy = shutil.copytree(bundle, tmp_path / "bundle")
    engine = copy / "engines" / "model.sm86.engine"
    engine.parent.mkdir()
    engine.write_bytes(b"not really an engine")
    manifest = json.loads((copy / "manifest.json").read_text())
    try:
        import tensorrt_rtx

        version = str(tensorrt_rtx.__version__)
    except ImportError:
        version = "1.7.1.116"
    manifest["engines"] = [{
        "backend": "tensorrt-rtx", "version": version, "compute_capability": "8.6", "compute_capabilities": ["8.6"],
        "hw_compat": "same", "flags": [], "strongly_typed": True, "timing_cache_sha256": None,
        "path": "engines/model.sm86.engine", "sha256": hashlib.sha256(engine.read_bytes()).hexdigest(),
        "onnx": "model.onnx", "plugins_required": [],
    }]  # fmt: skip
    manifest["files"]["engines/model.sm86.engine"] = manifest["engines"][0]["sha256"]
    write_sealed(copy, manifest)
    with pytest.raises(BackendUnavailable, match=r"needs? an NVIDIA GPU|not available"):
        predict(copy, [synth_vindr / "images"], backend="engine")
    with pytest.raises(BackendUnavailable):
        predict(engine, [synth_vindr / "images"])  # the engine file itself as MODEL


def test_demo_predict_step_compares_onnx_with_eager(
    ckpt: Path, bundle: Path, synth_vindr: Path, tmp_path: Path
) -> None:
    from types import SimpleNamespace

    from xpr_deploy.demo import predict_step

    ctx = SimpleNamespace(out=tmp_path, artifacts={"data": synth_vindr, "checkpoint": ckpt, "bundle": bundle})
    summary = predict_step(ctx)
    assert summary["breasts"] == 8 and summary["rejects"] == 2 and summary["max_abs_diff_vs_eval"] is None
    assert summary["onnx_graph"] == "model.onnx" and summary["max_abs_diff_onnx_vs_eager"] < 1e-5
    assert json.loads(Path(summary["predictions"]).read_text())["compared"]["breasts"] == 8
