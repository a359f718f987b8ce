"""`xpr predict` on synthetic DICOM studies: good breasts predicted, bad files named, heatmaps written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from typer.testing import CliRunner

from xpr_deploy import build_model
from xpr_deploy.cli import app
from xpr_deploy.config import get_config
from xpr_deploy.data.dicom import PreprocessSettings, preprocess_file
from xpr_deploy.data.folder import load_folder
from xpr_deploy.data.synth import write_synthetic
from xpr_deploy.errors import ConfigError, PredictError, XprError
from xpr_deploy.model.xpruning import malignancy_probability
from xpr_deploy.predict import predict
from xpr_deploy.train.checkpoint import save_checkpoint

CFG = get_config("tiny")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny checkpoint, one good study (L + R) and a folder of bad studies."""
    root = tmp_path_factory.mktemp("predict")
    write_synthetic(root / "synth", breasts=2, size=(512, 256), seed=3)
    good = root / "studies" / "good"
    shutil.copytree(root / "synth" / "images", good)
    files = sorted(good.rglob("*.dicom"))
    bad = root / "studies" / "bad"
    bad.mkdir(parents=True)
    (bad / "notes.bin").write_bytes(b"this is not a DICOM file at all" * 10)
    (bad / "truncated.dcm").write_bytes(files[0].read_bytes()[:600])
    ct = pydicom.dcmread(files[0])
    ct.Modality = "CT"
    ct.StudyInstanceUID = "1.2.3.4.5.6"
    ct.save_as(bad / "ct.dcm")
    lone = pydicom.dcmread(next(f for f in files if pydicom.dcmread(f).ViewPosition == "CC"))
    lone.StudyInstanceUID = "1.2.3.4.5.7"
    lone.SOPInstanceUID = "1.2.3.4.5.7.1"
    lone.save_as(bad / "lone_cc.dcm")

    torch.manual_seed(0)
    model = build_model(CFG).eval()
    ckpt = save_checkpoint(
        root / "ckpt",
        model,
        {"threshold": 0.5, "preprocess": PreprocessSettings.for_config(CFG).to_dict(), "label_rule": "birads-4-5"},
    )
    return {"root": root, "good": good, "bad": bad, "ckpt": ckpt, "studies": root / "studies"}


def test_mixed_folder_predicts_good_and_names_bad(work: dict[str, Path]) -> None:
    rep = predict(work["ckpt"], [work["studies"]], backend="eager")
    assert sorted(b.laterality for b in rep.breasts) == ["L", "R"]
    assert all(0.0 <= b.prob <= 1.0 and b.decision in ("benign", "malignant") for b in rep.breasts)
    rejected = {Path(r["path"]).name: r["reason"] for r in rep.rejects}
    assert "not a DICOM" in rejected["notes.bin"]
    assert "truncated" in rejected["truncated.dcm"].lower()
    assert "CT" in rejected["ct.dcm"]
    assert any("unpaired" in r["reason"] and "lone_cc.dcm" in r["reason"] for r in rep.rejects)


def test_probabilities_are_the_models_on_the_preprocessed_views(work: dict[str, Path]) -> None:
    """The eager backend is the model on exactly the `xpr-preproc-1` arrays, nothing else."""
    from xpr_deploy import load_checkpoint

    rep = predict(work["ckpt"], [work["good"]])
    model, _ = load_checkpoint(work["ckpt"])
    settings = PreprocessSettings.for_config(CFG)
    for b in rep.breasts:
        cc = torch.from_numpy(preprocess_file(b.cc, settings))[None, None]
        mlo = torch.from_numpy(preprocess_file(b.mlo, settings))[None, None]
        with torch.no_grad():
            p = float(malignancy_probability(model(cc, mlo))[0])
        assert b.prob == pytest.approx(p, abs=1e-6)
    idx = load_folder(work["good"])
    assert {(p.study_id, p.laterality) for p in idx.pairs} == {(b.study, b.laterality) for b in rep.breasts}


def test_cli_json_and_exit_codes(work: dict[str, Path]) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["predict", str(work["ckpt"]), str(work["studies"]), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert len(out["breasts"]) == 2 and {"study", "laterality", "prob", "decision"} <= set(out["breasts"][0])
    assert len(out["rejects"]) >= 4 and all(set(r) == {"path", "reason"} for r in out["rejects"])
    # nothing readable: the rejects are still printed, and the exit code says it failed
    res = runner.invoke(app, ["predict", str(work["ckpt"]), str(work["bad"]), "--json"])
    assert res.exit_code == 1
    assert json.loads(res.stdout)["breasts"] == []


def test_heatmaps_for_both_views(work: dict[str, Path], tmp_path: Path) -> None:
    import matplotlib.image as mpimg

    rep = predict(work["ckpt"], [work["good"]], heatmaps_dir=tmp_path / "hm")
    assert len(rep.breasts) == 2
    for b in rep.breasts:
        assert b.heatmap is not None and Path(b.heatmap).is_file()
        png = mpimg.imread(b.heatmap)
        assert png.shape[1] > 2 * png.shape[0]  # CC and MLO panels side by side
        # the figure is not blank: the overlay colours (yellow / blue) appear
        rgb = png[..., :3]
        assert (np.abs(rgb - np.array([0.5, 0.5, 0.5])).sum(-1) > 0.3).mean() > 0.05


def test_wrong_backend_and_model_fail_with_one_line(work: dict[str, Path]) -> None:
    with pytest.raises(PredictError, match="export bundle"):
        predict(work["ckpt"], [work["good"]], backend="onnx")
    with pytest.raises(ConfigError, match="unknown backend"):
        predict(work["ckpt"], [work["good"]], backend="tensorflow")
    with pytest.raises(XprError, match=str(work["good"])):
        predict(work["good"], [work["good"]])
