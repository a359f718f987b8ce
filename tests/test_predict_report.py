"""The demo report links every artefact in the output folder with links that resolve."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

from xpr_deploy.demo_report import REPORT_NAME, StepRecord, write_demo_report


def test_report_links_every_artefact_and_shows_predictions(tmp_path: Path) -> None:
    out = tmp_path / "demo out"
    files = ["data/synth/a.dicom", "run/best/meta.json", "export/bundle/model.onnx", "heatmaps/s1 R.png", "x.json"]
    for f in files:
        (out / f).parent.mkdir(parents=True, exist_ok=True)
        (out / f).write_bytes(b"x" * 10)
    for i in range(20):  # a big folder is one line: link, count, size
        (out / "cache" / "arrays" / f"{i}.npy").parent.mkdir(parents=True, exist_ok=True)
        (out / "cache" / "arrays" / f"{i}.npy").write_bytes(b"y" * 100)
    (out / ".cache").mkdir()
    (out / ".cache" / "hidden").write_text("no")
    steps = [
        StepRecord("synth", True, 1.5, "2 studies", ["data/synth"]),
        {"name": "train", "ok": True, "seconds": 20.0, "detail": "val AUC 0.75", "artefacts": [str(out / "run")]},
        StepRecord("engine", False, None, "no GPU: BackendUnavailable", [], skipped=True),
        StepRecord("bench", False, 3.0, "crashed | oops", ["bench/missing.json"]),
    ]
    pred = {
        "backend": "eager",
        "threshold": 0.5,
        "breasts": [
            {"study": "s1", "laterality": "R", "prob": 0.73, "decision": "malignant",
             "heatmap": str(out / "heatmaps/s1 R.png")},
        ],
        "rejects": [{"path": "/x/bad.dcm", "reason": "/x/bad.dcm: not a DICOM file"}],
    }  # fmt: skip
    report = write_demo_report(out, steps, pred)
    assert report == out / REPORT_NAME
    text = report.read_text()
    targets = {unquote(t) for t in re.findall(r"\]\(([^)]+)\)", text)}
    for t in targets:
        assert (out / t).exists(), t  # every link resolves relative to the report
    assert set(files) <= targets
    assert ".cache/hidden" not in targets and REPORT_NAME not in targets
    assert "  - [cache/arrays](cache/arrays)/ (20 files, 2.0 KiB)" in text and "cache/arrays/3.npy" not in targets
    assert "`/x/bad.dcm`: not a DICOM file" in text
    assert "![s1 R](heatmaps/s1%20R.png)" in text  # the heatmap is shown inline
    assert "0.7300" in text and "malignant" in text and "bad.dcm" in text
    assert "**1 step(s) failed:** bench" in text  # the skipped engine step is not a failure
    assert "crashed \\| oops" in text and "bench/missing.json (missing)" in text


def test_demo_steps_predict_then_report(tmp_path: Path, synth_vindr: Path) -> None:
    """The two steps `xpr demo` ends with, on a context like the one earlier steps leave behind."""
    import shutil
    from types import SimpleNamespace

    import torch

    from xpr_deploy import build_model
    from xpr_deploy.config import get_config
    from xpr_deploy.data.dicom import PreprocessSettings
    from xpr_deploy.demo import predict_step, report_step
    from xpr_deploy.train.checkpoint import save_checkpoint

    cfg = get_config("tiny")
    torch.manual_seed(0)
    out = tmp_path / "demo"
    data = out / "data"
    shutil.copytree(synth_vindr, data)
    ckpt = save_checkpoint(
        out / "run" / "best", build_model(cfg), {"preprocess": PreprocessSettings.for_config(cfg).to_dict()}
    )
    studies = sorted(p.name for p in (data / "images").iterdir())[:1]
    ev = SimpleNamespace(breasts=[{"study": studies[0], "laterality": lat, "prob": -1.0} for lat in "LR"])
    steps = [{"name": "synth", "ok": True, "seconds": 1.0, "data": str(data), "breasts": 8}]
    ctx = SimpleNamespace(out=out, artifacts={"data": data, "checkpoint": ckpt, "eval": ev, "steps": steps})
    summary = predict_step(ctx)
    assert summary["breasts"] == 2 and summary["rejects"] == 2  # the broken study: two files, two reasons
    assert summary["max_abs_diff_vs_eval"] > 1.0  # compared against the (fake) eval probabilities above
    assert len(list((out / "predict" / "heatmaps").glob("*.png"))) == 2
    steps.append({"name": "predict", "ok": True, "seconds": 2.0, **summary})
    report = Path(report_step(ctx)["report"])
    text = report.read_text()
    assert "## Predictions (eager backend" in text and "truncated.dcm" in text and "README.bin" in text
    assert text.count("![") == 2 and "| predict | ok |" in text and "[data](data)" in text
    assert "[demo.json](demo.json)" in text


def test_report_resolves_cwd_relative_artefacts(tmp_path: Path, monkeypatch) -> None:
    """`xpr demo --out demo-out` records paths like demo-out/data: they exist, so they are linked."""
    monkeypatch.chdir(tmp_path)
    out = Path("demo-out")
    (out / "data").mkdir(parents=True)
    (out / "data" / "a.csv").write_text("x")
    text = write_demo_report(out, [StepRecord("synth", True, 1.0, "1 study", ["demo-out/data"])], None).read_text()
    assert "(missing)" not in text
    assert "[data](data)" in text
