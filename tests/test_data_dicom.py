"""The DICOM reader and the xpr-preproc-1 pipeline: real sample files, bad input, invariances."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from xpr_deploy.data import PreprocessSettings, preprocess_file, preprocess_with_geometry, read_image
from xpr_deploy.data.dicom import (
    PixelMeta,
    apply_window,
    decode_stored,
    needs_flip,
    preprocess_array,
    resize_bilinear_aa,
)
from xpr_deploy.data.errors import (
    BadLaterality,
    BadView,
    DicomError,
    EmptyBreastMask,
    ForProcessing,
    MissingDecoder,
    MissingFile,
    NotDicom,
    TruncatedFile,
    UnsupportedImage,
    WrongModality,
)
from xpr_deploy.data.header import pixel_meta
from xpr_deploy.data.synth import Breast, Lesion, mg_dataset, render_stored, save_mg, window_for

S = PreprocessSettings(img_size=(224, 112))


def sample(name: str) -> str:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom sample {name} not shipped with this pydicom")
    return str(path)


def one_line(exc: BaseException, path: object) -> None:
    msg = str(exc)
    assert "\n" not in msg and str(path) in msg, msg


# ------------------------------------------------------------------ pydicom's own sample files


@pytest.mark.parametrize(
    "name",
    ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"],
)
def test_compressed_samples_decode_losslessly(name):
    ref = pydicom.dcmread(sample("MR_small.dcm")).pixel_array
    ds = read_image(sample(name), require_mg=False)
    arr = decode_stored(ds, name)
    np.testing.assert_array_equal(arr, ref)
    # and the whole contract runs on it
    x, geo = preprocess_with_geometry(sample(name), S, require_mg=False)
    assert x.shape == (224, 112) and x.dtype == np.float32 and np.isfinite(x).all()
    assert geo.rows == 64 and geo.cols == 64


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "JPGExtended.dcm", "JPEGLSNearLossless_16.dcm"])
def test_other_compressed_samples_decode(name):
    ds = read_image(sample(name), require_mg=False)
    arr = decode_stored(ds, name)
    assert arr.ndim == 2 and arr.shape == (ds.Rows, ds.Columns)


@pytest.mark.parametrize(
    ("name", "error", "words"),
    [
        ("CT_small.dcm", WrongModality, "modality CT"),
        ("MR_small.dcm", WrongModality, "modality MR"),
        ("SC_rgb_small_odd.dcm", UnsupportedImage, "colour"),
        ("SC_rgb_rle.dcm", UnsupportedImage, "colour"),
        ("rtdose.dcm", UnsupportedImage, "multi-frame"),
        ("test-SR.dcm", UnsupportedImage, "no pixel data"),
        ("MR_truncated.dcm", TruncatedFile, "pixel data"),
    ],
)
def test_wrong_samples_get_typed_errors(name, error, words):
    path = sample(name)
    with pytest.raises(error) as ei:
        read_image(path)
    one_line(ei.value, path)
    assert words in str(ei.value)


def test_truncated_sample_without_mg_check():
    path = sample("MR_truncated.dcm")
    with pytest.raises(TruncatedFile):
        read_image(path, require_mg=False)


# ------------------------------------------------------------------ bad input


def test_missing_file(tmp_path):
    p = tmp_path / "nope.dcm"
    with pytest.raises(MissingFile) as ei:
        preprocess_file(p, S)
    one_line(ei.value, p)


def test_not_dicom(tmp_path):
    p = tmp_path / "notes.dcm"
    p.write_text("this is not a DICOM file\n" * 20)
    with pytest.raises(NotDicom) as ei:
        read_image(p)
    one_line(ei.value, p)
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    with pytest.raises(NotDicom):
        read_image(empty)


def _synthetic_file(
    tmp_path, name="img.dcm", ts=ExplicitVRLittleEndian, photometric="MONOCHROME2", laterality="L", view="CC", **tags
):
    b = Breast(
        laterality=laterality,
        malignant=True,
        depth=0.8,
        half_height=0.4,
        density=0.5,
        seed=3,
        lesion=Lesion(depth=0.5, cc_offset=0.1, mlo_offset=0.2, radius=0.06, contrast=0.3, seed=4),
    )
    stored, pad = render_stored(b, view, (256, 128), photometric, 1900, 3400)
    ds = mg_dataset(
        stored,
        photometric=photometric,
        laterality=laterality,
        view=view,
        window=window_for(photometric, 1900, 3400),
        patient_id="P1",
        patient_name="T^T",
        study_uid="1.2.3.4",
        series_uid="1.2.3.4.1",
        sop_uid="1.2.3.4.1.1",
        padding_value=pad,
    )
    for k, v in tags.items():
        if v is None:
            delattr(ds, k)
        else:
            setattr(ds, k, v)
    path = tmp_path / name
    save_mg(ds, path, ts)
    return path


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless])
def test_truncated_synthetic_file(tmp_path, ts):
    good = _synthetic_file(tmp_path, ts=ts)
    data = good.read_bytes()
    bad = tmp_path / "cut.dcm"
    bad.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(TruncatedFile) as ei:
        preprocess_file(bad, S)
    one_line(ei.value, bad)


def test_for_processing(tmp_path):
    p = _synthetic_file(tmp_path, PresentationIntentType="FOR PROCESSING")
    with pytest.raises(ForProcessing) as ei:
        read_image(p)
    one_line(ei.value, p)


def test_laterality_and_view_errors(tmp_path):
    from xpr_deploy.data.dicom import laterality_of, view_of

    p = _synthetic_file(tmp_path, "a.dcm", ImageLaterality="B")
    with pytest.raises(BadLaterality):
        laterality_of(read_image(p), str(p))
    p = _synthetic_file(tmp_path, "b.dcm", Laterality="R")
    with pytest.raises(BadLaterality, match="contradicts"):
        laterality_of(read_image(p), str(p))
    p = _synthetic_file(tmp_path, "c.dcm", ViewPosition="ML", ViewCodeSequence=None)
    with pytest.raises(BadView, match="not CC or MLO"):
        view_of(read_image(p), str(p))
    p = _synthetic_file(tmp_path, "d.dcm", ViewPosition="MLO")
    with pytest.raises(BadView, match="contradicts"):
        view_of(read_image(p), str(p))
    p = _synthetic_file(tmp_path, "e.dcm", ViewPosition=None, ViewCodeSequence=None)
    with pytest.raises(BadView, match="missing"):
        view_of(read_image(p), str(p))


def test_empty_breast_mask(tmp_path):
    meta = PixelMeta(window_center=2048, window_width=4096)
    with pytest.raises(EmptyBreastMask, match="empty breast mask"):
        preprocess_array(np.full((64, 32), 10, dtype=np.uint16), meta, S, "blank.dcm")
    with pytest.raises(EmptyBreastMask):  # constant image without a window: min == max
        preprocess_array(np.full((64, 32), 10, dtype=np.uint16), PixelMeta(), S, "blank.dcm")


def test_unsupported_transfer_syntax(tmp_path):
    p = _synthetic_file(tmp_path, ts=JPEG2000Lossless)
    ds = pydicom.dcmread(p)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.92"  # JPEG 2000 Part 2: no decoder in pydicom
    bad = tmp_path / "part2.dcm"
    ds.save_as(bad)
    with pytest.raises(UnsupportedImage, match="no decoder"):
        preprocess_file(bad, S)


def test_missing_decoder_names_the_package(tmp_path):
    """With pydicom's J2K decoder plugins removed (as if not installed), J2K gives MissingDecoder."""
    p = _synthetic_file(tmp_path, ts=JPEG2000Lossless)
    code = (
        "from pydicom.pixels.decoders import JPEG2000LosslessDecoder as D\n"
        "for name in list(D.available_plugins): D.remove_plugin(name)\n"
        "from xpr_deploy.data import preprocess_file, PreprocessSettings\n"
        "from xpr_deploy.data.errors import MissingDecoder\n"
        "try:\n"
        f"    preprocess_file({str(p)!r}, PreprocessSettings(img_size=(64, 32)))\n"
        "except MissingDecoder as e:\n"
        "    print('MISSING', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "MISSING" in out.stdout, out.stdout + out.stderr
    assert "pylibjpeg-openjpeg" in out.stdout and str(p) in out.stdout
    assert MissingDecoder.__mro__[1] is DicomError


# ------------------------------------------------------------------ deflated explicit VR little endian


def _deflated(src, dst, cut: int = 0):
    """`src` as Deflated Explicit VR Little Endian (PS3.5 A.5: the dataset after the file meta, deflated),
    the inflated dataset shortened by `cut` bytes first (a complete deflate stream of a cut dataset)."""
    import zlib

    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = pydicom.dcmread(src)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    raw = body.getvalue()
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    stream = z.compress(raw[: len(raw) - cut]) + z.flush()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta = DicomBytesIO()
    meta.is_little_endian, meta.is_implicit_VR = True, False
    write_file_meta_info(meta, ds.file_meta)
    dst.write_bytes(b"\0" * 128 + b"DICM" + meta.getvalue() + stream)
    return dst


def test_deflated_file_is_measured_after_inflation(tmp_path):
    """A deflated file is smaller than the pixel data it holds: read whole or header-only, it gives the
    explicit VR file's pixels and model input (it was refused as "truncated pixel data")."""
    plain = _synthetic_file(tmp_path)
    deflated = _deflated(plain, tmp_path / "deflated.dcm")
    assert deflated.stat().st_size < 256 * 128 * 2  # smaller than its pixel data
    assert pydicom.dcmread(deflated).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1.99"
    from xpr_deploy.data.dicom import verify_image

    assert verify_image(deflated, decode=True).Rows == 256  # header-only, then decoded
    np.testing.assert_array_equal(decode_stored(read_image(deflated)), decode_stored(read_image(plain)))
    assert np.array_equal(preprocess_file(deflated, S), preprocess_file(plain, S))


def test_deflated_file_truncated_inside_or_outside_the_stream(tmp_path):
    """A complete deflate stream of a dataset cut inside its pixel data: the inflated length is what is
    short (the numbers are inflated bytes); a deflate stream cut short: truncated too. One line each."""
    plain = _synthetic_file(tmp_path)
    short = _deflated(plain, tmp_path / "short.dcm", cut=1000)
    need = 256 * 128 * 2
    for header_only in (True, False):
        with pytest.raises(TruncatedFile) as ei:
            read_image(short, header_only=header_only)
        one_line(ei.value, short)
        assert f"truncated pixel data: {need - 1000} of the {need} bytes" in str(ei.value)
    data = _deflated(plain, tmp_path / "whole.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(TruncatedFile) as ei:
        read_image(cut)
    one_line(ei.value, cut)


# ------------------------------------------------------------------ invariances of the contract


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless])
def test_monochrome1_equals_monochrome2(tmp_path, ts):
    m2 = _synthetic_file(tmp_path, "m2.dcm", ts=ts, photometric="MONOCHROME2")
    m1 = _synthetic_file(tmp_path, "m1.dcm", ts=ts, photometric="MONOCHROME1")
    d1, d2 = read_image(m1), read_image(m2)
    assert d1.PhotometricInterpretation == "MONOCHROME1" and d2.PhotometricInterpretation == "MONOCHROME2"
    s1, s2 = decode_stored(d1), decode_stored(d2)
    assert not np.array_equal(s1, s2)  # really different stored pixels
    a1, g1 = preprocess_with_geometry(m1, S)
    a2, g2 = preprocess_with_geometry(m2, S)
    np.testing.assert_allclose(a1, a2, atol=1e-6, rtol=0)
    assert g1 == g2


def test_mirrored_right_breast_has_chest_wall_left(tmp_path):
    left = _synthetic_file(tmp_path, "l.dcm", laterality="L")
    right = _synthetic_file(tmp_path, "r.dcm", laterality="R")
    sl, sr = decode_stored(read_image(left)), decode_stored(read_image(right))
    np.testing.assert_array_equal(sl[:, ::-1], sr)  # the right breast is stored mirrored
    assert sr[:, -8:].mean() > sr[:, :8].mean()  # chest wall on the right as stored
    al, gl = preprocess_with_geometry(left, S)
    ar, gr = preprocess_with_geometry(right, S)
    assert not gl.flipped and gr.flipped
    np.testing.assert_array_equal(al, ar)
    w = ar.shape[1]
    assert ar[:, : w // 4].mean() > ar[:, -w // 4 :].mean()  # chest wall (dense) on the left


def test_geometry_maps_model_pixels_back(tmp_path):
    right = _synthetic_file(tmp_path, "r.dcm", laterality="R")
    _, geo = preprocess_with_geometry(right, S)
    r0, r1, c0, c1 = geo.stored_box()
    assert 0 <= r0 < r1 < geo.rows and 0 <= c0 < c1 < geo.cols
    # the model's column 0 (chest wall) is the stored image's right edge region for a right breast
    _, col = geo.model_to_stored(0.0, 0.0)
    assert col > geo.cols / 2
    pasted = geo.paste(np.ones(S.img_size))
    assert pasted.shape == (geo.rows, geo.cols)
    assert pasted[r0 : r1 + 1, c0 : c1 + 1].min() > 0.99 and pasted.sum() == pytest.approx(
        (r1 - r0 + 1) * (c1 - c0 + 1)
    )


def test_flip_rule_odd_width_ignores_middle_column():
    x = np.zeros((4, 5))
    x[:, 2] = 100.0  # middle column only: no flip
    assert not needs_flip(x)
    x[:, 3] = 1.0
    assert needs_flip(x)
    x[:, 1] = 1.0  # tie: no flip
    assert not needs_flip(x)


def test_window_functions_match_the_standard():
    x = np.array([0.0, 99.0, 99.5, 100.0, 100.5, 101.0, 200.0])
    lin = apply_window(x, 100, 2)  # PS3.3: c=100, w=2 -> 0 below 99, 1 above 100
    np.testing.assert_allclose(lin, [0, 0, 0.5, 1, 1, 1, 1])
    np.testing.assert_allclose(apply_window(x, 100, 1), [0, 0, 0, 1, 1, 1, 1])  # x <= c - 0.5 -> 0
    ex = apply_window(x, 100, 200, "LINEAR_EXACT")
    np.testing.assert_allclose(ex, np.clip((x - 100) / 200 + 0.5, 0, 1))
    sig = apply_window(np.array([100.0]), 100, 50, "SIGMOID")
    np.testing.assert_allclose(sig, [0.5])


def test_multivalued_window_uses_first_value(tmp_path):
    p = _synthetic_file(tmp_path, "multi.dcm")
    ds = read_image(p)
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    ds.WindowCenter = [str(int(c)), "10"]
    ds.WindowWidth = [str(int(w)), "20"]
    meta = pixel_meta(ds)
    assert (meta.window_center, meta.window_width) == (c, w)


def test_padding_value_is_zeroed():
    stored = np.full((40, 20), 3000, dtype=np.uint16)
    stored[:, 12:] = 0  # padding
    stored[:, 10:12] = 1000
    meta = PixelMeta(padding_value=0)
    from xpr_deploy.data.dicom import to_display

    x = to_display(stored, meta)
    assert (x[:, 12:] == 0).all() and x[:, :10].min() == 1.0  # min-max over non-padding pixels
    m1 = to_display(stored, PixelMeta(photometric="MONOCHROME1", padding_value=0))
    assert (m1[:, 12:] == 0).all() and m1[:, :10].max() == 0.0 and m1[:, 10].min() == 1.0


@pytest.mark.parametrize(("shape", "out"), [((300, 170), (224, 112)), ((50, 30), (224, 112)), ((97, 61), (40, 61))])
def test_resize_matches_torch_antialiased_bilinear(shape, out):
    rng = np.random.default_rng(0)
    x = rng.random(shape)
    ours = resize_bilinear_aa(x, out)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(x)[None, None], size=out, mode="bilinear", align_corners=False, antialias=True
    )[0, 0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_preprocess_dataset_equals_file(tmp_path):
    from xpr_deploy.data import preprocess_dataset

    p = _synthetic_file(tmp_path, ts=RLELossless)
    np.testing.assert_array_equal(preprocess_dataset(pydicom.dcmread(p), S), preprocess_file(p, S))


def test_settings_roundtrip_and_hash():
    s = PreprocessSettings(img_size=(448, 224))
    assert PreprocessSettings.from_dict(s.to_dict()) == s
    assert s.hash() == PreprocessSettings.from_dict(s.to_dict()).hash()
    assert s.hash() != PreprocessSettings(img_size=(448, 448)).hash()
    assert s.to_dict()["version"] == "xpr-preproc-1"


def test_input_file_is_not_modified(tmp_path):
    p = _synthetic_file(tmp_path, ts=JPEG2000Lossless)
    before = p.read_bytes()
    copy = tmp_path / "copy.dcm"
    shutil.copy(p, copy)
    preprocess_file(p, S)
    assert p.read_bytes() == before
