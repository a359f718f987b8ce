"""Hostile DICOM input, one test per example of issue 15 (classes 2 and 3): a malformed header
element is that file's one-line reason, never a traceback or a silently different image, and
`data check --strict` finds what training would die on."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from tests.fuzz.corpus import dicom_cases, elements, with_value
from xpr_deploy.cli import app
from xpr_deploy.data import PreprocessSettings, check_dataset, load_dataset, preprocess_file, read_image
from xpr_deploy.data.dicom import warnings_of
from xpr_deploy.data.errors import DecodeError, DicomError, InvalidValue, TruncatedFile
from xpr_deploy.data.folder import load_folder
from xpr_deploy.data.torchdata import PairDataset

S = PreprocessSettings(img_size=(64, 32))


def one_line(exc: BaseException, path: object) -> str:
    msg = str(exc)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    return msg


@pytest.fixture(scope="module")
def by_syntax(synth_vindr: Path) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for f in sorted((synth_vindr / "images").rglob("*.dicom")):
        out.setdefault(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID.name, []).append(f)
    return out


@pytest.fixture(scope="module")
def native(by_syntax: dict[str, list[Path]]) -> bytes:
    return by_syntax["Explicit VR Little Endian"][0].read_bytes()


def _case(data: bytes, name: str) -> bytes:
    return next(c.data for c in dicom_cases(data) if c.name == name)


def _both_raise(path: Path, error: type[DicomError]) -> list[str]:
    """The header-only read (indexing, `data check`) and the full preprocessing (train, predict)."""
    msgs = []
    for run in (lambda: read_image(path, header_only=True), lambda: preprocess_file(path, S)):
        with pytest.raises(error) as ei:
            run()
        msgs.append(one_line(ei.value, path))
    return msgs


def test_invalid_ds_rescale_slope_names_the_attribute(tmp_path: Path, native: bytes) -> None:
    p = tmp_path / "slope.dcm"
    p.write_bytes(with_value(native, "RescaleSlope", b"ab"))
    for msg in _both_raise(p, InvalidValue):
        assert "invalid value of RescaleSlope (0028,1053): 'ab'" in msg


def test_invalid_is_number_of_frames_names_the_attribute(tmp_path: Path, native: bytes) -> None:
    p = tmp_path / "frames.dcm"
    p.write_bytes(with_value(native, "NumberOfFrames", b"1A"))
    for msg in _both_raise(p, InvalidValue):
        assert "invalid value of NumberOfFrames (0028,0008): '1A'" in msg


def test_pydicoms_bad_vr_sample_is_a_one_line_reject() -> None:
    path = get_testdata_file("badVR.dcm", download=False)
    if path is None:
        pytest.skip("pydicom's badVR.dcm is not shipped with this pydicom")
    for require_mg in (True, False):
        with pytest.raises(InvalidValue) as ei:
            read_image(path, require_mg=require_mg)
        assert "NumberOfFrames" in one_line(ei.value, path)


def test_garbage_window_width_is_an_error_and_a_lone_window_centre_a_named_warning(
    tmp_path: Path, native: bytes
) -> None:
    p = tmp_path / "ww.dcm"
    p.write_bytes(with_value(native, "WindowWidth", b"ab"))
    for msg in _both_raise(p, InvalidValue):
        assert "WindowWidth" in msg and "'ab'" in msg
    lone = tmp_path / "lone" / "wc.dcm"
    lone.parent.mkdir()
    lone.write_bytes(_case(native, "missing:WindowWidth"))
    assert any("WindowCenter without WindowWidth" in w for w in warnings_of(read_image(lone)))
    assert preprocess_file(lone, S).shape == (64, 32)  # min..max scaling, said out loud:
    idx = load_folder(lone.parent)
    assert [n for n in idx.notes if n.startswith(f"{lone}: WindowCenter without WindowWidth")]


def test_files_cut_in_the_header_are_truncated(tmp_path: Path, native: bytes) -> None:
    els = elements(native)
    pi, pixel = els["PhotometricInterpretation"], els["PixelData"]
    cuts = {"meta": 150, "in-header": pi.start + 3, "in-value": pi.value_start + 2, "before-pixels": pixel.start}
    for where, cut in cuts.items():
        p = tmp_path / f"cut-{where}.dcm"
        p.write_bytes(native[:cut])
        for msg in _both_raise(p, TruncatedFile):
            assert "truncated" in msg and "colour" not in msg, msg


def test_nan_rescale_slope_is_an_invalid_value_not_an_empty_mask(tmp_path: Path, native: bytes) -> None:
    p = tmp_path / "nan.dcm"
    p.write_bytes(with_value(native, "RescaleSlope", b"NaN"))
    for msg in _both_raise(p, InvalidValue):
        assert "invalid value of RescaleSlope" in msg and "empty breast mask" not in msg


def test_corrupt_jpeg2000_stream_is_one_quiet_line(
    tmp_path: Path, by_syntax: dict[str, list[Path]], capfd: pytest.CaptureFixture[str]
) -> None:
    j2k = by_syntax["JPEG 2000 Image Compression (Lossless Only)"][0].read_bytes()
    p = tmp_path / "j2k.dcm"
    p.write_bytes(_case(j2k, "stream:codestream-header"))
    capfd.readouterr()
    read_image(p, header_only=True)  # the header cannot tell: that is what --decode is for
    with pytest.raises(DecodeError) as ei:
        preprocess_file(p, S)
    assert "cannot decode JPEG 2000" in one_line(ei.value, p)
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out, err)


def test_check_strict_finds_every_file_training_would_reject(
    tmp_path: Path, synth_vindr: Path, by_syntax: dict[str, list[Path]]
) -> None:
    root = tmp_path / "vindr"
    shutil.copytree(synth_vindr, root)
    native_src = by_syntax["Explicit VR Little Endian"]
    j2k_src = by_syntax["JPEG 2000 Image Compression (Lossless Only)"][0]
    studies = {f.parent.name for f in native_src} - {j2k_src.parent.name}
    first, second = sorted(studies)[:2]
    short = next(root / f.relative_to(synth_vindr) for f in native_src if f.parent.name == first)
    nopix = next(root / f.relative_to(synth_vindr) for f in native_src if f.parent.name == second)
    corrupt = root / j2k_src.relative_to(synth_vindr)
    short.write_bytes(short.read_bytes()[:-1000])
    nopix.write_bytes(_case(nopix.read_bytes(), "missing:PixelData"))
    corrupt.write_bytes(_case(corrupt.read_bytes(), "stream:codestream-header"))

    headers = check_dataset(root)
    rejected = {r["path"]: r["reason"] for r in headers["rejects"]}
    assert "truncated pixel data" in rejected[str(short)]
    assert "no pixel data" in rejected[str(nopix)]
    assert str(corrupt) not in rejected and headers["pairs"] == 8 - 2

    decoded = check_dataset(root, decode=True)
    rejected = {r["path"]: r["reason"] for r in decoded["rejects"]}
    assert {str(short), str(nopix), str(corrupt)} <= set(rejected)
    assert "cannot decode JPEG 2000" in rejected[str(corrupt)] and decoded["pairs"] == 8 - 3
    pairs = load_dataset(root, decode=True).pairs
    data = PairDataset(pairs, S)
    assert all(data[i][0].shape == (1, 64, 32) for i in range(len(data)))  # what is left trains

    res = CliRunner().invoke(app, ["data", "check", str(root), "--strict", "--decode"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert all(str(p) in res.output for p in (short, nopix, corrupt))
    assert CliRunner().invoke(app, ["data", "check", str(root), "--strict"]).exit_code == 1
