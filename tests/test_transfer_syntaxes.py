"""Every transfer syntax a mammography archive uses, read by the Python toolkit and by the C++ runtime.

One synthetic breast (CC + MLO, 320x160 stored pixels, 12 bits, explicit VR little endian) is
transcoded with real tools into each syntax: DCMTK's `dcmconv`, `dcmcrle`, `dcmcjpeg`, `dcmcjpls`,
OpenJPEG (pydicom's JPEG 2000 encoder, pylibjpeg-openjpeg) and OpenJPH's `ojph_compress` (HTJ2K).
Then, per syntax:

- lossless: the model input is bit for bit the uncompressed file's (`np.array_equal`), in Python
  (`preprocess_file`) and in C++ (`xpr_infer --dump-inputs`), so the probability is too;
- lossy: the stored values and the model input differ by a bounded amount, the probability by
  little, and the decision at the bundle's operating point is the clean file's, on both sides;
- not supported: one line naming the syntax (UID, and its name where the UID is known), in Python
  (`UnsupportedTransferSyntax`; `xpr predict` skips the breast with that line, exit 1 when nothing
  else is left) and in C++ (`xpr_infer` exit 2, `"status": "bad DICOM"`).

Also: JPEG baseline on an 8-bit copy (baseline holds 8 bits only), damaged HTJ2K files (one line on
both sides), and `xpr synth --transfer-syntax implicit|deflated|jpeg-ls`.

The C++ runtime and the bundle are built once per session (conftest `xpr_infer`, `cpp_bundle`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000, UID, JPEG2000Lossless

from xpr_deploy.data.dicom import PreprocessSettings, decode_stored, preprocess_file, read_image
from xpr_deploy.data.errors import UnsupportedTransferSyntax

#: C++ vs Python model input of the same decoded pixels (as tests/test_engines_cpp.py)
INPUT_TOL = 1e-6
#: lossy: the largest stored-value change, mean |change| of the model input, |change| of the probability
LOSSY_MAX_PIXEL = {"jpeg-ls-near": 2, "jpeg-extended": 400, "jpeg2000": 150, "htj2k": 40}
LOSSY_MEAN_INPUT = 0.02
LOSSY_PROB = 0.01
#: a lossy syntax decoded by different libraries (DCMTK's IJG vs libjpeg): C++ vs Python input
LOSSY_CROSS_DECODER = 5e-3

Maker = Callable[[Path, Path], None]
#: where only a rejection matters, not the output size
SMALL = PreprocessSettings(img_size=(64, 32))


@dataclass(frozen=True)
class Syntax:
    uid: str
    kind: str  # "lossless", "lossy" or "unsupported"
    make: Maker
    tools: tuple[str, ...] = ()
    named: str | None = None  # unsupported: words of its name both sides print (None: an unknown UID)


def _run(cmd: list[Any], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)


def _tool(*cmd: str) -> Maker:
    """A DCMTK command line: TOOL [OPTIONS] SRC DST."""

    def make(src: Path, dst: Path) -> None:
        res = _run([*cmd, src, dst])
        assert res.returncode == 0, f"{' '.join(cmd)} failed: {res.stderr[-2000:]}"

    return make


def _pydicom(uid: str, **kw: Any) -> Maker:
    """pydicom 3's encoder (JPEG 2000: OpenJPEG through pylibjpeg-openjpeg)."""

    def make(src: Path, dst: Path) -> None:
        ds = pydicom.dcmread(src)
        ds.compress(uid, encoding_plugin="pylibjpeg", generate_instance_uid=False, **kw)
        ds.save_as(dst, enforce_file_format=True)

    return make


def _encapsulated(src: Path, dst: Path, uid: str, frame: bytes, lossy_method: str | None) -> None:
    ds = pydicom.dcmread(src)
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = UID(uid)
    if lossy_method:
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = lossy_method
    ds.save_as(dst, enforce_file_format=True)


def _ojph(uid: str, *options: str) -> Maker:
    """OpenJPH's `ojph_compress` on the stored values (16-bit PGM, maxval 4095: a 12-bit component),
    its codestream encapsulated under `uid` (pydicom has no HTJ2K encoder)."""

    def make(src: Path, dst: Path) -> None:
        stored = pydicom.dcmread(src).pixel_array
        pgm, j2c = dst.with_suffix(".pgm"), dst.with_suffix(".j2c")
        pgm.write_bytes(b"P5\n%d %d\n4095\n" % (stored.shape[1], stored.shape[0]) + stored.astype(">u2").tobytes())
        res = _run(["ojph_compress", "-i", pgm, "-o", j2c, *options])
        assert res.returncode == 0 and j2c.stat().st_size > 0, f"ojph_compress failed: {res.stdout}{res.stderr}"
        lossy = "-reversible" not in options
        _encapsulated(src, dst, uid, j2c.read_bytes(), "ISO_15444_15" if lossy else None)

    return make


def _relabel(src: Path, dst: Path, uid: str) -> None:
    """`src`'s dataset (explicit VR little endian bytes, as they are) under another TransferSyntaxUID,
    written below pydicom's writer (which refuses an unknown UID or native data under a compressed one)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    ds = pydicom.dcmread(src)
    body, meta = DicomBytesIO(), DicomBytesIO()
    for b in (body, meta):
        b.is_little_endian, b.is_implicit_VR = True, False
    write_dataset(body, ds)
    ds.file_meta.TransferSyntaxUID = UID(uid)
    write_file_meta_info(meta, ds.file_meta)
    dst.write_bytes(b"\0" * 128 + b"DICM" + meta.getvalue() + body.getvalue())


def _relabelled(uid: str) -> Maker:
    """A JPEG 2000 stream under a UID no encoder here writes."""

    def make(src: Path, dst: Path) -> None:
        _pydicom(JPEG2000Lossless)(src, dst)
        _relabel(dst, dst, uid)

    return make


DCMTK = ("dcmconv", "dcmcrle", "dcmcjpeg", "dcmcjpls")
HT = ("ojph_compress",)
HTJ2K, HTJ2K_RPCL, HTJ2K_LOSSY = "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"
SYNTAXES: dict[str, Syntax] = {
    "implicit": Syntax("1.2.840.10008.1.2", "lossless", _tool("dcmconv", "+ti"), DCMTK),
    "deflated": Syntax("1.2.840.10008.1.2.1.99", "lossless", _tool("dcmconv", "+td"), DCMTK),
    "big-endian": Syntax("1.2.840.10008.1.2.2", "lossless", _tool("dcmconv", "+tb"), DCMTK),
    "rle": Syntax("1.2.840.10008.1.2.5", "lossless", _tool("dcmcrle"), DCMTK),
    "jpeg-lossless-sv1": Syntax("1.2.840.10008.1.2.4.70", "lossless", _tool("dcmcjpeg", "--encode-lossless-sv1"),
                                DCMTK),
    # process 14 with another predictor (selection value 6)
    "jpeg-lossless-sv6": Syntax("1.2.840.10008.1.2.4.57", "lossless",
                                _tool("dcmcjpeg", "--encode-lossless", "--selection-value", "6"), DCMTK),
    "jpeg-ls": Syntax("1.2.840.10008.1.2.4.80", "lossless", _tool("dcmcjpls", "--encode-lossless"), DCMTK),
    "jpeg2000-lossless": Syntax("1.2.840.10008.1.2.4.90", "lossless", _pydicom(JPEG2000Lossless)),
    "htj2k-lossless": Syntax(HTJ2K, "lossless", _ojph(HTJ2K, "-reversible", "true", "-prog_order", "LRCP"), HT),
    "htj2k-rpcl": Syntax(HTJ2K_RPCL, "lossless", _ojph(HTJ2K_RPCL, "-reversible", "true", "-prog_order", "RPCL"), HT),
    "jpeg-ls-near": Syntax("1.2.840.10008.1.2.4.81", "lossy",
                           _tool("dcmcjpls", "--encode-nearlossless", "--max-deviation", "2"), DCMTK),
    "jpeg-extended": Syntax("1.2.840.10008.1.2.4.51", "lossy", _tool("dcmcjpeg", "--encode-extended"), DCMTK),
    "jpeg2000": Syntax("1.2.840.10008.1.2.4.91", "lossy", _pydicom(JPEG2000, j2k_cr=[20])),
    "htj2k": Syntax(HTJ2K_LOSSY, "lossy", _ojph(HTJ2K_LOSSY, "-qstep", "0.002"), HT),
    # a retired JPEG process (DCMTK writes it; pydicom has no decoder), and a UID that neither pydicom 3.0
    # nor DCMTK 3.6.7 knows (JPEG XL Lossless)
    "jpeg-progressive": Syntax("1.2.840.10008.1.2.4.55", "unsupported", _tool("dcmcjpeg", "--encode-progressive"),
                               DCMTK, named="JPEG Full Progression"),
    "jpeg-xl-lossless": Syntax("1.2.840.10008.1.2.4.110", "unsupported",
                               _relabelled("1.2.840.10008.1.2.4.110")),
}  # fmt: skip
LOSSLESS = [n for n, s in SYNTAXES.items() if s.kind == "lossless"]
LOSSY = [n for n, s in SYNTAXES.items() if s.kind == "lossy"]
UNSUPPORTED = [n for n, s in SYNTAXES.items() if s.kind == "unsupported"]


def _need(tools: tuple[str, ...]) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        why = f"{', '.join(missing)} not installed (scripts/system_deps.sh test: dcmtk, openjph-tools)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


# --------------------------------------------------------------------------- fixtures


@dataclass
class Clean:
    """The uncompressed breast: files, stored values, model inputs (Python and C++), probabilities."""

    files: dict[str, Path]
    stored: dict[str, np.ndarray]
    py: dict[str, np.ndarray]
    py_prob: float
    threshold: float
    cpp: dict[str, np.ndarray] = field(default_factory=dict)
    cpp_prob: float = float("nan")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One breast, uncompressed: {"cc": path, "mlo": path}."""
    from xpr_deploy.data.synth import write_synthetic

    root = tmp_path_factory.mktemp("syntax") / "synth"
    write_synthetic(root, 1, "vindr", size=(320, 160), seed=23, transfer_syntax="uncompressed")
    files = {pydicom.dcmread(p, stop_before_pixels=True).ViewPosition.lower(): p for p in root.rglob("*.dicom")}
    assert sorted(files) == ["cc", "mlo"], files
    return files


@pytest.fixture(scope="module")
def runner(cpp_bundle: dict[str, Path]) -> Iterator[tuple[Any, Any]]:
    """The bundle in Python's ONNX Runtime runner (one session for the module) and its source."""
    from xpr_deploy.runners import make_runner, open_source

    source = open_source(cpp_bundle["bundle"])
    with make_runner(source, "onnx") as r:
        yield source, r


def _py_prob(runner: tuple[Any, Any], x: dict[str, np.ndarray]) -> float:
    source, r = runner
    h, w = source.settings.img_size
    out = r.infer({source.io.cc: x["cc"].reshape(1, 1, h, w), source.io.mlo: x["mlo"].reshape(1, 1, h, w)})
    return float(np.asarray(out[source.io.prob]).ravel()[0])


@pytest.fixture(scope="module")
def clean(study: dict[str, Path], runner: tuple[Any, Any]) -> Clean:
    source, _ = runner
    py = {v: preprocess_file(p, source.settings) for v, p in study.items()}
    stored = {v: decode_stored(read_image(p), str(p)) for v, p in study.items()}
    return Clean(study, stored, py, _py_prob(runner, py), source.operating_point().threshold)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory, study: dict[str, Path]) -> Callable[[str], dict[str, Path]]:
    """`get(name)`: the breast transcoded into that syntax (made on first use, then kept)."""
    root = tmp_path_factory.mktemp("syntax-files")
    made: dict[str, dict[str, Path]] = {}

    def get(name: str) -> dict[str, Path]:
        if name not in made:
            spec = SYNTAXES[name]
            _need(spec.tools)
            out = {}
            for view, src in study.items():
                dst = root / name / f"{view}.dcm"
                dst.parent.mkdir(exist_ok=True)
                spec.make(src, dst)
                got = str(pydicom.dcmread(dst, stop_before_pixels=True).file_meta.TransferSyntaxUID)
                assert got == spec.uid, f"{name}: the tool wrote {got}, not {spec.uid}"
                out[view] = dst
            made[name] = out
        return made[name]

    return get


def _cpp(xpr_infer: Path, bundle: Path, files: dict[str, Path], dump: Path | None = None) -> dict[str, Any]:
    extra = ["--dump-inputs", dump] if dump else []
    res = _run([xpr_infer, bundle, files["cc"], files["mlo"], "--device", "cpu", "--threads", "1", *extra])
    lines = res.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("{"), f"exit {res.returncode}:\n{res.stdout}\n{res.stderr}"
    out: dict[str, Any] = json.loads(lines[0])
    out["_exit"], out["_stderr"] = res.returncode, res.stderr
    return out


def _cpp_inputs(dump: Path, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    return {v: np.fromfile(f"{dump}.{v}.f32", dtype=np.float32).reshape(shape) for v in ("cc", "mlo")}


@pytest.fixture(scope="module")
def clean_cpp(
    clean: Clean, xpr_infer: Path, cpp_bundle: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Clean:
    """The clean breast through `xpr_infer`: its dumped model inputs and probability."""
    dump = tmp_path_factory.mktemp("syntax-cpp") / "clean"
    c = _cpp(xpr_infer, cpp_bundle["bundle"], clean.files, dump)
    assert c["_exit"] == 0, c
    clean.cpp = _cpp_inputs(dump, clean.py["cc"].shape)
    clean.cpp_prob = c["prob"]
    for v in ("cc", "mlo"):
        assert np.abs(clean.cpp[v] - clean.py[v]).max() <= INPUT_TOL
    return clean


# --------------------------------------------------------------------------- lossless: bit for bit


@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_python_gives_the_uncompressed_model_input(
    name: str, encoded: Callable[[str], dict[str, Path]], clean: Clean, runner: tuple[Any, Any]
) -> None:
    files = encoded(name)
    source, _ = runner
    x = {}
    for view, path in files.items():
        assert np.array_equal(decode_stored(read_image(path), str(path)), clean.stored[view]), f"{name} {view}"
        x[view] = preprocess_file(path, source.settings)
        assert x[view].dtype == clean.py[view].dtype and np.array_equal(x[view], clean.py[view]), f"{name} {view}"
    assert _py_prob(runner, x) == clean.py_prob


@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_cpp_gives_the_uncompressed_model_input(
    name: str,
    encoded: Callable[[str], dict[str, Path]],
    clean_cpp: Clean,
    xpr_infer: Path,
    cpp_bundle: dict[str, Path],
    tmp_path: Path,
) -> None:
    files = encoded(name)
    c = _cpp(xpr_infer, cpp_bundle["bundle"], files, tmp_path / "in")
    assert c["_exit"] == 0, c
    assert c["transfer_syntax"] == [SYNTAXES[name].uid] * 2
    x = _cpp_inputs(tmp_path / "in", clean_cpp.py["cc"].shape)
    for view in ("cc", "mlo"):
        assert np.array_equal(x[view], clean_cpp.cpp[view]), f"{name} {view}: C++ input differs from the clean file's"
        assert np.abs(x[view] - clean_cpp.py[view]).max() <= INPUT_TOL
    assert c["prob"] == clean_cpp.cpp_prob


# --------------------------------------------------------------------------- lossy: bounded, same decision


@pytest.mark.parametrize("name", LOSSY)
def test_lossy_syntax_is_close_and_decides_the_same(
    name: str,
    encoded: Callable[[str], dict[str, Path]],
    clean_cpp: Clean,
    runner: tuple[Any, Any],
    xpr_infer: Path,
    cpp_bundle: dict[str, Path],
    tmp_path: Path,
) -> None:
    files = encoded(name)
    source, _ = runner
    clean, thr = clean_cpp, clean_cpp.threshold
    py = {}
    for view, path in files.items():
        stored = decode_stored(read_image(path), str(path)).astype(np.int32)
        dpix = int(np.abs(stored - clean.stored[view]).max())
        assert 0 < dpix <= LOSSY_MAX_PIXEL[name], f"{name} {view}: stored values differ by up to {dpix}"
        py[view] = preprocess_file(path, source.settings)
        assert float(np.abs(py[view] - clean.py[view]).mean()) <= LOSSY_MEAN_INPUT
    p = _py_prob(runner, py)
    assert abs(p - clean.py_prob) <= LOSSY_PROB and (p >= thr) == (clean.py_prob >= thr), (p, clean.py_prob, thr)

    c = _cpp(xpr_infer, cpp_bundle["bundle"], files, tmp_path / "in")
    assert c["_exit"] == 0 and c["transfer_syntax"] == [SYNTAXES[name].uid] * 2, c
    x = _cpp_inputs(tmp_path / "in", clean.py["cc"].shape)
    for view in ("cc", "mlo"):
        assert float(np.abs(x[view] - clean.cpp[view]).mean()) <= LOSSY_MEAN_INPUT
        assert float(np.abs(x[view] - py[view]).max()) <= LOSSY_CROSS_DECODER, f"{name} {view}: C++ vs Python"
    assert abs(c["prob"] - clean.cpp_prob) <= LOSSY_PROB and (c["prob"] >= thr) == (clean.cpp_prob >= thr)


def test_near_lossless_keeps_its_promised_deviation(encoded: Callable[[str], dict[str, Path]], clean: Clean) -> None:
    """JPEG-LS near-lossless with `--max-deviation 2`: no stored value moves by more than 2."""
    for view, path in encoded("jpeg-ls-near").items():
        diff = np.abs(decode_stored(read_image(path), str(path)).astype(np.int32) - clean.stored[view])
        assert 0 < diff.max() <= 2


# --------------------------------------------------------------------------- not supported: one line


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_unsupported_syntax_is_one_line_naming_it(
    name: str,
    encoded: Callable[[str], dict[str, Path]],
    study: dict[str, Path],
    xpr_infer: Path,
    cpp_bundle: dict[str, Path],
) -> None:
    uid, words = SYNTAXES[name].uid, SYNTAXES[name].named
    bad = encoded(name)["cc"]
    with pytest.raises(UnsupportedTransferSyntax) as exc:
        read_image(bad)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{bad}: transfer syntax ") and uid in msg and "not supported" in msg
    assert words is None or words in msg, msg

    c = _cpp(xpr_infer, cpp_bundle["bundle"], {"cc": bad, "mlo": study["mlo"]})
    assert c["_exit"] == 2 and c["status"] == "bad DICOM", c
    assert c["error"].startswith(f"{bad}: transfer syntax ") and uid in c["error"] and "not supported" in c["error"]
    assert c["_stderr"] == f"xpr_infer: {c['error']}\n"


def test_unsupported_syntax_in_xpr_predict(
    encoded: Callable[[str], dict[str, Path]], study: dict[str, Path], cpp_bundle: dict[str, Path], tmp_path: Path
) -> None:
    """`xpr predict` on a study whose CC is in an unsupported syntax: the line naming it, no
    traceback, exit 1 (no breast could be read)."""
    uid = SYNTAXES["jpeg-progressive"].uid
    folder = tmp_path / "study"
    folder.mkdir()
    shutil.copy(encoded("jpeg-progressive")["cc"], folder / "cc.dcm")
    shutil.copy(study["mlo"], folder / "mlo.dcm")
    xpr = Path(sys.executable).parent / "xpr"
    res = _run([xpr, "predict", cpp_bundle["bundle"], folder, "--backend", "onnx"])
    assert res.returncode == 1, res
    named = [ln for ln in res.stderr.splitlines() if uid in ln]
    assert len(named) == 1 and str(folder / "cc.dcm") in named[0] and "not supported" in named[0], res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("name", ["implicit", "deflated", "jpeg-ls"])
def test_synth_writes_more_syntaxes(name: str, tmp_path: Path, clean: Clean, runner: tuple[Any, Any]) -> None:
    """`xpr synth --transfer-syntax implicit|deflated|jpeg-ls` (pydicom's writer and CharLS): the same
    breast as the uncompressed one of the same seed, to the bit."""
    from xpr_deploy.data.synth import TRANSFER_SYNTAX_NAMES, write_synthetic

    write_synthetic(tmp_path / "s", 1, "vindr", size=(320, 160), seed=23, transfer_syntax=name)
    source, _ = runner
    for path in (tmp_path / "s").rglob("*.dicom"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.file_meta.TransferSyntaxUID == TRANSFER_SYNTAX_NAMES[name]
        assert np.array_equal(preprocess_file(path, source.settings), clean.py[ds.ViewPosition.lower()])


def test_damaged_htj2k_is_one_line_on_both_sides(
    encoded: Callable[[str], dict[str, Path]],
    study: dict[str, Path],
    xpr_infer: Path,
    cpp_bundle: dict[str, Path],
    tmp_path: Path,
) -> None:
    """The new C++ path (HTJ2K fragments DCMTK does not know, to OpenJPEG) on damaged files: a corrupt
    and a cut codestream, native pixel data under the HTJ2K UID, and encapsulated data under explicit
    VR little endian. Python and `xpr_infer` each give one line naming the file."""
    from pydicom.encaps import generate_frames

    from xpr_deploy.data.errors import DicomError

    good = encoded("htj2k-lossless")["cc"]
    frame = next(generate_frames(pydicom.dcmread(good).PixelData, number_of_frames=1))
    cases = {}
    for name, data in (("corrupt", frame[:300] + b"\xff" * 100 + frame[400:]), ("cut", frame[: len(frame) // 2])):
        ds = pydicom.dcmread(good)
        ds.PixelData = encapsulate([data])
        cases[name] = tmp_path / f"{name}.dcm"
        ds.save_as(cases[name], enforce_file_format=True)
    cases["native"] = tmp_path / "native.dcm"
    _relabel(study["cc"], cases["native"], HTJ2K)
    cases["encapsulated"] = tmp_path / "encapsulated.dcm"
    _relabel(good, cases["encapsulated"], "1.2.840.10008.1.2.1")
    for name, bad in cases.items():
        with pytest.raises(DicomError) as exc:
            preprocess_file(bad, SMALL)
        assert "\n" not in str(exc.value) and str(exc.value).startswith(f"{bad}: "), (name, exc.value)
        c = _cpp(xpr_infer, cpp_bundle["bundle"], {"cc": bad, "mlo": study["mlo"]})
        assert c["_exit"] == 2 and c["status"] == "bad DICOM" and c["error"].startswith(f"{bad}: "), (name, c)
        assert c["_stderr"] == f"xpr_infer: {c['error']}\n"


def test_jpeg_baseline_8bit_is_close_on_both_sides(
    study: dict[str, Path],
    runner: tuple[Any, Any],
    xpr_infer: Path,
    cpp_bundle: dict[str, Path],
    tmp_path: Path,
) -> None:
    """JPEG baseline holds 8-bit samples only: the breast reduced to 8 bits (BitsAllocated 8, window
    scaled), then `dcmcjpeg --encode-baseline`. Both sides stay close to that 8-bit file and decide
    alike; C++ (DCMTK's IJG) and Python (Pillow or libjpeg) decode lossy JPEG with different IDCTs."""
    _need(DCMTK)
    source, _ = runner
    eight, base = {}, {}
    for view, src in study.items():
        ds = pydicom.dcmread(src)
        pixels = (ds.pixel_array >> 4).astype(np.uint8)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.WindowCenter, ds.WindowWidth = (
            str(round(float(ds.WindowCenter) / 16)),
            str(round(float(ds.WindowWidth) / 16)),
        )
        ds.PixelData = pixels.tobytes()
        ds["PixelData"].VR = "OB"
        for k in ("PixelPaddingValue", "PixelPaddingRangeLimit"):
            ds.pop(k, None)
        eight[view], base[view] = tmp_path / f"{view}8.dcm", tmp_path / f"{view}-baseline.dcm"
        ds.save_as(eight[view], enforce_file_format=True)
        _tool("dcmcjpeg", "--encode-baseline")(eight[view], base[view])
    py8 = {v: preprocess_file(p, source.settings) for v, p in eight.items()}
    pyb = {v: preprocess_file(p, source.settings) for v, p in base.items()}
    c8 = _cpp(xpr_infer, cpp_bundle["bundle"], eight, tmp_path / "e")
    cb = _cpp(xpr_infer, cpp_bundle["bundle"], base, tmp_path / "b")
    assert c8["_exit"] == 0 and cb["_exit"] == 0 and cb["transfer_syntax"] == ["1.2.840.10008.1.2.4.50"] * 2, cb
    x8, xb = _cpp_inputs(tmp_path / "e", py8["cc"].shape), _cpp_inputs(tmp_path / "b", py8["cc"].shape)
    for v in ("cc", "mlo"):
        assert np.abs(x8[v] - py8[v]).max() <= INPUT_TOL  # the 8-bit file itself: identical contract
        assert float(np.abs(pyb[v] - py8[v]).mean()) <= LOSSY_MEAN_INPUT
        assert float(np.abs(xb[v] - x8[v]).mean()) <= LOSSY_MEAN_INPUT
        assert float(np.abs(xb[v] - pyb[v]).max()) <= 0.05
    thr = source.operating_point().threshold
    p8, pb = _py_prob(runner, py8), _py_prob(runner, pyb)
    assert abs(pb - p8) <= LOSSY_PROB and abs(cb["prob"] - c8["prob"]) <= LOSSY_PROB
    assert (pb >= thr) == (p8 >= thr) == (cb["prob"] >= thr) == (c8["prob"] >= thr)
