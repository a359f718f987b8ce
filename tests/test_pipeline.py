"""The study pipeline (index → select → preprocess → runner → writers) on studies as a PACS holds them:
each class of extra instance gives the clean study's probability, from the clean study's images, with
the reasons listed; the JSON and the SR name the images read; `--strict` rejects."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
from test_selection import KINDS, mixed_study, write_clean_study
from typer.testing import CliRunner

from xpr_deploy.cli import app
from xpr_deploy.errors import PredictError
from xpr_deploy.pipeline import StudyPipeline
from xpr_deploy.results import PredictReport
from xpr_deploy.runners import make_runner, open_source


@pytest.fixture(scope="module")
def ckpt(untied_tiny_checkpoint) -> Path:
    return untied_tiny_checkpoint({"threshold": 0.5}, "pipeline")


@pytest.fixture(scope="module")
def clean_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clean_study(tmp_path_factory.mktemp("clean"))


def answers(rep: PredictReport) -> dict[str, tuple[float, str, str]]:
    return {b.laterality: (b.prob, b.cc_uid, b.mlo_uid) for b in rep.breasts}


def test_each_class_same_probability_from_the_same_images(ckpt: Path, clean_study: Path, tmp_path: Path) -> None:
    kinds = [*sorted(KINDS), "synthesized_only", "lateral", "mixed"]
    folders = {k: mixed_study(clean_study, tmp_path, k) for k in kinds}
    with StudyPipeline(ckpt, "eager") as pipeline:  # one model, opened once, for every study
        clean = pipeline.run_study(clean_study)
        assert len(clean.breasts) == 2 and not clean.rejects and not clean.not_used
        assert all(b.cc_uid and b.mlo_uid for b in clean.breasts)
        for kind in kinds:
            rep = pipeline.run_study(folders[kind])
            got = answers(rep)
            want = {k: v for k, v in answers(clean).items() if kind != "lateral" or k == "L"}
            assert got.keys() == want.keys(), (kind, rep.rejects)
            for lat, (prob, cc, mlo) in want.items():
                assert got[lat][1:] == (cc, mlo), kind  # the same images ...
                assert got[lat][0] == pytest.approx(prob, abs=1e-6), kind  # ... the same probability
            reasons = [n["reason"] for n in rep.not_used]
            for _, text in [x for k in (KINDS if kind == "mixed" else [kind]) for x in KINDS.get(k, [])]:
                assert any(text in r for r in reasons), (kind, text, reasons)
            if kind == "lateral":
                (line,) = [r["reason"] for r in rep.rejects]
                assert line.startswith("breast unpaired: no usable MLO") and "view ML is not a screening view" in line
            else:
                assert not rep.rejects, (kind, rep.rejects)
            if kind == "synthesized_only":
                assert all("synthesized 2D used" in n for b in rep.breasts for n in b.notes)


def test_json_and_sr_name_the_images_used(ckpt: Path, clean_study: Path, tmp_path: Path) -> None:
    folder = mixed_study(clean_study, tmp_path, "mixed")
    out = tmp_path / "dicom"
    runner = CliRunner()
    res = runner.invoke(app, ["predict", str(ckpt), str(folder), "--json", "--dicom-out", str(out)])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    used = {(b["cc_sop_instance_uid"], b["mlo_sop_instance_uid"]) for b in rep["breasts"]}
    files = {
        pydicom.dcmread(Path(b[v]), stop_before_pixels=True).SOPInstanceUID
        for b in rep["breasts"]
        for v in ("cc", "mlo")
    }
    assert {u for pair in used for u in pair} == files and len(files) == 4
    assert len(rep["not_used"]) == sum(len(v) for v in KINDS.values())
    assert all(n["sop_uid"] not in files or "duplicate" in n["reason"] for n in rep["not_used"])
    (sr_path,) = [Path(p) for p in rep["dicom"] if Path(p).name.startswith("sr_")]
    sr = pydicom.dcmread(sr_path)
    evidence = {
        ref.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert evidence == files  # the SR's evidence is the four images read, nothing not used
    # text mode: the decisions are printed
    res = runner.invoke(app, ["predict", str(ckpt), str(folder)])
    assert res.exit_code == 0 and res.output.count("not used ") == len(rep["not_used"])


def test_strict_and_prefer_options(ckpt: Path, clean_study: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    folder = mixed_study(clean_study, tmp_path, "combo")
    res = runner.invoke(app, ["predict", str(ckpt), str(folder), "--json", "--strict"])
    rep = json.loads(res.stdout)
    assert [b["laterality"] for b in rep["breasts"]] == ["L"]
    assert any(r["reason"].startswith("breast not clean (--strict): ") for r in rep["rejects"])
    res = runner.invoke(app, ["predict", str(ckpt), str(folder), "--json", "--prefer", "synthesized"])
    rep = json.loads(res.stdout)
    synth = pydicom.dcmread(folder / "R_CC_synthesized.dcm", stop_before_pixels=True).SOPInstanceUID
    assert {b["laterality"]: b["cc_sop_instance_uid"] for b in rep["breasts"]}["R"] == synth
    res = runner.invoke(app, ["predict", str(ckpt), str(folder), "--prefer", "newest"])
    assert res.exit_code == 2 and "newest" in res.output


def test_pipeline_runs_only_inside_its_with_block(ckpt: Path, clean_study: Path) -> None:
    pipeline = StudyPipeline(ckpt, "eager")
    with pytest.raises(PredictError, match="outside its `with` block"):
        pipeline.run_study(clean_study)
    with pipeline as p:
        first = p.run_study(clean_study, input_id="pacs#1")
        assert len(first.breasts) == 2
        assert len(p.run([clean_study, clean_study]).breasts) == 2  # the same files given twice: once
    with pytest.raises(PredictError):
        pipeline.run_study(clean_study)
    # a runner built elsewhere (the node's remote inference) goes through the same pipeline
    runner = make_runner(open_source(ckpt), "eager", selection=False)
    with StudyPipeline(ckpt, runner=runner) as p:
        assert p.runner is runner and answers(p.run_study(clean_study)) == answers(first)
