"""Hostile DICOM input, one test per example of issue 15 (classes 2 and 3): a malformed header
element is that file's one-line reason, never a traceback or a silently different image, and
`data check --strict` finds what training would die on. Issue 21 (classes 3 and 6) at the reader:
files over the resource budget (declared-huge RLE, sparse native, frames, a JPEG 2000 size bomb,
a deflate bomb) and special files are refused from the header or the stat, before anything is
read whole or decoded."""

from __future__ import annotations

import io
import os
import resource
import shutil
import socket
import struct
import sys
import threading
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from tests.fuzz.corpus import dicom_cases, elements, with_value
from xpr_deploy.cli import app, main
from xpr_deploy.data import PreprocessSettings, check_dataset, load_dataset, preprocess_file, read_image
from xpr_deploy.data.budget import Budget, OverBudget, default_budget
from xpr_deploy.data.dicom import warnings_of
from xpr_deploy.data.errors import DecodeError, DicomError, InvalidValue, TruncatedFile
from xpr_deploy.data.folder import load_folder
from xpr_deploy.data.torchdata import PairDataset
from xpr_deploy.errors import ConfigError

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


# --------------------------------------------------------------------------- issue 21: hostile sizes and files
# Builders shared with tests/test_hostile_inputs.py: each writes a small file that declares (or
# inflates to) far more than it holds; `study` gives it its own StudyInstanceUID.


def _restudy(ds: pydicom.Dataset, study: str | None) -> None:
    if study:
        ds.StudyInstanceUID = study
        ds.SOPInstanceUID = pydicom.uid.generate_uid()


def declared_huge_rle(src: Path, dst: Path, side: int = 32000, study: str | None = None) -> Path:
    """A 5 kB RLE file whose header declares side x side 16-bit pixels (2 GB decoded at 32000)."""
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(src)
    _restudy(ds, study)
    ds.Rows = ds.Columns = side
    seg = b"\x81\x00" * 1000  # runs of zeros
    ds.PixelData = encapsulate([struct.pack("<16I", 2, 64, 64 + len(seg), *([0] * 13)) + seg + seg])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = pydicom.uid.RLELossless
    ds.save_as(dst, enforce_file_format=True)
    return dst


def sparse_native(src: Path, dst: Path, side: int = 32000, study: str | None = None) -> Path:
    """A native file of side x side 16-bit pixels (2 GB at 32000), all of it a hole: a few kB on disk."""
    ds = pydicom.dcmread(src)
    _restudy(ds, study)
    ds.Rows = ds.Columns = side
    ds.PixelData = b"\0\0"
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.save_as(dst, enforce_file_format=True)
    data = bytearray(dst.read_bytes())
    at = data.rfind(b"\xe0\x7f\x10\x00")
    n = side * side * 2
    data[at + 8 : at + 12] = struct.pack("<I", n)
    with open(dst, "wb") as f:
        f.write(data[: at + 12])
        f.truncate(at + 12 + n)
    return dst


def many_frames(src: Path, dst: Path, frames: int = 100_000, study: str | None = None) -> Path:
    """A file that declares `frames` frames of its pixels (its pixel data holds one)."""
    ds = pydicom.dcmread(src)
    _restudy(ds, study)
    ds.NumberOfFrames = frames
    ds.save_as(dst, enforce_file_format=True)
    return dst


def j2k_size_bomb(src_j2k: Path, dst: Path, rows: int = 20000, cols: int = 10000) -> Path:
    """A JPEG 2000 file whose codestream's SIZ declares rows x cols, its header Rows x Columns what they were."""
    from pydicom.encaps import encapsulate, generate_fragments

    ds = pydicom.dcmread(src_j2k)
    frag = bytearray(list(generate_fragments(ds.PixelData))[1])
    at = frag.find(b"\xff\x4f\xff\x51") + 2
    struct.pack_into(">II", frag, at + 6, cols, rows)  # Xsiz, Ysiz
    struct.pack_into(">II", frag, at + 22, cols, rows)  # one tile of that size
    ds.PixelData = encapsulate([bytes(frag)])
    ds.save_as(dst, enforce_file_format=True)
    return dst


def deflate_bomb(dst: Path, inflated: int) -> Path:
    """A deflated-transfer-syntax file whose dataset (one private OB element of zeros) inflates to `inflated` bytes."""
    import io
    import zlib

    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    buf = io.BytesIO()
    buf.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buf, meta, enforce_standard=True)
    comp = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
    n = inflated - 12
    chunks = [comp.compress(struct.pack("<HH2sHI", 0x0009, 0x1010, b"OB", 0, n))]
    zero = bytes(1 << 22)
    while n > 0:
        chunks.append(comp.compress(zero[: min(n, len(zero))]))
        n -= len(zero)
    chunks.append(comp.flush())
    dst.write_bytes(buf.getvalue() + b"".join(chunks))
    return dst


def _peak_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def test_files_over_the_budget_are_refused_from_the_header(tmp_path: Path, by_syntax: dict[str, list[Path]]) -> None:
    src = by_syntax["Explicit VR Little Endian"][0]
    cases = {
        declared_huge_rle(src, tmp_path / "rle.dcm"): "32000x32000 = 1024000000 pixels is over the budget of 40000000 "
        "pixels per file (XPR_MAX_PIXELS)",
        sparse_native(src, tmp_path / "sparse.dcm"): "bytes is over the budget of 134217728 bytes per file "
        "(XPR_MAX_FILE_BYTES)",
        many_frames(src, tmp_path / "frames.dcm"): "100000 frames are over the budget of 1000 frames per file "
        "(XPR_MAX_FRAMES)",
        deflate_bomb(tmp_path / "deflate.dcm", 200 << 20): "the deflated dataset inflates to more than 134217728 bytes",
    }
    before = _peak_mb()
    for path, needle in cases.items():
        for msg in _both_raise(path, OverBudget):
            assert needle in msg, msg
    st = os.stat(tmp_path / "sparse.dcm")
    assert st.st_size > 2_048_000_000 and st.st_blocks * 512 < 1 << 20  # 2 GB, a hole on disk
    assert _peak_mb() - before < 150  # nothing was read whole, inflated or decoded


def test_a_stream_that_declares_more_than_its_header_is_not_decoded(
    tmp_path: Path, by_syntax: dict[str, list[Path]]
) -> None:
    bomb = j2k_size_bomb(by_syntax["JPEG 2000 Image Compression (Lossless Only)"][0], tmp_path / "j2k.dcm")
    before = _peak_mb()
    with pytest.raises(InvalidValue) as ei:
        preprocess_file(bomb, S)
    msg = one_line(ei.value, bomb)
    assert "the JPEG 2000 stream declares 20000x10000 pixels, the header 320x160: not decoded" in msg
    assert _peak_mb() - before < 150  # OpenJPEG allocated 1.3 GB for it before


def test_the_budget_is_a_parameter_and_an_environment_variable(
    tmp_path: Path, native: bytes, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "a.dcm"
    p.write_bytes(native)  # 320 x 160 = 51200 pixels, about 100 kB
    monkeypatch.setenv("XPR_MAX_PIXELS", "50000")
    with pytest.raises(OverBudget, match=r"320x160 = 51200 pixels is over the budget of 50000 pixels"):
        read_image(p, header_only=True)
    assert read_image(p, budget=Budget(max_pixels=51200)).Rows == 320  # a caller's own budget wins
    monkeypatch.setenv("XPR_MAX_PIXELS", "")
    monkeypatch.setenv("XPR_MAX_FILE_BYTES", "50000")
    with pytest.raises(OverBudget, match=r"over the budget of 50000 bytes per file \(XPR_MAX_FILE_BYTES\)"):
        preprocess_file(p, S)
    monkeypatch.setenv("XPR_MAX_FILE_BYTES", "lots")
    with pytest.raises(ConfigError, match="XPR_MAX_FILE_BYTES='lots': need a positive whole number"):
        default_budget()
    monkeypatch.setattr(sys, "argv", ["xpr", "data", "check", str(tmp_path)])
    with pytest.raises(SystemExit) as e:
        main()  # the real entry point: one line, exit 2
    err = capsys.readouterr().err
    assert e.value.code == 2 and err == "error: XPR_MAX_FILE_BYTES='lots': need a positive whole number\n", err


def test_a_valid_deflated_file_is_read(tmp_path: Path, native: bytes) -> None:
    ds = pydicom.dcmread(io.BytesIO(native))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    p = tmp_path / "deflated.dcm"
    ds.save_as(p, enforce_file_format=True)
    assert preprocess_file(p, S).shape == (64, 32)  # was "truncated pixel data": offsets counted inflated bytes


def _finishes(fn: object, seconds: float = 20.0) -> BaseException | None:
    """Run fn() in a thread; it must finish (a FIFO opened for reading blocks forever)."""
    out: list[BaseException | None] = []

    def run() -> None:
        try:
            fn()  # type: ignore[operator]
            out.append(None)
        except BaseException as exc:
            out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert out, f"still running after {seconds} s (opened a FIFO or a device for reading?)"
    return out[0]


def test_special_files_are_refused_without_being_read(tmp_path: Path) -> None:
    fifo = tmp_path / "x.dcm"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.dcm"
    zero.symlink_to("/dev/zero")
    gone = tmp_path / "gone.dcm"
    gone.symlink_to(tmp_path / "nowhere.dcm")
    sock_path = tmp_path / "s.dcm"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    try:
        for path, needle in (
            (fifo, "not a file (a FIFO): not opened"),
            (zero, "not a file (a character device): not opened"),
            (gone, "dangling symbolic link (its target does not exist)"),
            (sock_path, "not a file (a socket): not opened"),
        ):
            for header_only in (True, False):
                exc = _finishes(lambda p=path, h=header_only: read_image(p, header_only=h))
                assert isinstance(exc, DicomError) and needle in one_line(exc, path), exc
    finally:
        sock.close()
