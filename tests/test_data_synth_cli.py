"""`xpr synth`, `xpr data check/prepare`, dciodvfy validity, the cache, PairDataset and the RLE encoder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from test_export_support import xpr_here

from xpr_deploy.data import PreparedCache, PreprocessSettings, load_dataset, preprocess_file
from xpr_deploy.data.torchdata import PairDataset


def _dciodvfy() -> str | None:
    exe = shutil.which("dciodvfy")
    if exe is None and os.geteuid() == 0 and shutil.which("apt-get") and os.environ.get("XPR_NO_APT") != "1":
        subprocess.run(["apt-get", "install", "-y", "-qq", "dicom3tools"], capture_output=True, timeout=300)
        exe = shutil.which("dciodvfy")
    return exe


@pytest.mark.parametrize("fmt", ["vindr", "cbis"])
def test_synth_then_check_reports_12_pairs(tmp_path, fmt, capfd, monkeypatch):
    out = tmp_path / fmt
    r = xpr_here(capfd, monkeypatch, "synth", str(out), "--breasts", "12", "--format", fmt, "--size", "256x128")
    assert r.returncode == 0, r.stderr
    r = xpr_here(capfd, monkeypatch, "data", "check", str(out), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["pairs"] == 12 and report["positives"] == 6 and report["rejects"] == []
    assert report["format"] == fmt and report["breasts"] == 12
    assert report["studies"] >= 6 and set(report["splits"]) == {"holdout", "folds"}
    assert len(report["splits"]["folds"]) == 5
    # the synthetic files really mix photometric interpretations and transfer syntaxes
    files = sorted(out.rglob("*.dicom" if fmt == "vindr" else "*.dcm"))
    assert len(files) == 24
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    assert {h.PhotometricInterpretation for h in headers} == {"MONOCHROME1", "MONOCHROME2"}
    assert {str(h.file_meta.TransferSyntaxUID) for h in headers} == {
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.4.90",
    }
    assert {h.ImageLaterality for h in headers} == {"L", "R"}


def test_synth_is_valid_dicom_per_dciodvfy(synth_vindr, synth_cbis):
    exe = _dciodvfy()
    if exe is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed and could not be installed")
    files = sorted(synth_vindr.rglob("*.dicom")) + sorted(synth_cbis.rglob("*.dcm"))
    assert len(files) == 32
    for f in files:
        r = subprocess.run([exe, str(f)], capture_output=True, text=True, timeout=60)
        errors = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("Error")]
        assert not errors, f"{f}: {errors}"
        assert "MammographyImageForPresentation" in r.stdout + r.stderr


def test_check_strict_and_bad_input_exit_codes(synth_vindr, tmp_path, capfd, monkeypatch):
    root = tmp_path / "v"
    shutil.copytree(synth_vindr, root)
    next(root.rglob("*.dicom")).write_bytes(b"not dicom at all" * 20)
    r = xpr_here(capfd, monkeypatch, "data", "check", str(root), "--json")
    assert r.returncode == 0
    rep = json.loads(r.stdout)
    assert rep["pairs"] == 7 and any("not a DICOM file" in x["reason"] for x in rep["rejects"])
    assert xpr_here(capfd, monkeypatch, "data", "check", str(root), "--strict").returncode == 1
    r = xpr_here(capfd, monkeypatch, "data", "check", str(tmp_path / "nowhere"))
    assert r.returncode != 0 and "nowhere" in r.stderr and "Traceback" not in r.stderr
    r = xpr_here(capfd, monkeypatch, "synth", str(root), "--breasts", "2")  # not empty: refused, input untouched
    assert r.returncode != 0 and "not empty" in r.stderr
    assert (root / "breast-level_annotations.csv").exists()


def test_prepare_and_cache(synth_vindr, tmp_path, capfd, monkeypatch):
    cache = tmp_path / "cache"
    r = xpr_here(
        capfd, monkeypatch, "data", "prepare", str(synth_vindr), "--cache", str(cache), "--size", "224x112", "--json"
    )
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["prepared"] == 16 and rep["reused"] == 0 and rep["rejected"] == rep["failed"] == []
    rep2 = json.loads(
        xpr_here(
            capfd,
            monkeypatch,
            "data",
            "prepare",
            str(synth_vindr),
            "--cache",
            str(cache),
            "--size",
            "224x112",
            "--json",
        ).stdout
    )
    assert rep2["prepared"] == 0 and rep2["reused"] == 16
    settings = PreprocessSettings(img_size=(224, 112))
    ds = load_dataset(synth_vindr)
    pc = PreparedCache(cache)
    p = ds.pairs[0]
    assert pc.contains(p.cc, settings)
    np.testing.assert_array_equal(pc.load(p.cc, settings), preprocess_file(p.cc, settings))
    # other settings miss and are stored beside
    other = PreprocessSettings(img_size=(112, 56))
    assert not pc.contains(p.cc, other)
    assert pc.load(p.cc, other).shape == (112, 56) and pc.contains(p.cc, other)
    # keyed by content: a copy of the file elsewhere hits
    copy = tmp_path / "copy.dicom"
    shutil.copy(p.cc, copy)
    assert pc.contains(copy, settings)


def test_pair_dataset(synth_cbis, tmp_path):
    ds = load_dataset(synth_cbis)
    settings = PreprocessSettings(img_size=(224, 112))
    data = PairDataset(ds.pairs, settings, cache=tmp_path / "c")
    assert len(data) == 8
    cc, mlo, label = data[0]
    assert cc.shape == (1, 224, 112) and mlo.shape == (1, 224, 112) and cc.dtype == torch.float32
    assert label == ds.pairs[0].label
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    b_cc, b_mlo, b_y = next(iter(loader))
    assert b_mlo.shape == b_cc.shape
    assert b_cc.shape == (4, 1, 224, 112) and b_y.tolist() == [p.label for p in ds.pairs[:4]]
    no_cache = PairDataset(ds.pairs, settings)
    assert torch.equal(no_cache[0][0], cc)


def test_lesion_is_visible_in_both_views(synth_vindr):
    """Malignant breasts have a bright spot that benign ones lack, in CC and in MLO."""
    ds = load_dataset(synth_vindr)
    s = PreprocessSettings(img_size=(224, 112))
    peaks: dict[int, list[float]] = {0: [], 1: []}
    for p in ds.pairs:
        for f in (p.cc, p.mlo):
            x = preprocess_file(f, s)
            w = x.shape[1]
            peaks[p.label].append(float(np.percentile(x[:, w // 3 :], 99.9)))  # away from the pectoral muscle
    assert min(peaks[1]) > max(peaks[0]), peaks


@pytest.mark.parametrize("shape", [(1, 1), (3, 260), (64, 33), (300, 200)])
def test_rle_encoder_roundtrip(shape, tmp_path):
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    from xpr_deploy.data.rle import rle_encode_frame

    rng = np.random.default_rng(0)
    a = rng.integers(0, 4096, shape).astype(np.uint16)
    a[:, : shape[1] // 2] = 7  # long runs and literal stretches, crossing the 128 limit
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.Rows, ds.Columns = shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = encapsulate([rle_encode_frame(a)])
    ds["PixelData"].VR = "OB"
    np.testing.assert_array_equal(ds.pixel_array, a)


def test_write_synthetic_is_fast_enough(tmp_path):
    from xpr_deploy.data import write_synthetic

    s = write_synthetic(tmp_path / "s", 4, "vindr", size=(512, 256), seed=3)
    assert s.breasts == 4 and len(s.files) == 8 and all(Path(f).exists() for f in s.files)
    assert s.seconds < 30
