"""Dataset readers: VinDr, CBIS, plain folders; pairing, label rules and rejects with reasons."""

from __future__ import annotations

import csv
import shutil

import pydicom
import pytest
from pydicom.data import get_testdata_file

from xpr_deploy.data import detect_format, load_dataset
from xpr_deploy.data.errors import BadLabel, DatasetError
from xpr_deploy.data.labels import label_rule, parse_birads


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_rows(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_vindr_pairs_and_labels(synth_vindr):
    ds = load_dataset(synth_vindr)
    assert ds.format == "vindr" and ds.label_rule == "vindr:birads>=4"
    assert len(ds.pairs) == 8 and ds.positives == 4 and ds.rejects == []
    for p in ds.pairs:
        assert p.cc.exists() and p.mlo.exists() and p.laterality in ("L", "R")
        assert p.patient_id == p.study_id  # VinDr: the study is the group
        birads = parse_birads(p.raw_label)
        assert p.label == int(birads >= 4)
        assert pydicom.dcmread(p.cc, stop_before_pixels=True).ViewPosition == "CC"
        assert pydicom.dcmread(p.mlo, stop_before_pixels=True).ViewPosition == "MLO"
    malignant = [p for p in ds.pairs if p.label == 1]
    assert all("findings" in p.meta["cc"] for p in malignant)  # boxes from finding_annotations.csv
    # other rules are selectable and change only the threshold
    for rule, thr in (("vindr:birads>=3", 3), ("vindr:birads>=5", 5)):
        other = load_dataset(synth_vindr, label_rule=rule)
        assert other.label_rule == rule
        assert [p.label for p in other.pairs] == [int(parse_birads(p.raw_label) >= thr) for p in other.pairs]


def test_label_rules():
    assert label_rule(None, "vindr").name == "vindr:birads>=4"
    assert label_rule("birads>=3", "vindr").name == "vindr:birads>=3"
    assert label_rule(None, "cbis").label("BENIGN+MALIGNANT") == 1
    assert label_rule(None, "cbis").label("BENIGN_WITHOUT_CALLBACK") == 0
    with pytest.raises(BadLabel):
        label_rule("vindr:birads>=4", "cbis")
    with pytest.raises(BadLabel):
        label_rule("birads>=9", "vindr")
    with pytest.raises(BadLabel):
        label_rule(None, "vindr").label("BI-RADS X")
    with pytest.raises(BadLabel):
        label_rule(None, "cbis").label("MAYBE")


def test_vindr_bad_files_are_rejected_with_reasons(synth_vindr, tmp_path):
    root = tmp_path / "vindr"
    shutil.copytree(synth_vindr, root)
    csv_path = root / "breast-level_annotations.csv"
    rows = _rows(csv_path)
    by_breast = {}
    for r in rows:
        by_breast.setdefault((r["study_id"], r["laterality"]), []).append(r)
    breasts = sorted(by_breast)
    img = lambda r: root / "images" / r["study_id"] / f"{r['image_id']}.dicom"  # noqa: E731
    # 1: a missing file; 2: a non-DICOM file; 3: an unknown BI-RADS; 4: laterality contradicting the DICOM
    img(by_breast[breasts[0]][0]).unlink()
    img(by_breast[breasts[1]][0]).write_text("garbage, not DICOM" * 20)
    for r in by_breast[breasts[2]]:
        r["breast_birads"] = "BI-RADS X"
    target = by_breast[breasts[3]][1]
    ds_bad = pydicom.dcmread(img(target))
    ds_bad.ImageLaterality = "R" if target["laterality"] == "L" else "L"
    ds_bad.save_as(img(target))
    # 5: a view that is neither CC nor MLO
    by_breast[breasts[4]][0]["view_position"] = "XCCL"
    _write_rows(csv_path, rows)
    ds = load_dataset(root)
    assert len(ds.pairs) == 3
    reasons = " | ".join(f"{r.path}: {r.reason}" for r in ds.rejects)
    assert "file not found" in reasons
    assert "not a DICOM file" in reasons
    assert "unknown BI-RADS value 'BI-RADS X'" in reasons
    assert "in the DICOM but" in reasons
    assert "XCCL is not CC or MLO" in reasons
    assert reasons.count("breast unpaired") == 4  # breasts 1, 2, 4, 5 lost a view
    summary = ds.summary()
    assert summary["pairs"] == 3 and all(set(r) == {"path", "reason"} for r in summary["rejects"])


def test_vindr_ambiguous_breast(synth_vindr, tmp_path):
    root = tmp_path / "vindr"
    shutil.copytree(synth_vindr, root)
    csv_path = root / "breast-level_annotations.csv"
    rows = _rows(csv_path)
    extra = dict(rows[0])  # the same CC exported again under a second image id: a duplicate, not a choice
    src = root / "images" / extra["study_id"] / f"{extra['image_id']}.dicom"
    extra["image_id"] = "dup" + extra["image_id"][3:]
    shutil.copy(src, root / "images" / extra["study_id"] / f"{extra['image_id']}.dicom")
    _write_rows(csv_path, [*rows, extra])
    ds = load_dataset(root)
    assert len(ds.pairs) == 8
    assert [n.reason for n in ds.not_used] == [f"duplicate of {src} (same SOP Instance UID)"]
    # a second CC with its own SOP Instance UID and the same times and number: no rule decides
    twin = pydicom.dcmread(src)
    twin.SOPInstanceUID = twin.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5.6.7.8.9"
    twin.save_as(root / "images" / extra["study_id"] / f"{extra['image_id']}.dicom")
    ds = load_dataset(root)
    assert len(ds.pairs) == 7
    assert any("ambiguous" in r.reason and "2 CC images equally valid" in r.reason for r in ds.rejects)


def test_cbis_pairs_groups_and_any_malignant(synth_cbis, tmp_path):
    ds = load_dataset(synth_cbis)
    assert ds.format == "cbis" and ds.label_rule == "cbis:pathology"
    assert len(ds.pairs) == 8 and ds.positives == 4 and ds.rejects == []
    assert len({p.patient_id for p in ds.pairs}) < 8  # some patients have both breasts
    assert all(p.key == f"{p.patient_id}/{p.laterality}" for p in ds.pairs)

    root = tmp_path / "cbis"
    shutil.copytree(synth_cbis, root)
    benign = next(p for p in ds.pairs if p.label == 0)
    # add a malignant abnormality to that breast (in the other CSV family): the breast becomes malignant
    mass = root / "mass_case_description_train_set.csv"
    rows = _rows(mass)
    template = rows[0]
    case = next(
        c
        for c in (root / "CBIS-DDSM").iterdir()
        if benign.patient_id in c.name
        and ("LEFT" if benign.laterality == "L" else "RIGHT") in c.name
        and c.name.endswith("_CC")
    )
    new = dict(template)
    side = "LEFT" if benign.laterality == "L" else "RIGHT"
    new.update(
        {
            "patient_id": benign.patient_id,
            "left or right breast": side,
            "image view": "CC",
            "abnormality id": "2",
            "pathology": "MALIGNANT",
            "image file path": f"{case.name}/1.2.3/4.5.6/000000.dcm",
        }
    )
    _write_rows(mass, [*rows, new])
    ds2 = load_dataset(root)
    changed = next(p for p in ds2.pairs if p.key == benign.key)
    assert changed.label == 1 and "MALIGNANT" in changed.raw_label and "BENIGN" in changed.raw_label

    # an unknown pathology string rejects that breast with the reason
    other = next(p for p in ds2.pairs if p.label == 0)
    rows = _rows(mass)
    side = "LEFT" if other.laterality == "L" else "RIGHT"
    bad = dict(new)
    bad.update(
        {
            "patient_id": other.patient_id,
            "left or right breast": side,
            "pathology": "UNKNOWN",
            "image file path": f"{other.meta['cc']['case']}/1.2/3.4/000000.dcm",
        }
    )
    _write_rows(mass, [*rows, bad])
    ds3 = load_dataset(root)
    assert other.key not in {p.key for p in ds3.pairs}
    assert any("unknown pathology" in r.reason for r in ds3.rejects)


def test_cbis_same_view_in_mass_and_calc_folders_is_one_image(synth_cbis, tmp_path):
    root = tmp_path / "cbis"
    shutil.copytree(synth_cbis, root)
    ds = load_dataset(root)
    p = ds.pairs[0]
    cc_case = p.meta["cc"]["case"]
    kind, rest = cc_case.split("-", 1)
    twin = ("Calc" if kind == "Mass" else "Mass") + "-" + rest
    shutil.copytree(root / "CBIS-DDSM" / cc_case, root / "CBIS-DDSM" / twin)
    calc = root / f"calc_case_description_{'train' if 'Training' in rest else 'test'}_set.csv"
    rows = _rows(calc) or _rows(root / "calc_case_description_train_set.csv")
    row = dict(rows[0])
    row.update(
        {
            "patient_id": p.patient_id,
            "left or right breast": "LEFT" if p.laterality == "L" else "RIGHT",
            "image view": "CC",
            "pathology": "BENIGN",
            "image file path": f"{twin}/1.2/3.4/000000.dcm",
        }
    )
    _write_rows(calc, [*_rows(calc), row])
    ds2 = load_dataset(root)
    assert len(ds2.pairs) == 8
    assert any("case folders" in n for n in ds2.notes)


def test_folder_format_pairs_from_tags(synth_vindr, tmp_path):
    root = tmp_path / "pacs"
    shutil.copytree(synth_vindr / "images", root)
    (root / "readme.txt").write_text("ignored")
    (root / "junk.bin").write_bytes(b"\x00" * 300)
    shutil.copy(get_testdata_file("CT_small.dcm", download=False), root / "ct.dcm")
    assert detect_format(root) == "folder"
    ds = load_dataset(root)
    assert ds.format == "folder" and ds.label_rule == "none"
    assert len(ds.pairs) == 8 and all(p.label == -1 for p in ds.pairs)
    reasons = {r.path.rsplit("/", 1)[-1]: r.reason for r in ds.rejects}
    not_used = {n.path.rsplit("/", 1)[-1]: n.reason for n in ds.not_used}
    assert "not MG" in not_used["ct.dcm"] and "not a DICOM" in reasons["junk.bin"]
    assert "readme.txt" not in reasons


def test_format_detection_and_errors(synth_vindr, synth_cbis, tmp_path):
    assert detect_format(synth_vindr) == "vindr"
    assert detect_format(synth_cbis) == "cbis"
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "missing")
    with pytest.raises(DatasetError, match="unknown format"):
        load_dataset(synth_vindr, format="dicomweb")
    with pytest.raises(DatasetError, match="not a VinDr"):
        load_dataset(tmp_path, format="vindr")
    with pytest.raises(BadLabel):
        load_dataset(synth_vindr, label_rule="cbis:pathology")


def test_reading_never_modifies_input(synth_vindr):
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in synth_vindr.rglob("*") if p.is_file()}
    load_dataset(synth_vindr)
    after = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in synth_vindr.rglob("*") if p.is_file()}
    assert before == after
