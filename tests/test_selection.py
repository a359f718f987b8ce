"""Clinical image selection on real DICOM studies: a clean synthetic study (L + R, CC + MLO) with the
instances real PACS studies hold beside the screening views. Each class of extra instance leaves the
breasts answered from the clean study's images, with the reason listed; `strict` rejects it.

`mixed_study(clean, dest, kind)` is shared with tests/test_pipeline.py (the same studies through the model).
"""

from __future__ import annotations

import json
import shutil
import typing
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from xpr_deploy.cli import app
from xpr_deploy.cli.data import Prefer
from xpr_deploy.data.folder import load_folder
from xpr_deploy.data.pairs import DatasetIndex
from xpr_deploy.data.selection import PREFER, Policy
from xpr_deploy.data.synth import write_synthetic

BTO = "1.2.840.10008.5.1.4.1.1.13.1.3"  # Breast Tomosynthesis Image Storage
SC = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
MG_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
CT = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
#: each kind of study -> (breast whose extra instance it holds, text its not-used reason must contain)
KINDS: dict[str, list[tuple[str, str]]] = {
    "duplicate": [("R", "duplicate of")],
    "combo": [("R", "synthesized 2D CC"), ("R", "tomosynthesis object (Breast Tomosynthesis Image Storage)")],
    "spot_magnification": [("R", "view modifier spot compression"), ("L", "view modifier magnification")],
    "for_processing": [("R", "FOR PROCESSING image")],
    "retake": [("R", "retake: CC acquired"), ("L", "retake: MLO InstanceNumber")],
    "secondary_capture": [("R", "secondary capture")],
    "other_modality": [("L", "modality CT, not MG")],
}


def views_of(study: Path) -> dict[tuple[str, str], Path]:
    """(laterality, view) -> file of the clean study."""
    out = {}
    for f in sorted(study.iterdir()):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        out[(str(ds.ImageLaterality), str(ds.ViewPosition))] = f
    return out


def derive(src: Path, *, sop_class: str | None = None, flip: bool = True, **attrs: object) -> Dataset:
    """A new instance (new SOP Instance UID) from `src`: other pixels (flipped), `attrs` set."""
    ds = pydicom.dcmread(src)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    if sop_class is not None:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    if flip:
        ds.PixelData = np.ascontiguousarray(ds.pixel_array[::-1]).tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "SCT", meaning
    return item


def with_modifier(ds: Dataset, value: str, meaning: str) -> Dataset:
    ds.ViewCodeSequence[0].ViewModifierCodeSequence = Sequence([_code(value, meaning)])
    return ds


def mixed_study(clean: Path, dest: Path, kind: str) -> Path:
    """The clean study folder copied, with the extra instances of `kind` (KINDS, lateral, synthesized_only, mixed)."""
    folder = dest / kind
    shutil.copytree(clean, folder)
    v = views_of(folder)
    later = {"AcquisitionTime": "091500", "ContentTime": "091500"}
    kinds = [k for k in KINDS] if kind == "mixed" else [kind]
    for k in kinds:
        if k == "duplicate":  # the same instance exported twice
            shutil.copy(v["R", "CC"], folder / "zz_R_CC_exported_again.dcm")
        elif k == "combo":  # synthesized 2D (later, so only the kind preference keeps it out) + a DBT object
            generated = ["DERIVED", "PRIMARY", "TOMOSYNTHESIS", "GENERATED_2D"]
            derive(v["R", "CC"], ImageType=generated, **later).save_as(folder / "R_CC_synthesized.dcm")
            bto = derive(v["R", "MLO"], sop_class=BTO, flip=False, NumberOfFrames=3, **later)
            bto.ImageType = ["ORIGINAL", "PRIMARY", "TOMOSYNTHESIS", "NONE"]
            bto.PixelData = bto.PixelData * 3
            bto.save_as(folder / "R_MLO_tomosynthesis.dcm")
        elif k == "spot_magnification":
            with_modifier(derive(v["R", "CC"], **later), "399055006", "Spot Compression").save_as(folder / "R_spot.dcm")
            with_modifier(derive(v["L", "CC"], **later), "399163009", "Magnification").save_as(folder / "L_mag.dcm")
        elif k == "for_processing":
            derive(v["R", "MLO"], sop_class=MG_PROCESSING, PresentationIntentType="FOR PROCESSING", **later).save_as(
                folder / "R_MLO_raw.dcm"
            )
        elif k == "retake":  # an earlier acquisition, and one with a lower InstanceNumber
            derive(v["R", "CC"], AcquisitionTime="085000", ContentTime="085000").save_as(folder / "R_CC_first.dcm")
            derive(v["L", "MLO"], InstanceNumber=0).save_as(folder / "L_MLO_lower_number.dcm")
        elif k == "secondary_capture":
            derive(v["R", "CC"], sop_class=SC, **later).save_as(folder / "R_CC_capture.dcm")
        elif k == "other_modality":  # e.g. a CT localizer filed in the study
            derive(v["L", "CC"], sop_class=CT, Modality="CT", **later).save_as(folder / "L_ct.dcm")
    if kind == "lateral":  # an ML where the MLO should be: that breast cannot be answered
        ds = pydicom.dcmread(v["R", "MLO"])
        ds.ViewPosition = "ML"
        ds.ViewCodeSequence = Sequence([_code("399260004", "medial-lateral")])
        ds.ViewCodeSequence[0].ViewModifierCodeSequence = Sequence()
        ds.save_as(v["R", "MLO"])
    if kind == "synthesized_only":  # every image a synthesized 2D
        for f in v.values():
            ds = pydicom.dcmread(f)
            ds.ImageType = ["DERIVED", "PRIMARY", "TOMOSYNTHESIS", "GENERATED_2D"]
            ds.save_as(f)
    return folder


def write_clean_study(root: Path) -> Path:
    """One synthetic study: L and R, CC and MLO, uncompressed, 320x160."""
    write_synthetic(root / "synth", 2, "vindr", size=(320, 160), seed=11, transfer_syntax="uncompressed")
    study = next((root / "synth" / "images").iterdir())
    assert len(views_of(study)) == 4
    return study


@pytest.fixture(scope="module")
def clean_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clean_study(tmp_path_factory.mktemp("selection"))


def used(idx: DatasetIndex) -> dict[str, tuple[str, str]]:
    return {p.laterality: (p.cc_uid, p.mlo_uid) for p in idx.pairs}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_class_uses_the_clean_images_and_names_the_others(clean_study: Path, tmp_path: Path, kind: str) -> None:
    clean = load_folder(clean_study)
    assert len(clean.pairs) == 2 and not clean.not_used and not clean.rejects
    idx = load_folder(mixed_study(clean_study, tmp_path, kind))
    assert used(idx) == used(clean), idx.rejects
    assert not idx.rejects
    reasons = [(n.laterality, n.reason) for n in idx.not_used]
    assert len(reasons) == len(KINDS[kind])
    for lat, text in KINDS[kind]:
        assert any(lat == nlat and text in r for nlat, r in reasons), (text, reasons)
    assert all(n.sop_uid for n in idx.not_used)
    # --strict: the breast that held the extra instance is rejected, with the reason; the other is answered
    strict = load_folder(idx.root, policy=Policy(strict=True))
    hit = {lat for lat, _ in KINDS[kind]}
    assert set(used(strict)) == {"L", "R"} - hit
    for lat in hit:
        line = next(r.reason for r in strict.rejects if r.path.endswith(f"/{lat}"))
        assert line.startswith("breast not clean (--strict): ") and any(t in line for _, t in KINDS[kind])


def test_retake_later_acquisition_is_used_and_the_first_named(clean_study: Path, tmp_path: Path) -> None:
    v = views_of(clean_study)
    folder = tmp_path / "study"
    shutil.copytree(clean_study, folder)
    retake = derive(v["R", "CC"], AcquisitionTime="093000")
    retake.save_as(folder / "R_CC_retake.dcm")
    idx = load_folder(folder)
    pair = next(p for p in idx.pairs if p.laterality == "R")
    assert pair.cc_uid == retake.SOPInstanceUID and pair.cc == folder / "R_CC_retake.dcm"
    assert pair.notes == [f"CC: {retake.SOPInstanceUID} used, the latest of 2 acquired 2D CC images"]
    (gone,) = idx.not_used
    assert gone.path == str(folder / v["R", "CC"].name)
    assert gone.reason.startswith("retake: CC acquired ") and retake.SOPInstanceUID in gone.reason
    # the same times and number: no rule decides, the breast is not answered (one line)
    twin = derive(v["R", "CC"])
    twin.save_as(folder / "R_CC_retake.dcm")
    idx = load_folder(folder)
    assert set(used(idx)) == {"L"}
    (line,) = [r.reason for r in idx.rejects]
    assert line.startswith("breast ambiguous: 2 CC images equally valid")


def test_synthesized_preference(clean_study: Path, tmp_path: Path) -> None:
    folder = mixed_study(clean_study, tmp_path, "combo")
    synth_uid = pydicom.dcmread(folder / "R_CC_synthesized.dcm").SOPInstanceUID
    acquired = load_folder(folder)
    r = next(p for p in acquired.pairs if p.laterality == "R")
    assert r.cc_uid != synth_uid and not r.notes
    preferred = load_folder(folder, policy=Policy(prefer="synthesized"))
    r2 = next(p for p in preferred.pairs if p.laterality == "R")
    assert r2.cc_uid == synth_uid and r2.mlo_uid == r.mlo_uid  # no synthesized MLO: the acquired one, said
    assert r2.notes == ["MLO: acquired 2D used (the study has no synthesized 2D MLO)"]
    assert any(n.sop_uid == r.cc_uid and n.reason.startswith("acquired 2D CC") for n in preferred.not_used)
    with pytest.raises(Exception, match="prefer 'newest'"):
        Policy(prefer="newest")
    assert set(typing.get_args(Prefer)) == set(PREFER)  # the CLI's choice is the library's


def test_study_with_only_synthesized_2d_uses_it_and_says_so(clean_study: Path, tmp_path: Path) -> None:
    clean = load_folder(clean_study)
    folder = mixed_study(clean_study, tmp_path, "synthesized_only")
    idx = load_folder(folder)
    assert used(idx) == used(clean) and not idx.not_used
    for p in idx.pairs:
        assert p.notes == [
            "CC: synthesized 2D used (the study has no acquired 2D CC)",
            "MLO: synthesized 2D used (the study has no acquired 2D MLO)",
        ]
    strict = load_folder(folder, policy=Policy(strict=True))
    assert not strict.pairs and all("--strict" in r.reason for r in strict.rejects)
    assert len(load_folder(folder, policy=Policy(prefer="synthesized", strict=True)).pairs) == 2


def test_lateral_instead_of_mlo_is_one_line_for_that_breast(clean_study: Path, tmp_path: Path) -> None:
    clean = load_folder(clean_study)
    idx = load_folder(mixed_study(clean_study, tmp_path, "lateral"))
    assert used(idx) == {"L": used(clean)["L"]}
    (n,) = idx.not_used
    assert n.reason == "view ML is not a screening view (CC or MLO)" and n.laterality == "R"
    (r,) = idx.rejects
    assert r.path.endswith("/R") and "\n" not in r.reason
    assert r.reason.startswith("breast unpaired: no usable MLO (1 CC and 0 MLO: ")
    assert r.reason.endswith(f"not used: {Path(n.path).name}: view ML is not a screening view (CC or MLO)")


@pytest.mark.parametrize("pixels_intact", [True, False])
def test_a_damaged_view_position_is_a_broken_file_not_a_view_not_used(
    clean_study: Path, tmp_path: Path, pixels_intact: bool
) -> None:
    """A flipped length makes ViewPosition swallow the elements after it (a fuzz case from CI): the
    file is rejected with the reader's reason, the same `verify_image` gives, not "not a screening view"."""
    from xpr_deploy.data.dicom import verify_image
    from xpr_deploy.data.errors import DicomError

    folder = tmp_path / "study"
    shutil.copytree(clean_study, folder)
    target = views_of(folder)["R", "MLO"]
    ds = pydicom.dcmread(target)
    ds.ViewPosition = "MLO \x02PCS\x00DIRECT"
    if not pixels_intact:
        del ds.SamplesPerPixel
    ds.save_as(target)
    idx = load_folder(folder)
    assert not idx.not_used
    (reject,) = [r for r in idx.rejects if r.path == str(target)]
    if pixels_intact:  # the header is sound but for its view: the view check says so
        assert reject.reason == f"{target}: ViewPosition MLO ?PCS?DIRECT contradicts ViewCodeSequence MLO"
    else:
        with pytest.raises(DicomError) as reader:
            verify_image(target)
        assert reject.reason == str(reader.value) and "missing SamplesPerPixel" in reject.reason


def test_mixed_study_all_classes_at_once(clean_study: Path, tmp_path: Path) -> None:
    clean = load_folder(clean_study)
    idx = load_folder(mixed_study(clean_study, tmp_path, "mixed"))
    assert used(idx) == used(clean) and not idx.rejects
    assert len(idx.not_used) == sum(len(v) for v in KINDS.values())


def test_data_check_shows_the_decisions(clean_study: Path, tmp_path: Path) -> None:
    folder = mixed_study(clean_study, tmp_path, "mixed")
    clean = used(load_folder(clean_study))
    runner = CliRunner()
    res = runner.invoke(app, ["data", "check", str(folder)])
    assert res.exit_code == 0, res.output
    text = res.output
    for cc, mlo in clean.values():
        assert f"({cc}), MLO " in text and f"({mlo})" in text
    assert text.count("not used ") == sum(len(v) for v in KINDS.values())
    for items in KINDS.values():
        for _, reason in items:
            assert reason in text
    out = json.loads(runner.invoke(app, ["data", "check", str(folder), "--json"]).stdout)
    assert {k.rsplit("/", 1)[1]: (d["cc_sop_uid"], d["mlo_sop_uid"]) for k, d in out["selection"].items()} == clean
    assert len(out["not_used"]) == len(text.split("not used ")) - 1
    assert all(set(n) == {"path", "sop_uid", "reason"} for n in out["not_used"])
    # --strict: both breasts rejected with the reasons, exit 1
    res = runner.invoke(app, ["data", "check", str(folder), "--strict"])
    assert res.exit_code == 1
    assert res.output.count("breast not clean (--strict)") == 2
    # the clean study passes --strict
    assert runner.invoke(app, ["data", "check", str(clean_study), "--strict"]).exit_code == 0


def test_vindr_loader_drops_duplicate_and_secondary_capture(synth_vindr: Path, tmp_path: Path) -> None:
    """Training reads the same rules: a VinDr row whose file is a secondary capture is not used."""
    import csv

    from xpr_deploy.data import load_dataset

    root = tmp_path / "vindr"
    shutil.copytree(synth_vindr, root)
    csv_path = root / "breast-level_annotations.csv"
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    extra = dict(rows[0])
    src = root / "images" / extra["study_id"] / f"{extra['image_id']}.dicom"
    extra["image_id"] = "sc" + extra["image_id"][2:]
    derive(src, sop_class=SC).save_as(root / "images" / extra["study_id"] / f"{extra['image_id']}.dicom")
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows([*rows, extra])
    ds = load_dataset(root)
    assert len(ds.pairs) == 8 and not ds.rejects
    (n,) = ds.not_used
    assert "secondary capture" in n.reason
    strict = load_dataset(root, policy=Policy(strict=True))
    assert len(strict.pairs) == 7 and "--strict" in strict.rejects[0].reason


def test_view_tables_are_the_standards() -> None:
    """views.CID_4014 / CID_4015 hold exactly the SNOMED CT codes of PS3.16 (pydicom's copy of it)."""
    from pydicom.sr._cid_dict import cid_concepts
    from pydicom.sr._concepts_dict import concepts

    from xpr_deploy.data.views import CID_4014, CID_4015

    def codes(cid: int) -> set[str]:
        return {code for name in cid_concepts[cid]["SCT"] for code in concepts["SCT"][name]}

    assert set(CID_4014) == codes(4014) and set(CID_4015) == codes(4015)


def test_cbis_digitized_films_stored_as_secondary_capture_are_read(synth_cbis: Path, tmp_path: Path) -> None:
    """CBIS-DDSM's films are Secondary Capture (Modality MG): its loader reads them; a PACS folder does not."""
    from xpr_deploy.data import load_dataset

    root = tmp_path / "cbis"
    shutil.copytree(synth_cbis, root)
    for f in root.rglob("*.dcm"):
        ds = pydicom.dcmread(f)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SC
        ds.save_as(f)
    ds = load_dataset(root)
    assert len(ds.pairs) == 8 and not ds.not_used and not ds.rejects
    folder = load_folder(root)
    assert not folder.pairs and all("secondary capture" in n.reason for n in folder.not_used)


def test_a_broken_mammogram_is_rejected_not_left_out(clean_study: Path, tmp_path: Path) -> None:
    """An MG image object whose header contradicts its class (Modality CT, FOR PROCESSING intent,
    several frames) is a broken file: rejected with the reader's reason, as `data check` always did."""
    folder = tmp_path / "study"
    shutil.copytree(clean_study, folder)
    v = views_of(folder)
    derive(v["R", "CC"], Modality="CT").save_as(folder / "a.dcm")
    derive(v["R", "CC"], PresentationIntentType="FOR PROCESSING").save_as(folder / "b.dcm")
    derive(v["R", "CC"], NumberOfFrames=2).save_as(folder / "c.dcm")
    idx = load_folder(folder)
    assert len(idx.pairs) == 2 and not idx.not_used
    reasons = {Path(r.path).name: r.reason for r in idx.rejects}
    assert reasons["a.dcm"].endswith("modality CT, not MG (mammography)")
    assert reasons["b.dcm"].endswith("FOR PROCESSING image; use the FOR PRESENTATION image")
    assert reasons["c.dcm"].endswith("multi-frame image (2 frames); need a single frame")
