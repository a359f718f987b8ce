"""The header and UID cases of the corpus (`corpus.HEADER_VALUES`) through the DICOM result writers:
each value applied to every file of a real synthetic study, then the study's SR and a heatmap
Segmentation written with `dicom_out.write_study_results` (no model needed: the writers are what
is tested). Per case (tallied as dicom/writers): nothing printed and no Python warning; nothing
written outside the output folder; an identifier that is not a valid UID gets one line and no object;
any other value gets an SR and a Segmentation valid under dciodvfy, with the attribute written empty
when it was absent, empty or invalid, and at most one warning line naming it.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from tests.fuzz.conftest import Tally
from tests.fuzz.corpus import HEADER_VALUES, header_mutation
from tests.fuzz.test_fuzz_dicom import printed
from xpr_deploy.dicom_out import (
    PATIENT_STUDY,
    SOURCE_UIDS,
    BreastDicom,
    DeviceIdentity,
    dciodvfy_errors,
    read_source,
    write_study_results,
)
from xpr_deploy.io import is_uid
from xpr_deploy.train.operating_points import OperatingPoint

DEVICE = DeviceIdentity("tiny:fuzz", "0", "f" * 64, OperatingPoint("threshold", 0.5, None, None, 0))


@pytest.fixture(scope="module")
def study_files(synth_vindr: Path) -> dict[str, bytes]:
    """The four files (L/R x CC/MLO; native, RLE and JPEG 2000) of one synthetic study."""
    folder = sorted(p for p in (synth_vindr / "images").iterdir() if p.is_dir())[0]
    files = {f.name: f.read_bytes() for f in sorted(folder.glob("*.dicom"))}
    assert len(files) == 4
    return files


def _breasts(folder: Path) -> list[BreastDicom]:
    heads = {f: read_source(f) for f in sorted(folder.glob("*.dicom"))}
    by = {(str(h.ImageLaterality), str(h.ViewPosition)): h for h in heads.values()}
    out = []
    for lat in "LR":
        sources = {"cc": by[lat, "CC"], "mlo": by[lat, "MLO"]}
        cc = sources["cc"]
        maps = {"cc": np.full((4, int(cc.Rows), int(cc.Columns)), 0.5, np.float32)} if lat == "L" else {}
        out.append(BreastDicom(lat, 0.25 if lat == "L" else 0.75, "benign" if lat == "L" else "malignant",
                               sources, maps))  # fmt: skip
    return out


def _judge(kw: str, value: bytes | None, folder: Path, out: Path) -> str | None:
    """What, if anything, broke a promise for this case (reading the results back may not warn either)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        problem = _written(kw, value, folder, out)
    if problem is None and caught:
        return f"warned: {caught[0].category.__name__}: {str(caught[0].message)[:160]}"
    return problem


def _written(kw: str, value: bytes | None, folder: Path, out: Path) -> str | None:
    with printed() as noise:
        try:
            done = write_study_results(out, {("0badc0de", folder.name): _breasts(folder)}, DEVICE)
        except Exception as exc:  # the campaign wants to see every kind
            return f"{type(exc).__name__} escaped: {str(exc)[:160]}"
    if noise[0].strip():
        return f"printed: {noise[0].strip().splitlines()[0][:160]!r}"
    if any("\n" in ln for ln in done.failures + done.warnings) or len(done.warnings) > 1:
        return f"not one line: {done.failures + done.warnings}"
    for p in done.paths:
        if out.resolve() not in p.resolve().parents:
            return f"written outside the output folder: {p}"
    if kw in SOURCE_UIDS and not is_uid(None if value is None else value.decode("latin-1")):
        if done.paths or len(done.failures) != 1 or kw not in done.failures[0]:
            return f"an invalid {kw} should give one failure line and no object: {done.failures} {done.paths}"
        return None
    if done.failures or len(done.paths) != 2:
        return f"no results: {done.failures} ({len(done.paths)} objects)"
    for p in done.paths:
        ds = pydicom.dcmread(p)
        errors = dciodvfy_errors(p, iod="ComprehensiveSR" if ds.Modality == "SR" else "Segmentation")
        if errors:
            return f"dciodvfy on {p.name}: {errors[:3]}"
        if kw in PATIENT_STUDY and PATIENT_STUDY[kw][1]:
            named = bool(done.warnings) and f"{kw} " in done.warnings[0]
            written = str(ds[kw].value or "") if kw in ds else None
            if written is None:
                return f"Type 2 {kw} missing from {p.name}"
            if named and written:
                return f"{kw} named as left empty but written as {written!r}"
            if value is not None and written and written != value.decode("latin-1").rstrip():
                return f"{kw} written as {written!r}, the source had {value!r}"
    return None


def test_header_values_through_the_writers(study_files: dict[str, bytes], tmp_path: Path, fuzz_tally: Tally) -> None:
    if shutil.which("dciodvfy") is None:
        if os.environ.get("CI"):
            pytest.fail("dciodvfy (Debian dicom3tools) is missing in CI")
        pytest.skip("dciodvfy (Debian dicom3tools) is not installed")
    absolute = Path("/tmp/abs")
    existed = absolute.exists()
    work = tmp_path / "work"
    problems = []
    for j, (kw, value) in enumerate(HEADER_VALUES):
        folder, out = work / "cases" / f"case{j:03d}", work / "out" / f"case{j:03d}"
        folder.mkdir(parents=True)
        for name, data in study_files.items():
            (folder / name).write_bytes(header_mutation(data, kw, value))
        problem = _judge(kw, value, folder, out)
        case = f"{kw}={'missing' if value is None else repr(value[:24])}"
        fuzz_tally.record("dicom/writers", case, problem)
        if problem:
            problems.append(f"{case}: {problem}")
    assert not problems, f"{len(problems)} of {len(HEADER_VALUES)} cases broke a promise:\n" + "\n".join(problems)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]
    assert sorted(p.name for p in work.iterdir()) == ["cases", "out"]
    assert absolute.exists() == existed
