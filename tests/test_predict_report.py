"""The demo report links every artefact in the output folder with links that resolve."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

from xpr_deploy.report import REPORT_NAME, StepRecord, write_report


def test_report_links_every_artefact_and_shows_predictions(tmp_path: Path) -> None:
    out = tmp_path / "demo out"
    files = ["data/synth/a.dicom", "run/best/meta.json", "export/bundle/model.onnx", "heatmaps/s1 R.png", "x.json"]
    for f in files:
        (out / f).parent.mkdir(parents=True, exist_ok=True)
        (out / f).write_bytes(b"x" * 10)
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
        "rejects": [{"path": "/x/bad.dcm", "reason": "not a DICOM file"}],
    }  # fmt: skip
    report = write_report(out, steps, pred)
    assert report == out / REPORT_NAME
    text = report.read_text()
    targets = {unquote(t) for t in re.findall(r"\]\(([^)]+)\)", text)}
    for t in targets:
        assert (out / t).exists(), t  # every link resolves relative to the report
    assert set(files) <= targets
    assert ".cache/hidden" not in targets and REPORT_NAME not in targets
    assert "![s1 R](heatmaps/s1%20R.png)" in text  # the heatmap is shown inline
    assert "0.7300" in text and "malignant" in text and "bad.dcm" in text
    assert "**1 step(s) failed:** bench" in text  # the skipped engine step is not a failure
    assert "crashed \\| oops" in text and "bench/missing.json (missing)" in text
