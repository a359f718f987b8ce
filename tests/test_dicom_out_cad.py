"""Issue 23 item 5: the Mammography CAD SR (TID 4000), `--sr tid1500|mammo-cad|both`.

The objects come from real `xpr predict` runs of the tiny model on synthetic studies; they are
checked by DICOM's own tools (dicom3tools `dciodvfy`, DCMTK `dsrdump`, which reads the tree against
the Mammography CAD SR IOD's relationship constraints and its root template) and read back with
pydicom: per breast the probability, the decision and the region equal what `xpr predict --json`
printed and what the TID 1500 SR and the BINARY Segmentation of the same run say.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from xpr_deploy.cli import app
from xpr_deploy.dicom_out import (
    MAMMO_CAD_SR_STORAGE,
    BreastDicom,
    DeviceIdentity,
    dciodvfy_errors,
    dsrdump_errors,
    read_mammo_cad,
    read_source,
    write_study_results,
)
from xpr_deploy.train.operating_points import OperatingPoint

DCIODVFY = shutil.which("dciodvfy")
DSRDUMP = shutil.which("dsrdump")
CAD = "Mammography CAD SR"
#: the Type 2 patient and study attributes a de-identified export may leave out altogether
TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
         "ReferringPhysicianName", "StudyID", "AccessionNumber")  # fmt: skip


def _need_tools() -> None:
    if DCIODVFY is None or DSRDUMP is None:
        pytest.skip("dciodvfy (Debian dicom3tools) and dsrdump (Debian dcmtk) are needed: scripts/system_deps.sh")


def _predict(ckpt: Path, study: Path, out: Path, sr: str) -> dict:
    res = CliRunner().invoke(app, ["predict", str(ckpt), str(study), "--dicom-out", str(out), "--sr", sr, "--json"])
    assert res.exit_code == 0, (res.output, res.exception)
    return json.loads(res.stdout)


def _by_class(out: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for p in sorted(out.rglob("*.dcm")):
        found.setdefault(str(pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID), []).append(p)
    return found


@pytest.fixture(scope="module")
def ckpt(untied_tiny_checkpoint) -> Path:
    return untied_tiny_checkpoint({"threshold": 0.5}, "ckpt-cad")


@pytest.fixture(scope="module")
def study(synth_vindr: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two VinDr studies (both breasts each) of the session's synthetic set."""
    root = tmp_path_factory.mktemp("cad-studies")
    for s in sorted((synth_vindr / "images").iterdir())[:2]:
        shutil.copytree(s, root / s.name)
    return root


@pytest.fixture(scope="module")
def both(ckpt: Path, study: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("cad-both")
    return _predict(ckpt, study, out, "both"), out


def test_sr_both_writes_a_mammography_cad_sr_that_dciodvfy_and_dsrdump_accept(both: tuple[dict, Path]) -> None:
    _need_tools()
    rep, out = both
    objs = _by_class(out)
    cads = objs.get(MAMMO_CAD_SR_STORAGE, [])
    assert len(cads) == 2 and len(objs["1.2.840.10008.5.1.4.1.1.88.33"]) == 2  # and the TID 1500 SR, per study
    assert sorted(str(p) for ps in objs.values() for p in ps) == sorted(rep["dicom"]) and rep["notes"] == []
    for p in cads:
        assert dciodvfy_errors(p, iod="MammographyCADSR") == [], p
        assert dsrdump_errors(p, document=CAD) == [], p
        ds = pydicom.dcmread(p)
        assert ds.Modality == "SR" and ds.ContentTemplateSequence[0].TemplateIdentifier == "4000"
        assert "NOT FOR CLINICAL USE" in ds.SeriesDescription and p.name.startswith(f"sr_{ds.SOPInstanceUID}_")
        names = [str(c.ConceptNameCodeSequence[0].CodeValue) for c in ds.ContentSequence]
        assert names == ["121049", "111028", "111017", "111064", "111065"]  # TID 4000's rows, in order
        entries = ds.ContentSequence[1].ContentSequence
        assert len(entries) == 4 and all("ConceptNameCodeSequence" not in i for i in entries)
        for summary in ds.ContentSequence[3:5]:  # detections, analyses: succeeded, from the library's 4 images
            assert summary.ConceptCodeSequence[0].CodeValue == "111222"
            performed = summary.ContentSequence[0].ContentSequence[0]
            refs = [list(c.ReferencedContentItemIdentifier) for c in performed.ContentSequence if "ValueType" not in c]
            assert refs == [[1, 2, k] for k in range(1, 5)]


def _polyline(group_roi: pydicom.Dataset) -> list[tuple[float, float]]:
    pts = [float(v) for v in group_roi.GraphicData]
    return [(pts[i], pts[i + 1]) for i in range(0, len(pts), 2)]


def _tid1500_regions(path: Path) -> dict[str, list[tuple[float, float]]]:
    """SOP Instance UID -> the region polyline of the TID 1500 SR of the same run."""
    import highdicom as hd

    sr = hd.sr.srread(path)
    out = {}
    for g in sr.content.get_planar_roi_measurement_groups():
        uid = str(g.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        out[uid] = _polyline(g.roi)
    return out


def _binary_seg_boxes(out: Path) -> dict[str, tuple[float, float, float, float]]:
    """SOP Instance UID -> the bounding box (x0, y0, x1, y1, pixel edges) of the largest connected part
    of the last stage's segment of the BINARY Segmentation: the region rule, from another object."""
    import highdicom as hd
    from scipy import ndimage

    boxes = {}
    for p in sorted(out.rglob("seg_*.dcm")):
        seg = hd.seg.segread(p)
        ref = str(seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID)
        arr = seg.get_pixels_by_source_instance([ref], combine_segments=False)[0, ..., -1] > 0
        labels, n = ndimage.label(arr)
        if n > 1:
            arr = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
        rows, cols = np.flatnonzero(arr.any(axis=1)), np.flatnonzero(arr.any(axis=0))
        boxes[ref] = (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))
    return boxes


def test_mammography_cad_sr_reads_back_what_predict_printed(both: tuple[dict, Path]) -> None:
    rep, out = both
    cads = _by_class(out)[MAMMO_CAD_SR_STORAGE]
    tid1500 = {}
    for p in _by_class(out)["1.2.840.10008.5.1.4.1.1.88.33"]:
        tid1500.update(_tid1500_regions(p))
    boxes = _binary_seg_boxes(out)
    read = {}
    for p in cads:
        study_uid, breasts = read_mammo_cad(p)
        for lat, b in breasts.items():
            read[(study_uid, lat)] = b
    assert len(read) == len(rep["breasts"]) == 4
    for printed in rep["breasts"]:
        study_uid = str(pydicom.dcmread(printed["cc"], stop_before_pixels=True).StudyInstanceUID)
        b = read[(study_uid, printed["laterality"])]
        assert b.prob == pytest.approx(printed["prob"], abs=1e-7)
        assert b.positive == (printed["decision"] == "malignant") == (printed["prob"] >= rep["threshold"])
        assert printed["decision"] in b.impression and f"operating point {rep['operating_point']}" in b.impression
        images = {printed["cc_sop_instance_uid"], printed["mlo_sop_instance_uid"]}
        assert set(b.outlines) == set(b.centers) == images  # the region on the CC and on the MLO
        for uid, outline in b.outlines.items():
            assert outline == tid1500[uid]  # the region the TID 1500 SR draws
            x0, y0, x1, y1 = boxes[uid]
            assert outline == [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
            assert b.centers[uid] == ((x0 + x1) / 2, (y0 + y1) / 2)


def test_sr_mammo_cad_alone_and_a_deidentified_study(
    ckpt: Path, study: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """`--sr mammo-cad` writes the CAD SR and no TID 1500 SR; a study whose Type 2 patient and study
    attributes (and image orientation and spacing) are absent still gets a valid one."""
    _need_tools()
    deid = tmp_path / "deid"
    src = sorted(p for p in study.iterdir() if p.is_dir())[0]
    (deid / src.name).mkdir(parents=True)
    for f in sorted(src.glob("*.dicom")):
        ds = pydicom.dcmread(f)
        for kw in (*TYPE2, "PatientOrientation", "ImagerPixelSpacing", "PixelSpacing", "ViewCodeSequence"):
            if kw in ds:
                delattr(ds, kw)
        ds.PatientIdentityRemoved = "YES"
        ds.save_as(deid / src.name / f.name)
    out = tmp_path / "out"
    rep = _predict(ckpt, deid, out, "mammo-cad")
    objs = _by_class(out)
    assert list(objs) != [] and "1.2.840.10008.5.1.4.1.1.88.33" not in objs and len(objs[MAMMO_CAD_SR_STORAGE]) == 1
    (cad,) = objs[MAMMO_CAD_SR_STORAGE]
    assert dciodvfy_errors(cad, iod="MammographyCADSR") == []
    assert dsrdump_errors(cad, document=CAD) == []
    ds = pydicom.dcmread(cad)
    assert all(ds.get(kw) in ("", None) for kw in TYPE2)  # written empty: Type 2
    _, breasts = read_mammo_cad(cad)
    assert {b["laterality"]: b["prob"] for b in rep["breasts"]} == pytest.approx(
        {lat: b.prob for lat, b in breasts.items()}, abs=1e-7
    )


@pytest.mark.filterwarnings("error")
def test_a_breast_without_a_region_is_one_line_not_a_bad_cad_sr(synth_vindr: Path, tmp_path: Path) -> None:
    """A model without kept-window outputs gives no region: `--sr both` still writes the TID 1500 SR
    and says in one line why there is no CAD SR; `--sr mammo-cad` fails that study in one line."""
    folder = sorted(p for p in (synth_vindr / "images").iterdir() if p.is_dir())[0]
    heads = [read_source(f) for f in sorted(folder.glob("*.dicom"))]
    by = {(str(h.ImageLaterality), str(h.ViewPosition)): h for h in heads}
    device = DeviceIdentity("tiny:test", "0", "0" * 64, OperatingPoint("threshold", 0.5, None, None, 0))
    breasts = [BreastDicom(lat, 0.7, "malignant", {"cc": by[lat, "CC"], "mlo": by[lat, "MLO"]}) for lat in "LR"]
    done = write_study_results(tmp_path / "both", {("t", "s"): breasts}, device, sr="both")
    assert done.failures == [] and len(done.paths) == 1
    assert str(pydicom.dcmread(done.paths[0]).SOPClassUID) == "1.2.840.10008.5.1.4.1.1.88.33"
    (line,) = done.warnings
    assert "no Mammography CAD SR: no region for the left breast, the right breast" in line and "\n" not in line
    done = write_study_results(tmp_path / "cad", {("t", "s"): breasts}, device, sr="mammo-cad")
    assert done.paths == [] and len(done.failures) == 1 and "no Mammography CAD SR" in done.failures[0]


def test_sr_choice_is_checked_and_named(
    ckpt: Path, study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong `--sr` is exit 2 and one line naming the choices, before anything is written."""
    import sys

    from xpr_deploy.cli import main

    monkeypatch.setattr(sys, "argv", ["xpr", "predict", str(ckpt), str(study), "--dicom-out", str(tmp_path / "o"),
                                      "--sr", "cad"])  # fmt: skip
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "--sr is one of tid1500, mammo-cad, both" in err and not (tmp_path / "o").exists()


def test_dsrdump_check_catches_what_the_iod_forbids(both: tuple[dict, Path], tmp_path: Path) -> None:
    """The checker is not a rubber stamp: a relationship the Mammography CAD SR IOD forbids (an IMAGE
    under a CONTAINER by HAS PROPERTIES), a missing root template, and another SR class are errors."""
    _need_tools()
    _, out = both
    cad = _by_class(out)[MAMMO_CAD_SR_STORAGE][0]
    ds = pydicom.dcmread(cad)
    ds.ContentSequence[1].ContentSequence[0].RelationshipType = "HAS PROPERTIES"
    ds.save_as(tmp_path / "relationship.dcm")
    ds = pydicom.dcmread(cad)
    del ds.ContentTemplateSequence
    ds.save_as(tmp_path / "template.dcm")
    errors = dsrdump_errors(tmp_path / "relationship.dcm", document=CAD)
    assert errors and any("Cannot add" in e for e in errors)
    assert any("Template Identifier 4000" in e for e in dsrdump_errors(tmp_path / "template.dcm", document=CAD) or [])
    tid1500 = _by_class(out)["1.2.840.10008.5.1.4.1.1.88.33"][0]
    assert any("not read as a Mammography CAD SR" in e for e in dsrdump_errors(tid1500, document=CAD) or [])


def _rect_maps(ds: pydicom.Dataset, stages: int = 4) -> np.ndarray:
    maps = np.zeros((stages, int(ds.Rows), int(ds.Columns)), np.float32)
    maps[:, 20:60, 10:50] = 1.0
    return maps


@pytest.mark.filterwarnings("error")
def test_hostile_image_attributes_never_reach_the_cad_sr(synth_vindr: Path, tmp_path: Path) -> None:
    """The Image Library copies laterality, view, orientation and spacing from source headers: values
    that are not well-formed (a view code with control characters, an orientation of free text,
    non-finite or absurd spacing) are left out or replaced by the view read, and the document stays
    valid; the region is the heatmap's, in stored-pixel coordinates."""
    _need_tools()
    from pydicom.dataset import Dataset

    folder = sorted(p for p in (synth_vindr / "images").iterdir() if p.is_dir())[1]
    heads = [read_source(f) for f in sorted(folder.glob("*.dicom"))]
    by = {(str(h.ImageLaterality), str(h.ViewPosition)): h for h in heads}
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "399162004\x07", "SCT", "cranio\x1bcaudal"
    by["L", "CC"].ViewCodeSequence = [code]
    by["L", "CC"].PatientOrientation = ["ANTERIOR", "R"]
    by["L", "MLO"].ImagerPixelSpacing = [1e9, 0.1]
    by["R", "CC"].PatientName = "Doe^Jane\x1b$B"  # a control character: left empty, named in a note
    device = DeviceIdentity("tiny:test", "0", "0" * 64, OperatingPoint("threshold", 0.5, None, None, 0))
    breasts = [
        BreastDicom(lat, p, d, {v: by[lat, v.upper()] for v in ("cc", "mlo")},
                    {v: _rect_maps(by[lat, v.upper()]) for v in ("cc", "mlo")})
        for lat, p, d in (("L", 0.25, "benign"), ("R", 0.75, "malignant"))
    ]  # fmt: skip
    done = write_study_results(tmp_path, {("t", "s"): breasts}, device, sr="mammo-cad", seg="binary")
    assert done.failures == [] and len(done.paths) == 5  # the CAD SR and 4 BINARY Segmentations
    (cad,) = [p for p in done.paths if str(pydicom.dcmread(p).SOPClassUID) == MAMMO_CAD_SR_STORAGE]
    assert dciodvfy_errors(cad, iod="MammographyCADSR") == []
    assert dsrdump_errors(cad, document=CAD) == []
    text = cad.read_bytes()
    assert b"\x07" not in text and b"\x1b" not in text and b"ANTERIOR" not in text and b"1000000000" not in text
    _, read = read_mammo_cad(cad)
    assert (read["L"].prob, read["L"].positive, read["R"].prob, read["R"].positive) == (0.25, False, 0.75, True)
    for b in read.values():
        assert all(
            o == [(10.0, 20.0), (50.0, 20.0), (50.0, 60.0), (10.0, 60.0), (10.0, 20.0)] for o in b.outlines.values()
        )
        assert all(c == (30.0, 40.0) for c in b.centers.values()) and len(b.outlines) == 2
    assert any("PatientName" in w for w in done.warnings)
