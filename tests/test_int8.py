"""`xpr export --int8`: the QDQ graph, its calibration record, the verified reader, integer kernels in
ONNX Runtime's optimised graph, the `onnx-int8` backend in predict / bench / validate (tiny config)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_export_support import XPR, trained_ckpt, xpr_main  # noqa: F401  (fixture)

from xpr_deploy.export.int8 import INTEGER_KERNELS, Int8Options, calibration_set
from xpr_deploy.runners.int8 import optimized_op_counts

ENV = {**os.environ, "COLUMNS": "250"}


@pytest.fixture(scope="session")
def int8_bundle(trained_ckpt, synth_vindr, tmp_path_factory) -> Path:  # noqa: F811
    """The trained tiny checkpoint exported with --int8, calibrated on 4 synthetic breasts, validated."""
    from xpr_deploy.export import ExportOptions
    from xpr_deploy.export.bundle import load_source
    from xpr_deploy.validate import export_and_validate

    model, meta = load_source(trained_ckpt)
    out = tmp_path_factory.mktemp("int8") / "tiny-int8"
    q = Int8Options(synth_vindr, breasts=4, seed=0)
    export_and_validate(model, meta, out, ExportOptions(engine=False, with_selection=True, parity_samples=8, int8=q))
    return out


def _manifest(b: Path) -> dict:
    return json.loads((b / "manifest.json").read_text())


def test_manifest_records_the_int8_graph_and_its_calibration(int8_bundle, synth_vindr) -> None:
    m = _manifest(int8_bundle)
    assert m["graphs"]["int8"] == "model.int8.onnx" and "model.int8.onnx" in m["files"]
    assert m["model"] == "model.onnx" and m["precision"] == "fp32"  # INT8 is an option, never served by default
    c = m["int8"]["calibration"]
    assert c["method"] == "percentile" and c["breasts"] == 4 and c["seed"] == 0 and len(c["keys"]) == 4
    assert len(c["sha256"]) == 64 and m["int8"]["format"] == "QDQ" and m["int8"]["quantized_nodes"] > 0
    # the record names exactly the tensors the same choice produces again (same seed, same preprocessing)
    from xpr_deploy.train.checkpoint import read_meta

    meta = read_meta(m["source_checkpoint"]["path"])
    again = calibration_set(synth_vindr, meta, (448, 224), Int8Options(synth_vindr, breasts=4, seed=0))
    assert again.keys == c["keys"] and again.digest == c["sha256"]
    other = calibration_set(synth_vindr, meta, (448, 224), Int8Options(synth_vindr, breasts=4, seed=1))
    assert other.digest != c["sha256"]


def test_the_verified_reader_refuses_a_changed_int8_graph(int8_bundle, tmp_path: Path) -> None:
    from xpr_deploy.bundle import BundleError, BundleView

    b = tmp_path / "b"
    shutil.copytree(int8_bundle, b)
    assert BundleView.open(b).graph("int8") == b / "model.int8.onnx"
    g = b / "model.int8.onnx"
    data = bytearray(g.read_bytes())
    data[-10] ^= 0xFF
    g.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.int8\.onnx"):
        BundleView.open(b)
    r = subprocess.run([str(XPR), "verify", str(b)], capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 3 and "model.int8.onnx" in r.stderr and "Traceback" not in r.stderr


def test_onnx_runtime_runs_the_quantized_kernels_as_integer_kernels(int8_bundle) -> None:
    """ONNX Runtime's optimised graph (CPU provider, level all): every quantized Linear is an integer
    kernel (QGemm / MatMulIntegerToFloat ...), not a float op between Quantize/Dequantize pairs."""
    m = _manifest(int8_bundle)
    ops = optimized_op_counts(int8_bundle / "model.int8.onnx")
    integer = sum(ops.get(k, 0) for k in (*INTEGER_KERNELS, "QGemm"))
    assert integer == m["int8"]["quantized_nodes"], ops
    assert ops.get("Gemm", 0) == 2  # the classifier head only (kept float)
    fp32 = optimized_op_counts(int8_bundle / "model.onnx")
    assert not any(fp32.get(k, 0) for k in (*INTEGER_KERNELS, "QGemm"))


def test_window_scoring_reads_float_tensors(int8_bundle) -> None:
    """Norms, TopK, Gather and ScatterND never read a DequantizeLinear output: the kept windows are
    ranked on float values, and every Q/DQ pair feeds an integer kernel only."""
    import onnx

    g = onnx.load(str(int8_bundle / "model.int8.onnx")).graph
    producer = {o: n.op_type for n in g.node for o in n.output}
    for n in g.node:
        if n.op_type in ("ReduceL2", "TopK", "Gather", "ScatterND", "LayerNormalization", "Softmax", "Add"):
            assert all(producer.get(i) != "DequantizeLinear" for i in n.input), n.name


def test_validate_has_an_int8_row_with_pruning_aware_parity(int8_bundle) -> None:
    rep = json.loads((int8_bundle / "parity.json").read_text())
    row = next(c for c in rep["candidates"] if c["name"] == "onnxruntime-int8")
    assert row["status"] in ("pass", "fail") and row["runner"]["backend"] == "onnx-int8"
    assert row["runner"]["precision"] == "int8" and row["decision_flips"] is not None
    assert row["blocks"] and all("min_jaccard" in b for b in row["blocks"])
    assert "decision flips <= 0" in row["gate"]
    assert rep["tolerances"]["onnxruntime-int8"]["max_decision_flips"] == 0
    assert row["status"] == "pass", row["reason"]
    assert row["decision_flips"] == 0 and row["selection_flips"] == 0 and row["max_abs_prob_all"] < 5e-2


def test_predict_runs_the_int8_backend(int8_bundle, synth_vindr) -> None:
    study = next(p for p in sorted(synth_vindr.rglob("*")) if p.is_dir() and any(p.glob("*.dicom")))
    runs = {}
    for b in ("onnx", "onnx-int8"):
        r = subprocess.run([str(XPR), "predict", str(int8_bundle), str(study), "-b", b, "--json"],
                           capture_output=True, text=True, timeout=600, env=ENV)  # fmt: skip
        assert r.returncode == 0, r.stderr
        runs[b] = json.loads(r.stdout)
    assert runs["onnx-int8"]["backend"] == "onnx-int8"
    p32 = [x["prob"] for x in runs["onnx"]["breasts"]]
    p8 = [x["prob"] for x in runs["onnx-int8"]["breasts"]]
    assert p8 and len(p8) == len(p32) and max(abs(a - b) for a, b in zip(p8, p32, strict=True)) < 0.05


def test_cpp_runtime_runs_the_int8_graph(int8_bundle, synth_vindr, xpr_infer: Path) -> None:
    """`xpr_infer --graph int8` (the C API's `xpr_options.graph`) runs the bundle's QDQ graph in ONNX
    Runtime: each breast's probability is `xpr predict -b onnx-int8`'s, not the FP32 graph's; a
    precision the bundle lacks, and TensorRT asked to run a graph, are one-line refusals."""
    from test_engines_cpp import _cpp  # xpr_infer's JSON line, with "_exit" and "_stderr"

    from xpr_deploy.predict import predict

    runs = {b: predict(int8_bundle, [synth_vindr], backend=b).breasts for b in ("onnx", "onnx-int8")}
    assert len(runs["onnx"]) == len(runs["onnx-int8"]) >= 4
    same = moved = 0.0  # C++ INT8 against Python INT8; C++ INT8 against C++ FP32
    for p32, p8 in zip(runs["onnx"], runs["onnx-int8"], strict=True):
        int8 = _cpp(xpr_infer, int8_bundle, p8.cc, p8.mlo, "--graph", "int8")
        assert int8["_exit"] == 0 and int8["model_file"] == "model.int8.onnx" and int8["backend"] == "onnxruntime-cpu"
        fp32 = _cpp(xpr_infer, int8_bundle, p32.cc, p32.mlo)
        assert fp32["_exit"] == 0 and fp32["model_file"] == "model.onnx"
        assert abs(int8["prob"] - p8.prob) <= 1e-5 and abs(fp32["prob"] - p32.prob) <= 1e-5, (int8, p8, fp32, p32)
        same = max(same, abs(int8["prob"] - p8.prob))
        moved = max(moved, abs(int8["prob"] - fp32["prob"]))
    print(f"\nmax |C++ int8 - Python int8| {same:.2e}, max |C++ int8 - C++ fp32| {moved:.2e}")
    assert moved > 10 * same  # the INT8 graph ran, not the FP32 one under another name

    b = runs["onnx"][0]
    for extra, said in (
        (("--graph", "fp16"), "has no 'fp16' graph"),
        (("--graph", "int8", "--backend", "tensorrt"), "is run by ONNX Runtime, not by the TensorRT backend"),
        (("--graph", "int4"), "--graph must be fp32, fp16 or int8"),
    ):
        line = _cpp(xpr_infer, int8_bundle, b.cc, b.mlo, *extra)
        err = line["_stderr"].splitlines()
        assert line["_exit"] == 2 and len(err) == 1 and said in err[0] and said in line["error"], (extra, line)


def test_bench_times_int8_against_fp32_interleaved(int8_bundle) -> None:
    from xpr_deploy.bench import bench_onnx

    rep = bench_onnx(int8_bundle, runs=1, warmup=0, threads=1, backend="onnx-int8", against=["onnx:fp32"])
    a = rep["against"]["onnx:fp32"]
    assert rep["backend"] == "onnx-int8" and rep["settings"]["precision"] == "int8"
    assert a["time_ratio"] > 0 and set(a["graph_mb"]) == {"pruned", "onnx:fp32"}
    assert a["graph_mb"]["pruned"] < a["graph_mb"]["onnx:fp32"]


def test_int8_options_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for args, want in (
        (["--int8"], "--int8 and --calib DATA go together"),
        (["--int8", "--calib", str(tmp_path / "nope")], "no such calibration dataset"),
        (["--int8", "--calib", str(tmp_path), "--calib-method", "kl"], "--calib-method must be one of"),
    ):
        cmd = ["export", "--config", "tiny", "--out", tmp_path / "b", "--no-engine", "--parity-samples", "0"]
        code, _, err = xpr_main(capsys, monkeypatch, *cmd, *args)  # in process: the claim is the message
        assert code == 2 and want in err and err.count("\n") == 1 and "Traceback" not in err, err
        assert not (tmp_path / "b").exists()
