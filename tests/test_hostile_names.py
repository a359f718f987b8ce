"""Issue 21 classes 1 and 5, issue 22's de-identified study: header values never choose where a result
is written, and ordinary (absent, empty, invalid) header values never break the DICOM results.

Studies are real synthetic DICOM files whose headers are edited with pydicom; `xpr predict` runs as a
subprocess (its real stderr is checked: no traceback, no Python warning) with a tiny eager checkpoint.
Every written object is checked with `dciodvfy`, which must also recognise it as the IOD it claims.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest

from xpr_deploy.data.synth import write_synthetic
from xpr_deploy.dicom_out import (
    PATIENT_STUDY,
    DicomOutError,
    clean_source,
    dciodvfy_errors,
    derived_uid,
    object_path,
    write_study_results,
)
from xpr_deploy.io import OutputError, is_uid, uid_name

REPO = Path(__file__).resolve().parents[1]
DCIODVFY = shutil.which("dciodvfy")
TYPE2 = [kw for kw, (_, type2) in PATIENT_STUDY.items() if type2]
#: a name OUT/<study>/ and the heatmap folder may hold: a valid UID or x+hash, then our suffixes
SAFE_NAME = re.compile(
    r"^(x[0-9a-f]{32}|[0-9.]{1,64})(_[LR])?(_[0-9a-f]{8})?(\.png)?$|^(sr|seg)_[0-9.]+_[0-9a-f]{8}\.dcm$"
)


def _need_dciodvfy() -> None:
    if DCIODVFY is None:
        if os.environ.get("CI"):
            pytest.fail("dciodvfy (Debian dicom3tools) is missing in CI")
        pytest.skip("dciodvfy (Debian dicom3tools) is not installed")


@pytest.fixture(scope="module")
def ckpt(untied_tiny_checkpoint: Callable[..., Path]) -> Path:
    return untied_tiny_checkpoint({}, "ckpt-hostile-names")


@pytest.fixture(scope="module")
def base_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic VinDr study (both breasts, CC + MLO each) to clone. Do not modify."""
    root = tmp_path_factory.mktemp("hostile-base")
    write_synthetic(root, 2, "vindr", size=(320, 160), seed=5)
    return next(p for p in (root / "images").iterdir() if p.is_dir())


Edit = Any  # a value, None (removed), or a callable(file index) -> value


def clone(src: Path, dst: Path, key: str, edits: dict[str, Edit] | None = None) -> str:
    """A copy of the study `src` in `dst` with new UIDs (from `key`), then `edits` applied to every
    file (keyword -> value; None removes it; a callable gets the file's index). Returns the study UID."""
    dst.mkdir(parents=True)
    study = derived_uid("test-study", key)
    for i, f in enumerate(sorted(src.glob("*.dicom"))):
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = derived_uid("test-series", key, str(ds.SeriesInstanceUID))
        sop = pydicom.uid.UID(derived_uid("test-sop", key, str(i)))
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about the invalid values we mean to write
            for kw, v in (edits or {}).items():
                v = v(i) if callable(v) else v
                if v is None:
                    if kw in ds:
                        delattr(ds, kw)
                else:
                    setattr(ds, kw, v)
            ds.save_as(dst / f.name)
    return study


def _set(ds: pydicom.Dataset, **values: object) -> None:
    """Set (hostile) values without pydicom's warnings about them: the test means them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for kw, v in values.items():
            setattr(ds, kw, v)


def _xpr(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "xpr_deploy.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip


def _files(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def _clean_run(res: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """Exit 0, and nothing on stderr at all (--json: no traceback, no Python or pydicom warning)."""
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stderr.strip() == "", res.stderr[-3000:]
    return json.loads(res.stdout)  # type: ignore[no-any-return]


# ---- class 1: identifiers as paths -----------------------------------------------------------------


def _hostile_values(tmp: Path) -> dict[str, str]:
    return {
        "dotdot": "../../x",
        "abs": str(tmp / "abs"),
        "slash": "a/b",
        "empty": "",
        "long": "1." * 99 + "1",  # 199 characters of UID grammar, too long for a UID
        "nul": "1.2.3\x00/../../x",
        "newline": "1.2.3\n../../x",
        "dot": "..",
        "mathtext": "1.2$\\frac{$",  # in the heatmap's title: text, not a matplotlib formula
    }


#: the Study Instance UID names folders and heatmaps: every value; the others are only referenced
HOSTILE_CASES = {
    "StudyInstanceUID": ("dotdot", "abs", "slash", "empty", "long", "nul", "newline", "dot", "mathtext"),
    "SOPInstanceUID": ("dotdot", "abs", "empty", "nul"),
    "SeriesInstanceUID": ("slash", "newline"),
}


def test_identifiers_never_choose_where_results_go(ckpt: Path, base_study: Path, tmp_path: Path) -> None:
    """Study, Series and SOP Instance UIDs that are paths, empty, over-long or hold NUL / newline:
    `predict --dicom-out --heatmaps` writes only inside OUT and H, exits 0, answers the good studies."""
    _need_dciodvfy()
    studies, work = tmp_path / "in", tmp_path / "work"
    work.mkdir()  # the cwd, and OUT/../../x is tmp_path/x: inside what the test watches
    good = [clone(base_study, studies / "good0", "good0")]
    hostile: dict[str, tuple[str, str]] = {}  # folder -> (keyword, value)
    values = _hostile_values(tmp_path)
    for kw, names in HOSTILE_CASES.items():
        for name in names:
            value = values[name]
            folder = f"{kw}-{name}"
            # distinct SOP Instance UIDs per file: four files with one UID would be one instance
            edit = (lambda i, v=value: f"{v}{i}" if v else v) if kw == "SOPInstanceUID" else value
            clone(base_study, studies / folder, folder, {kw: edit})
            hostile[folder] = (kw, value)
    before = _files(tmp_path)
    out, heat = work / "out", work / "h"
    res = _xpr("predict", ckpt, studies, "--backend", "eager", "--dicom-out", "out", "--heatmaps", "h", "--json",
               cwd=work)  # fmt: skip
    rep = _clean_run(res)
    after = _files(tmp_path)
    changed = [p for p in after if before.get(p) != after[p]]
    outside = [p for p in changed if out not in p.parents and heat not in p.parents]
    assert outside == [], outside
    assert not (tmp_path / "abs").exists() and not (tmp_path / "x").exists()
    for p in [*out.rglob("*"), *heat.rglob("*")]:  # every name is a UID, a hash, or ours
        assert SAFE_NAME.match(p.name), p
    # the good studies: both breasts, their SR and four Segmentations, valid
    answered = {(Path(b["cc"]).parent.name, b["laterality"]) for b in rep["breasts"]}
    for i, uid in enumerate(good):
        assert {(f"good{i}", "L"), (f"good{i}", "R")} <= answered
        objs = sorted((out / uid).glob("*.dcm"))
        assert [p.name[:3] for p in objs].count("sr_") == 1 and len(objs) == 5, objs
        for p in objs:
            assert dciodvfy_errors(p, iod="ComprehensiveSR" if p.name.startswith("sr_") else "Segmentation") == []
    # a hostile study is answered (JSON, heatmap) or rejected in one line; its DICOM results are
    # refused in one line naming the identifier (a result must reference valid UIDs)
    notes = rep["notes"]
    assert all("\n" not in n for n in notes) and all("\n" not in r["reason"] for r in rep["rejects"])
    for folder, (kw, _) in hostile.items():
        breasts = [b for b in rep["breasts"] if Path(b["cc"]).parent.name == folder]
        rejected = [r for r in rep["rejects"] if f"/{folder}/" in r["path"] + r["reason"]]
        assert breasts or rejected, folder
        for b in breasts:
            assert (work / b["heatmap"]).parent == heat
        if breasts:
            refused = [n for n in notes if "no DICOM results" in n and kw in n]
            assert refused, (folder, notes)
    srs = list(out.rglob("sr_*.dcm"))
    assert len(srs) == len(good), srs  # no result object for any hostile study


@pytest.mark.filterwarnings("error")  # the writers never warn: they name problems in notes
def test_names_are_made_by_the_uid_rule(tmp_path: Path) -> None:
    """object_path: a valid UID as it is; anything else a hash, never a path; always inside OUT."""
    ds = pydicom.Dataset()
    ds.Modality, ds.SOPInstanceUID = "SR", "1.2.3"
    for study in _hostile_values(tmp_path).values():
        _set(ds, StudyInstanceUID=study)
        p = object_path(tmp_path / "out", ds, "0badc0de")
        assert p.parent.parent == tmp_path / "out" and p.parent.name == uid_name(study) and not is_uid(study)
        assert p.name == "sr_1.2.3_0badc0de.dcm"
    _set(ds, StudyInstanceUID="1.2.840.1", SOPInstanceUID="../../y")
    p = object_path(tmp_path / "out", ds, "../z")
    assert p.parent == tmp_path / "out" / "1.2.840.1" and ".." not in p.name and "/" not in p.name
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "1.2.840.1").symlink_to(tmp_path)  # a link that leads out is refused
    with pytest.raises(OutputError, match="outside"):
        object_path(tmp_path / "out", ds)


# ---- class 5: de-identified and invalid patient / study values --------------------------------------

INVALID = {
    "PatientSex": "Q",
    "PatientBirthDate": "2024-13-45",
    "StudyTime": "abc",
    "StudyDate": "20240230",
    "PatientName": "A" * 100,
    "ReferringPhysicianName": "B" * 70,
    "PatientID": "1" * 80,
    "AccessionNumber": "A" * 40,
    "StudyID": "S" * 20,
}


#: study folder -> edits: every Type 2 attribute absent, empty and invalid (together, so one study
#: shows them all), and the cases the issues name alone
DEID_CASES: dict[str, dict[str, Edit]] = {
    "all-absent": dict.fromkeys(TYPE2),
    "all-empty": dict.fromkeys(TYPE2, ""),
    "all-invalid": INVALID,
    "absent-PatientBirthDate": {"PatientBirthDate": None},
    "invalid-PatientSex": {"PatientSex": "Q"},
    "invalid-PatientBirthDate": {"PatientBirthDate": "2024-13-45"},
    "invalid-StudyTime": {"StudyTime": "abc"},
}


def test_deidentified_and_invalid_values_still_get_valid_results(ckpt: Path, base_study: Path, tmp_path: Path) -> None:
    """Each Type 2 patient/study attribute absent, empty, or invalid: the SR and the Segmentations are
    written, valid under dciodvfy, the attribute present and empty; an invalid value is named in one
    note line for its study; nothing on stderr."""
    _need_dciodvfy()
    studies = tmp_path / "in"
    cases = DEID_CASES
    uids = {name: clone(base_study, studies / name, name, edits) for name, edits in cases.items()}
    res = _xpr("predict", ckpt, studies, "--backend", "eager", "--dicom-out", tmp_path / "out", "--json",
               cwd=tmp_path)  # fmt: skip
    rep = _clean_run(res)
    assert len(rep["breasts"]) == 2 * len(cases) and rep["rejects"] == []
    for name, edits in cases.items():
        uid = uids[name]
        objs = sorted((tmp_path / "out" / uid).glob("*.dcm"))
        assert len(objs) == 5, (name, objs)
        for p in objs:
            sr = p.name.startswith("sr_")
            assert dciodvfy_errors(p, iod="ComprehensiveSR" if sr else "Segmentation") == [], (name, p)
            ds = pydicom.dcmread(p)
            for kw in edits:
                assert kw in ds and str(ds[kw].value or "") == "", (name, kw, ds.get(kw))
        mine = [n for n in rep["notes"] if n.startswith(uid)]
        if "invalid" in name:  # one line per study, naming each invalid value
            assert len(mine) == 1 and "empty" in mine[0], (name, rep["notes"])
            assert all(f"{kw} " in mine[0] for kw in edits), (name, mine)
        else:
            assert mine == [], (name, mine)


@pytest.mark.filterwarnings("error")  # the writers never warn: they name problems in notes
def test_clean_source_keeps_valid_values_and_drops_the_rest(base_study: Path) -> None:
    f = sorted(base_study.glob("*.dicom"))[0]
    ds = pydicom.dcmread(f, stop_before_pixels=True)
    ds.PatientName, ds.PatientSex, ds.PatientBirthDate = "ANONYMOUS", "O", "19700101"  # one-component PN is valid
    ds.PatientComments, ds.EthnicGroup = "not for results", "X"  # Patient module, not copied
    ds.ClinicalTrialSubjectID = "TRIAL-1"
    ds.PhysiciansOfRecord = "Doe^Jane"  # Study module, not copied
    clean, problems = clean_source(ds)
    assert problems == []
    assert (clean.PatientName, clean.PatientSex, clean.PatientBirthDate) == ("ANONYMOUS", "O", "19700101")
    for kw in ("PatientComments", "EthnicGroup", "ClinicalTrialSubjectID", "PhysiciansOfRecord"):
        assert kw not in clean, kw
    assert clean.Rows == ds.Rows and clean.SOPInstanceUID == ds.SOPInstanceUID and ds.PatientComments  # a copy
    _set(ds, PatientAge="abc", StudyDescription="x\\y", PatientSex="Q")  # invalid Type 3: left out and named
    clean, problems = clean_source(ds)
    assert "PatientAge" not in clean and "StudyDescription" not in clean and clean.PatientSex == ""
    assert [p.split()[0] for p in problems] == ["PatientSex", "StudyDescription", "PatientAge"]
    ds.SpecificCharacterSet, ds.PatientName = "ISO_IR 999", "Müller^Anna"
    clean, problems = clean_source(ds)
    assert clean.PatientName == "" and any(p.startswith("SpecificCharacterSet") for p in problems)
    ds.SpecificCharacterSet = "ISO_IR 192"
    clean, _ = clean_source(ds)
    assert clean.PatientName == "Müller^Anna"
    _set(ds, SeriesInstanceUID="1.2.3\n../x")
    with pytest.raises(DicomOutError, match=r"^SeriesInstanceUID '1\.2\.3\?\.\./x' is not a valid UID$"):
        clean_source(ds)


# ---- a failure while writing one study -----------------------------------------------------------


def test_one_study_failing_is_one_line_and_the_other_gets_its_results(
    ckpt: Path, base_study: Path, tmp_path: Path
) -> None:
    from xpr_deploy.predict import predict

    studies, out = tmp_path / "in", tmp_path / "out"
    blocked = clone(base_study, studies / "a", "a")
    fine = clone(base_study, studies / "b", "b")
    out.mkdir()
    (out / blocked).write_text("a file where the study's folder goes\n")
    rep = predict(ckpt, [studies], backend="eager", dicom_out=out)
    assert len(rep.breasts) == 4
    failed = [n for n in rep.notes if "no DICOM results" in n]
    assert len(failed) == 1 and failed[0].startswith(f"{blocked}: no DICOM results: ") and "\n" not in failed[0]
    assert str(out / blocked) in failed[0]
    assert (out / blocked).read_text().startswith("a file")
    assert len(list((out / fine).glob("sr_*.dcm"))) == 1 and len(list((out / fine).glob("seg_*.dcm"))) == 4
    assert sorted(rep.dicom) == sorted(str(p) for p in (out / fine).glob("*.dcm"))


@pytest.mark.filterwarnings("error")  # the writers never warn: they name problems in notes
def test_a_study_the_writer_cannot_build_is_one_line(base_study: Path, tmp_path: Path) -> None:
    """Whatever fails while building one study (two studies in one SR, a heatmap of the wrong size,
    a source without Rows) is one line; the other study still gets its SR."""
    import numpy as np

    from xpr_deploy.dicom_out import BreastDicom, DeviceIdentity, read_source
    from xpr_deploy.train.operating_points import OperatingPoint

    files = sorted(base_study.glob("*.dicom"))
    heads = [read_source(f) for f in files]
    by = {(str(h.ImageLaterality), str(h.ViewPosition)): h for h in heads}
    point = OperatingPoint("threshold", 0.5, None, None, 0)
    device = DeviceIdentity("tiny:test", "0", "0" * 64, point)
    breasts = [BreastDicom(lat, 0.5, "malignant", {"cc": by[lat, "CC"], "mlo": by[lat, "MLO"]}) for lat in "LR"]
    broken = [BreastDicom(b.laterality, b.prob, b.decision, dict(b.sources)) for b in breasts]
    bad = copy.deepcopy(broken[0].sources["cc"])
    bad.StudyInstanceUID = "1.2.3.4"  # the breasts of one SR from two studies
    broken[0].sources["cc"] = bad
    maps = {"cc": np.zeros((4, 1, 1), np.float32)}  # a heatmap that does not fit the image
    odd = [BreastDicom(b.laterality, b.prob, b.decision, b.sources, maps) for b in breasts]
    no_rows = copy.deepcopy(breasts[1].sources["cc"])
    del no_rows.Rows  # not an XprError: whatever the builders raise is caught per study
    rowless = [breasts[0], BreastDicom("R", 0.5, "malignant", {**breasts[1].sources, "cc": no_rows}, maps)]
    results = {("t1", "s1"): breasts, ("t2", "s2"): broken, ("t3", "s3"): odd, ("t4", "s4"): rowless}
    done = write_study_results(tmp_path, results, device)
    assert [f.split(": ")[0] for f in done.failures] == ["s2", "s3", "s4"], done.failures
    assert "2 studies" in done.failures[0] and "does not match the source image" in done.failures[1]
    assert "AttributeError" in done.failures[2] and all("\n" not in f for f in done.failures)
    assert len(done.paths) == 1 and done.paths[0].name.startswith("sr_") and done.paths[0].is_file()


def test_dciodvfy_errors_needs_the_object_recognised(tmp_path: Path) -> None:
    _need_dciodvfy()
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\x00" * 300)
    errs = dciodvfy_errors(junk)
    assert errs and any("not recognised" in e or "Error" in e for e in errs)
    errs = dciodvfy_errors(junk, iod="ComprehensiveSR")
    assert errs and any("not recognised as ComprehensiveSR" in e for e in errs)
