"""Issue 14: operating points, DICOM results (TID 1500 SR + FRACTIONAL SEG heatmaps), a PACS round trip.

Every written object passes `dciodvfy` with no errors and is read back with highdicom / pydicom; the
Orthanc test starts a real Orthanc (+ DICOMweb plugin) on a free loopback port and stops it itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from peers import Orthanc, free_port
from test_export_support import xpr_main
from typer.testing import CliRunner

from xpr_deploy.cli import app
from xpr_deploy.config import NUM_STAGES, get_config
from xpr_deploy.data.dicom import PreprocessSettings
from xpr_deploy.train.operating_points import (
    DEFAULT_TARGETS,
    OperatingPointError,
    canonical,
    choose,
    choose_all,
    parse_target,
    resolve,
)

CFG = get_config("tiny")
DCIODVFY = shutil.which("dciodvfy")

# ---- operating points ---------------------------------------------------------------------------


def test_youden_takes_the_middle_of_the_separating_gap() -> None:
    y = [0, 0, 0, 1, 1, 1]
    s = [0.1, 0.2, 0.3, 0.995, 0.997, 0.999]  # perfectly separated: every t in (0.3, 0.995] is as good
    p = choose(y, s, "youden")
    assert p.threshold == pytest.approx((0.3 + 0.995) / 2)
    assert (p.sensitivity, p.specificity, p.n) == (1.0, 1.0, 6)


def test_youden_run_of_equal_gaps_and_its_middle() -> None:
    # moving t across (0.4 neg, 0.5 pos) keeps J: the run (0.3, 0.6] is one interval, its middle wins
    y = [0, 0, 0, 1, 0, 1, 1]
    s = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.9]
    j = {t: np.mean(np.array(s)[np.array(y) == 1] >= t) - np.mean(np.array(s)[np.array(y) == 0] >= t) for t in s}
    best = max(j.values())
    p = choose(y, s, "youden")
    got = np.mean(np.array(s)[np.array(y) == 1] >= p.threshold) - np.mean(np.array(s)[np.array(y) == 0] >= p.threshold)
    assert got == pytest.approx(best)


@pytest.mark.parametrize("target", ["sens=0.90", "sens=0.8", "spec=0.90", "spec=0.75", "sens=1", "spec=1.0"])
def test_sens_spec_targets_are_met_in_the_middle_of_their_gap(target: str) -> None:
    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(40), np.ones(30)].astype(int)
    s = np.r_[rng.normal(0.35, 0.15, 40), rng.normal(0.65, 0.15, 30)].clip(0, 1)
    kind, value = parse_target(target)
    p = choose(y, s, target)
    pred = s >= p.threshold
    sens, spec = pred[y == 1].mean(), (~pred[y == 0]).mean()
    assert p.sensitivity == pytest.approx(sens) and p.specificity == pytest.approx(spec)
    assert (sens if kind == "sens" else spec) >= value - 1e-12
    d = np.unique(s)
    below, above = d[d < p.threshold].max(initial=0.0), d[d >= p.threshold].min()
    assert p.threshold == pytest.approx((below + above) / 2)  # never on a validation score
    # the best such threshold: one gap further would break the target (sens) or spend more (spec)
    if kind == "sens" and above < d.max():
        nxt = d[d > above].min()
        assert (s[y == 1] >= nxt).mean() < value


def test_targets_never_fail_on_degenerate_scores() -> None:
    """An early epoch's constant output, or scores saturated at 1.0, still give every point (training must not stop)."""
    for s in ([0.5] * 6, [1.0] * 6, [0.2, 1.0, 1.0, 1.0, 0.3, 1.0]):
        pts = choose_all([0, 1, 0, 1, 0, 1], s)
        assert set(pts) == {canonical(t) for t in DEFAULT_TARGETS}
        assert all(0.0 <= p.threshold <= 1.0 for p in pts.values())
    # spec=0.90 above every score: nothing predicted malignant, specificity 1
    p = choose([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], "spec=0.90")
    assert p.threshold == pytest.approx(0.75) and p.specificity == 1.0


@pytest.mark.parametrize("bad", ["youdenx", "sens=1.5", "sens=", "ppv=0.9", "sens=0.9.1", ""])
def test_bad_target_names_are_one_line(bad: str) -> None:
    with pytest.raises(OperatingPointError, match="operating point"):
        parse_target(bad)


def test_single_class_validation_gives_no_points_and_resolve_refuses_names() -> None:
    assert choose_all([1, 1, 1], [0.2, 0.5, 0.9]) == {}
    legacy = resolve({}, None, default=None, legacy_threshold=0.5, legacy_method="fixed-0.5", where="m")
    assert (legacy.name, legacy.threshold) == ("fixed-0.5", 0.5)
    with pytest.raises(OperatingPointError, match="no operating points"):
        resolve({}, "youden", default=None, legacy_threshold=0.5, legacy_method=None, where="m")
    pts = choose_all([0, 1, 0, 1], [0.1, 0.9, 0.3, 0.7])
    assert canonical("Sens=0.9") == "sens=0.90" and set(pts) == {canonical(t) for t in DEFAULT_TARGETS}
    with pytest.raises(OperatingPointError, match=r"no operating point sens=0\.80 \(has youden"):
        resolve(pts, "sens=0.8", default="youden", legacy_threshold=0.5, legacy_method=None, where="m")


def test_validation_metrics_carry_the_points() -> None:
    from xpr_deploy.train.loop import validation_metrics

    y = np.array([0, 0, 0, 1, 1, 1])
    m = validation_metrics(np.array([0.1, 0.2, 0.3, 0.995, 0.997, 0.999]), y, None)
    assert m["operating_point"] == "youden" and m["threshold"] == pytest.approx(0.6475)
    assert m["operating_points"]["sens=0.90"]["sensitivity"] >= 0.9
    assert set(m["operating_points"]) == {canonical(t) for t in DEFAULT_TARGETS}


# ---- a model with operating points ---------------------------------------------------------------

VAL_Y = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
VAL_P = [0.1, 0.2, 0.3, 0.6, 0.4, 0.5, 0.7, 0.8, 0.9, 0.95]


@pytest.fixture(scope="module")
def ckpt(untied_tiny_checkpoint) -> Path:
    """The tiny model with operating points in its meta."""
    pts = choose_all(VAL_Y, VAL_P)
    meta = {
        "threshold": pts["youden"].threshold,
        "threshold_method": "youden-validation",
        "operating_point": "youden",
        "operating_points": {k: p.to_dict() for k, p in pts.items()},
    }
    return untied_tiny_checkpoint(meta, "ckpt-op")


@pytest.fixture(scope="module")
def study(synth_vindr: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two VinDr studies (both breasts each) of the session's synthetic set."""
    root = tmp_path_factory.mktemp("studies")
    for s in sorted((synth_vindr / "images").iterdir())[:2]:
        shutil.copytree(s, root / s.name)
    return root


def _cli(*args: str, code: int = 0) -> tuple[str, str]:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == code, (res.output, res.exception)
    return res.stdout, res.stderr


def _main(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    """`xpr ARGS` in this process (test_export_support.xpr_main): (exit code, stderr)."""
    code, _, err = xpr_main(capsys, monkeypatch, *args)
    return code, err


def _errors(path: Path) -> list[str]:
    r = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True, timeout=60)
    return [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("Error")]


@pytest.fixture(scope="module")
def predicted(ckpt: Path, study: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("dicom-out")
    stdout, _ = _cli("predict", str(ckpt), str(study), "--dicom-out", str(out), "--operating-point", "sens=0.90",
                     "--seg", "both", "--json")  # fmt: skip
    return json.loads(stdout), out


def _objects(out: Path) -> list[Path]:
    return sorted(out.rglob("*.dcm"))


def test_predict_dicom_out_objects_pass_dciodvfy(predicted: tuple[dict, Path]) -> None:
    if DCIODVFY is None:
        pytest.skip("dciodvfy (Debian dicom3tools) is not installed")
    rep, out = predicted
    objs = _objects(out)
    assert len(objs) == 2 * (1 + 4 + 4) and sorted(map(str, objs)) == sorted(rep["dicom"])  # --seg both
    for p in objs:
        assert _errors(p) == [], p


def test_predict_dicom_out_objects_are_recognised_and_named_by_uid(predicted: tuple[dict, Path]) -> None:
    """dciodvfy recognises each object as the IOD it claims (an unrecognised object is not verified),
    and every name is the UID rule's: OUT/<StudyInstanceUID>/<sr|seg>_<SOPInstanceUID>_<tag>.dcm."""
    from xpr_deploy.dicom_out import dciodvfy_errors

    if DCIODVFY is None:
        pytest.skip("dciodvfy (Debian dicom3tools) is not installed")
    rep, out = predicted
    for p in _objects(out):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        iod = "ComprehensiveSR" if ds.Modality == "SR" else "Segmentation"
        assert dciodvfy_errors(p, iod=iod) == [], p
        kind = "sr" if ds.Modality == "SR" else "seg"
        assert p.parent == out / str(ds.StudyInstanceUID) and p.name.startswith(f"{kind}_{ds.SOPInstanceUID}_")
    assert rep["notes"] == []  # clean synthetic headers: nothing left empty, nothing to say


def test_sr_reads_back_what_predict_printed(predicted: tuple[dict, Path], ckpt: Path) -> None:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    rep, out = predicted
    thr = choose(VAL_Y, VAL_P, "sens=0.90").threshold
    assert rep["operating_point"] == "sens=0.90" and rep["threshold"] == pytest.approx(thr)
    printed = {}
    for b in rep["breasts"]:
        src = pydicom.dcmread(b["cc"], stop_before_pixels=True)
        printed[(str(src.StudyInstanceUID), b["laterality"])] = (b["prob"], b["decision"], b["cc"], b["mlo"])
    srs = [p for p in _objects(out) if p.name.startswith("sr_")]
    assert len(srs) == 2
    seen = set()
    for p in srs:
        sr = hd.sr.srread(p)
        assert isinstance(sr, hd.sr.ComprehensiveSR)
        assert "NOT FOR CLINICAL USE" in sr.SeriesDescription
        assert not sr.content.get_image_measurement_groups()
        mgs = sr.content.get_planar_roi_measurement_groups()  # per image: a region group (TID 1410)
        assert len(mgs) == 4
        refs: dict[tuple[str, str], set[str]] = {}
        for g in mgs:
            site = g.finding_sites[0].value
            lat = {"80248007": "L", "73056007": "R"}[site.value]
            key = (str(sr.StudyInstanceUID), lat)
            prob, decision, _cc, _mlo = printed[key]
            m = g.get_measurements(name=codes.DCM.ProbabilityOfCancer)
            assert len(m) == 1 and m[0].value == pytest.approx(prob, abs=1e-9)
            q = g.get_qualitative_evaluations()
            assert len(q) == 1 and decision in q[0].value.meaning and "sens=0.90" in q[0].name.meaning
            assert g.roi is not None and g.roi.graphic_type.value == "POLYLINE"
            refs.setdefault(key, set()).add(g.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
            seen.add(key)
        for key, got in refs.items():  # the breast's CC and MLO, one region each
            assert got == {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in printed[key][2:]}
        # the device observer carries the model identity: name, xpr version, digest as serial number
        obs = sr.content.get_observer_contexts(observer_type=codes.DCM.Device)
        attrs = obs[0].observer_identifying_attributes
        assert attrs.model_name.startswith("tiny:") and attrs.name.startswith("xpr ")
        assert attrs.serial_number == json.loads((ckpt / "meta.json").read_text())["weights_sha256"]
    assert seen == set(printed)


def test_uids_new_and_study_copied_and_nothing_else_leaks(predicted: tuple[dict, Path]) -> None:
    rep, out = predicted
    sources = {}
    for b in rep["breasts"]:
        for f in (b["cc"], b["mlo"]):
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            sources[str(ds.SOPInstanceUID)] = ds
    src_series = {str(d.SeriesInstanceUID) for d in sources.values()}
    objs = [pydicom.dcmread(p) for p in _objects(out)]
    uids = [str(o.SOPInstanceUID) for o in objs]
    assert len(set(uids)) == len(uids) and not set(uids) & set(sources)
    assert not {str(o.SeriesInstanceUID) for o in objs} & src_series
    allowed = {  # patient + general study modules, and what references a source
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
        "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID", "StudyDescription", "SpecificCharacterSet",
    }  # fmt: skip
    for o in objs:
        src = next(d for d in sources.values() if d.StudyInstanceUID == o.StudyInstanceUID)
        if o.Modality != "SR":
            continue
        shared = {e.keyword for e in o if e.keyword in src and e.VR != "SQ" and src[e.keyword].value == e.value}
        assert shared <= allowed, shared - allowed
        assert o.PatientID == src.PatientID and o.AccessionNumber == src.AccessionNumber


def test_heatmap_segmentations_are_image_aligned(predicted: tuple[dict, Path]) -> None:
    import highdicom as hd

    rep, out = predicted
    segs = [p for p in _objects(out) if p.name.startswith("seg_")]
    assert len(segs) == 16  # --seg both: a BINARY and a FRACTIONAL one per image
    by_sop = {}
    for b in rep["breasts"]:
        for f in (b["cc"], b["mlo"]):
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            by_sop[str(ds.SOPInstanceUID)] = ds
    for p in segs:
        seg = hd.seg.segread(p)
        assert len(seg.SegmentSequence) == NUM_STAGES
        assert seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing  # OHIF needs it
        ref = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
        src = by_sop[str(ref)]
        assert (seg.Rows, seg.Columns) == (src.Rows, src.Columns) and seg.StudyInstanceUID == src.StudyInstanceUID
        arr = seg.get_pixels_by_source_instance([str(ref)], combine_segments=False).astype(np.float32)
        assert arr.shape[1:3] == (src.Rows, src.Columns)
        assert arr.min() >= 0.0 and arr.max() <= 1.0 + 1e-6 and arr.max() > 0.4  # kept windows show
        if seg.SegmentationType == "BINARY":  # per stage the most-kept windows: some, not all, of the image
            assert all(0 < arr[..., s].sum() < arr[..., s].size for s in range(NUM_STAGES))
        else:
            assert seg.SegmentationType == "FRACTIONAL"
        assert "NOT FOR CLINICAL USE" in seg.SeriesDescription


def test_heatmap_geometry_follows_the_preprocessing(ckpt: Path, study: Path) -> None:
    """The stored-grid map is zero outside the crop and the model grid maps back onto it exactly."""
    from xpr_deploy.data.dicom import preprocess_with_geometry
    from xpr_deploy.dicom_out import stage_heatmaps
    from xpr_deploy.model.summary import block_table

    f = next(p for p in sorted(study.rglob("*.dicom")))
    _, geo = preprocess_with_geometry(f, PreprocessSettings.for_config(CFG))
    sel = {(b.view, b.stage, b.block): np.arange(b.k)[None] for b in block_table(CFG)}  # the first K windows
    maps = stage_heatmaps(sel, CFG, {"cc": geo, "mlo": geo})["cc"]
    assert maps.shape == (NUM_STAGES, geo.rows, geo.cols)
    r0, r1, c0, c1 = geo.crop
    inside = np.zeros((geo.rows, geo.cols), bool)
    inside[r0 : r1 + 1, c0 : c1 + 1] = True
    if geo.flipped:
        inside = inside[:, ::-1]
    assert not maps[:, ~inside].any() and maps[:, inside].max() == 1.0


def test_operating_point_changes_decision_threshold_and_unknown_is_one_line(
    ckpt: Path, study: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    a = json.loads(_cli("predict", str(ckpt), str(study), "--json")[0])
    b = json.loads(_cli("predict", str(ckpt), str(study), "--operating-point", "spec=0.90", "--json")[0])
    assert a["operating_point"] == "youden" and a["threshold"] == pytest.approx(
        choose(VAL_Y, VAL_P, "youden").threshold
    )
    assert b["operating_point"] == "spec=0.90" and b["threshold"] == pytest.approx(
        choose(VAL_Y, VAL_P, "spec=0.90").threshold
    )
    code, err = _main(capsys, monkeypatch, "predict", str(ckpt), str(study), "--operating-point", "sens=0.42")
    assert code == 2 and "no operating point sens=0.42" in err and len(err.strip().splitlines()) == 1
    code, err = _main(capsys, monkeypatch, "predict", str(ckpt), str(study), "--store")
    assert code == 2 and "--dicomweb" in err
    code, err = _main(capsys, monkeypatch, "predict", str(ckpt), str(study), "--operating-point", "ppv=0.9")
    assert code == 2 and "use youden, sens=0.90 or spec=0.90" in err


def test_bundle_manifest_carries_operating_points(ckpt: Path, study: Path, tmp_path: Path) -> None:
    from xpr_deploy.bundle import BundleError, BundleView
    from xpr_deploy.bundle.seal import write_sealed
    from xpr_deploy.export.bundle import ExportOptions, export_bundle, load_source

    model, meta = load_source(ckpt)
    path = export_bundle(model, meta, tmp_path / "bundle", ExportOptions(engine=False, parity_samples=0)).path
    view = BundleView.open(path)
    assert view.manifest["operating_point"] == "youden"
    assert set(view.operating_points) == set(meta["operating_points"])
    assert view.operating_point("sens=0.90").threshold == pytest.approx(
        meta["operating_points"]["sens=0.90"]["threshold"]
    )
    dicom = tmp_path / "dicom"
    out = json.loads(
        _cli("predict", str(path), str(study), "--operating-point", "spec=0.90", "--dicom-out", str(dicom), "--json")[0]
    )
    assert out["operating_point"] == "spec=0.90" and out["bundle_sha256"] == view.digest
    # no kept-window outputs in this bundle: the SRs, no heatmaps, and a note saying so
    assert [Path(p).name[:3] for p in out["dicom"]] == ["sr_", "sr_"] and "SR only" in out["notes"][0]
    import highdicom as hd

    sr = hd.sr.srread(out["dicom"][0])
    attrs = sr.content.get_observer_contexts()[0].observer_identifying_attributes
    assert attrs.serial_number == view.digest and attrs.model_name == view.name
    # the Triton model's config names the chosen point and carries all of them
    from xpr_deploy.triton import write_repository

    models = write_repository(path, tmp_path / "repo", operating_point="spec=0.90").models
    assert [m.platform for m in models] == ["onnxruntime_onnx", "python"]
    spec = view.operating_point("spec=0.90").threshold
    for m in models:  # the platform model and the python model alike
        text = m.config.read_text()
        assert 'key: "xpr_operating_point"\n  value: { string_value: "spec=0.90" }' in text, m.name
        assert f'key: "xpr_threshold"\n  value: {{ string_value: "{spec}" }}' in text and "xpr_operating_points" in text
    # an inconsistent default is refused, even when re-sealed
    bad = (
        ("threshold", 0.123, "is not the threshold of its operating point 'youden'"),
        ("operating_point", "sens=0.80", "'sens=0.80' is not among operating_points"),
    )
    for field, value, msg in bad:
        write_sealed(path, {**view.manifest, field: value})
        with pytest.raises(BundleError, match=msg):
            BundleView.open(path)


def test_eval_states_the_operating_point(ckpt: Path, synth_vindr: Path) -> None:
    stdout, _ = _cli("eval", str(ckpt), str(synth_vindr), "--split", "all", "--device", "cpu",
                     "--operating-point", "sens=0.90")  # fmt: skip
    thr = choose(VAL_Y, VAL_P, "sens=0.90").threshold
    assert f"operating point sens=0.90 (threshold {thr:.4f}" in stdout and "validation sensitivity 1.000" in stdout
    d = json.loads(_cli("eval", str(ckpt), str(synth_vindr), "--split", "all", "--device", "cpu",
                        "--operating-point", "spec=0.90", "--json")[0])  # fmt: skip
    assert d["operating_point"]["name"] == "spec=0.90" and d["threshold"] == pytest.approx(
        d["operating_point"]["threshold"]
    )


# ---- a real PACS: Orthanc + DICOMweb ---------------------------------------------------------------


class OrthancProc(Orthanc):
    """The test peer Orthanc (tests/peers.py), read back over DICOMweb QIDO-RS."""

    @property
    def url(self) -> str:
        return self.dicomweb

    def series(self, study: str) -> list[dict]:
        import requests

        r = requests.get(f"{self.url}/studies/{study}/series", timeout=30)
        r.raise_for_status()
        return r.json() if r.content else []

    def series_instances(self, study: str, series: str) -> list[dict]:
        import requests

        r = requests.get(f"{self.url}/studies/{study}/series/{series}/instances", timeout=30,
                         params={"includefield": "all"})  # fmt: skip
        r.raise_for_status()
        return r.json() if r.content else []


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancProc]:
    o = OrthancProc(tmp_path_factory.mktemp("orthanc"))
    try:
        yield o
    finally:
        o.stop()


def _v(item: dict, tag: str) -> object:
    v = item.get(tag, {}).get("Value")
    return v[0] if v else None


def _refs(ds: pydicom.Dataset) -> set[str]:
    """Every ReferencedSOPInstanceUID anywhere in the dataset."""
    out: set[str] = set()
    for elem in ds.iterall():
        if elem.keyword == "ReferencedSOPInstanceUID":
            out.add(str(elem.value))
    return out


def test_orthanc_round_trip_stores_once(orthanc: OrthancProc, ckpt: Path, study: Path, tmp_path: Path) -> None:
    folder = sorted(study.iterdir())[0]
    files = sorted(folder.glob("*.dicom"))
    for f in files:
        orthanc.upload(f)
    src = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    uid = str(src[0].StudyInstanceUID)
    src_sops = {str(d.SOPInstanceUID) for d in src}
    out = json.loads(_cli("predict", str(ckpt), "--dicomweb", orthanc.url, "--study", uid, "--store",
                          "--dicom-out", str(tmp_path / "res"), "--json")[0])  # fmt: skip
    assert out["dicomweb"]["fetched"] == 4 and len(out["breasts"]) == 2
    assert len(out["dicomweb"]["stored"]) == 5 and out["dicomweb"]["already_present"] == []
    series = orthanc.series(uid)
    by_mod = {}
    for s in series:
        by_mod.setdefault(_v(s, "00080060"), []).append(str(_v(s, "0020000E")))
    assert len(by_mod["SR"]) == 1 and len(by_mod["SEG"]) == 1 and "MG" in by_mod
    import requests

    for mod in ("SR", "SEG"):
        insts = orthanc.series_instances(uid, by_mod[mod][0])
        assert len(insts) == (1 if mod == "SR" else 4)
        for inst in insts:
            r = requests.get(f"{orthanc.url}/studies/{uid}/series/{by_mod[mod][0]}/instances/{_v(inst, '00080018')}",
                             headers={"Accept": 'multipart/related; type="application/dicom"'}, timeout=30)  # fmt: skip
            r.raise_for_status()
            from dicomweb_client import DICOMwebClient

            ds = DICOMwebClient(orthanc.url).retrieve_instance(uid, by_mod[mod][0], str(_v(inst, "00080018")))
            assert _refs(ds) & src_sops, mod  # references the original instances
            if mod == "SR":
                assert _refs(ds) >= src_sops
    # the same probabilities as from files
    local = json.loads(_cli("predict", str(ckpt), str(folder), "--json")[0])
    assert sorted(b["prob"] for b in local["breasts"]) == pytest.approx(sorted(b["prob"] for b in out["breasts"]))
    # rerun: nothing stored twice
    again = json.loads(_cli("predict", str(ckpt), "--dicomweb", orthanc.url, "--study", uid, "--store", "--json")[0])
    assert again["dicomweb"]["stored"] == [] and len(again["dicomweb"]["already_present"]) == 5
    assert len(orthanc.series(uid)) == len(series)
    assert sum(len(orthanc.series_instances(uid, s)) for s in by_mod["SR"] + by_mod["SEG"]) == 5


def test_dicomweb_errors_are_one_line(
    orthanc: OrthancProc,
    ckpt: Path,
    study: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fails(*args: str) -> str:
        code, err = _main(capsys, monkeypatch, "predict", str(ckpt), *args)
        lines = err.strip().splitlines()
        assert code == 4 and len(lines) == 1, (code, err)
        return lines[0]

    down = f"http://127.0.0.1:{free_port()}/dicom-web"
    line = fails("--dicomweb", down, "--study", "1.2.3")
    assert down in line and "cannot connect" in line
    line = fails("--dicomweb", orthanc.url, "--study", "1.2.3.4.5.6")
    assert orthanc.url in line and "not found" in line
    # a study with no MG: a synthetic image turned into a CR image in a study of its own
    f = next(sorted(study.iterdir())[1].glob("*.dicom"))
    ds = pydicom.dcmread(f)
    ds.Modality, ds.SOPClassUID = "CR", "1.2.840.10008.5.1.4.1.1.1"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(tmp_path / "cr.dcm")
    orthanc.upload(tmp_path / "cr.dcm")
    line = fails("--dicomweb", orthanc.url, "--study", str(ds.StudyInstanceUID))
    assert orthanc.url in line and "no MG instances" in line
    bad = fails("--dicomweb", "ftp://example/dicom-web", "--study", "1.2")
    assert "not an http(s) DICOMweb URL" in bad


def test_stow_rejection_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import requests

    from xpr_deploy.dicomweb import DicomWebError, Pacs

    pacs = Pacs("http://127.0.0.1:9/dicom-web")
    resp = requests.Response()
    resp.status_code, resp.reason = 409, "Conflict"

    def reject(**kw: object) -> None:
        raise requests.exceptions.HTTPError(response=resp)

    monkeypatch.setattr(pacs.client, "store_instances", reject)
    ds = pydicom.Dataset()
    ds.StudyInstanceUID = "1.2.3"
    with pytest.raises(DicomWebError, match=r"^http://127\.0\.0\.1:9/dicom-web: STOW-RS failed: HTTP 409 Conflict$"):
        pacs.store([ds])
    failed = pydicom.Dataset()
    item = pydicom.Dataset()
    item.FailureReason = 0xA700
    failed.FailedSOPSequence = [item]
    monkeypatch.setattr(pacs.client, "store_instances", lambda **kw: failed)
    with pytest.raises(DicomWebError, match="STOW-RS rejected 1 of 1 objects"):
        pacs.store([ds])
