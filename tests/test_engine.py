"""Engines: TensorRT-RTX builds sm_86 engines from the FP32, FP16 and plugin graphs on this CPU;
loading checks hash / version / compute capability; inference needs a GPU (skips with the reason)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from xpr_deploy.bundle import BundleError, BundleView, write_sealed
from xpr_deploy.errors import BackendUnavailable
from xpr_deploy.runners import make_runner
from xpr_deploy.trt_engine.build import EngineOptions, build_engine, gpu_compute_capability, import_flavour
from xpr_deploy.trt_engine.checks import EngineMismatch, check_compute_capability, check_engine

trt_rtx = pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx-cu12 (extra `trt`) is not installed")


def test_rtx_builds_sm86_from_fp32_graph(fp16_bundle, tmp_path: Path) -> None:
    info = build_engine(fp16_bundle.path / "model.onnx", tmp_path, EngineOptions(flavour="tensorrt-rtx", sm=86))
    assert info.flavour == "tensorrt-rtx" and info.version == trt_rtx.__version__
    assert info.compute_capabilities == ["8.6"] and info.path == tmp_path / "model.sm86.engine"
    assert info.size_bytes > 1_000_000 and info.timing_cache_sha256 is None  # RTX: timing cache is a no-op


def test_rtx_engine_from_fp16_graph_in_bundle(fp16_bundle) -> None:
    (eng,) = fp16_bundle.manifest["engines"]
    assert eng["onnx"] == "model.fp16.onnx" and eng["build_seconds"] > 0
    assert (fp16_bundle.path / eng["path"]).stat().st_size == eng["size_bytes"]


def test_rtx_engine_from_plugin_graph_uses_the_function_body(plugin_bundle) -> None:
    (eng,) = plugin_bundle.manifest["engines"]
    assert eng["plugins"] == {"XprWindowSelect": "local-function"}


def test_rtx_ampere_plus_targets_several_ccs(plugin_bundle, tmp_path: Path) -> None:
    info = build_engine(
        plugin_bundle.path / "model.onnx", tmp_path, EngineOptions(hw_compat="ampere+", flavour="tensorrt-rtx")
    )
    assert {"8.0", "8.6", "8.9"} <= set(info.compute_capabilities)


def _copy(bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "b"
    shutil.copytree(bundle, dst)
    return dst


def test_engine_hash_mismatch_fails_clearly(fp16_bundle, tmp_path: Path) -> None:
    """An edited engine is refused by the bundle reader before any TensorRT code runs."""
    b = _copy(fp16_bundle.path, tmp_path)
    eng = b / "engines" / "model.sm86.engine"
    data = bytearray(eng.read_bytes())
    data[-1] ^= 0xFF
    eng.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model.sm86.engine: SHA-256 .* differs from the manifest"):
        make_runner(eng)


def test_engine_version_mismatch_fails_clearly(fp16_bundle, tmp_path: Path) -> None:
    b = _copy(fp16_bundle.path, tmp_path)
    man = json.loads((b / "manifest.json").read_text())
    man["engines"][0]["version"] = "1.0.0.1"
    write_sealed(b, man)  # a consistent (re-sealed) bundle whose engine entry names another version
    ref = BundleView.open(b / "engines" / "model.sm86.engine").engine()
    with pytest.raises(EngineMismatch, match=r"built with tensorrt-rtx 1\.0\.0\.1, this machine has"):
        check_engine(ref)


def test_compute_capability_mismatch_fails_clearly(fp16_bundle) -> None:
    (entry,) = fp16_bundle.manifest["engines"]
    check_compute_capability(entry, (8, 6))
    with pytest.raises(EngineMismatch, match=r"built for compute capability 8\.6 .* this GPU is 9\.0"):
        check_compute_capability(entry, (9, 0))


def test_missing_trt_flavour_is_backend_unavailable() -> None:
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    with pytest.raises(BackendUnavailable, match="tensorrt is not available"):
        import_flavour("tensorrt")


def test_engine_inference_or_skip_with_reason(fp16_bundle) -> None:
    """On a GPU: the engine's probability within the FP16 tolerance of ONNX Runtime; here: skip, saying why."""
    view = BundleView.open(fp16_bundle.path)
    if gpu_compute_capability() is None:
        with pytest.raises(BackendUnavailable) as exc:
            check_engine(view.engine())
        pytest.skip(str(exc.value))
    from xpr_deploy.validate import synthetic_inputs

    cc, mlo, _ = synthetic_inputs((448, 224), 2, 0)
    feed = {"cc": cc[:1], "mlo": mlo[:1]}
    with make_runner(fp16_bundle.path, "onnx", precision="fp32") as ort_runner:
        p_ref = float(ort_runner.infer(feed)["prob"][0])
    with make_runner(fp16_bundle.path, "engine") as runner:
        out = runner.infer(feed)
        out = runner.infer(feed)  # buffers allocated once, reused
    assert abs(float(out["prob"][0]) - p_ref) <= 1e-2
