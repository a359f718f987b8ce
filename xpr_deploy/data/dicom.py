"""Read one mammogram and turn it into the model input: the `xpr-preproc-1` contract.

This module is the DICOM side: open the file and check its structure (typed one-line errors;
truncation is found from element offsets, not left to pydicom's forgiving reader: `structure`), decode
the stored values with the decoders' noise captured, read laterality and view, and the file / dataset
entry points
(`preprocess_with_geometry`, `preprocess_file`, `preprocess_dataset`). The numeric contract itself
(`PreprocessSettings`, `PixelMeta`, `Geometry`, steps 1-9, `preprocess_array`) is in `preproc`,
free of file reading so it can run on a bare array like the C++ runtime; its names are re-exported
here, so `from xpr_deploy.data.dicom import X` works for all of them. Header values are parsed and
checked in `header`.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.uid import UID

from .budget import Budget, default_budget
from .errors import (
    BadLaterality,
    BadView,
    DecodeError,
    DicomError,
    ForProcessing,
    InvalidValue,
    MissingFile,
    NotDicom,
    TruncatedFile,
    UnsupportedImage,
    WrongModality,
)
from .header import (
    DECODER_PACKAGES,
    FOR_PROCESSING_CLASSES,
    MG_FOR_PRESENTATION,
    MG_FOR_PROCESSING,
    READ_KEYWORDS,
    ImageHeader,
    add_warning,
    declared_size,
    one_line,
    parse_header,
    printable,
    text_value,
    warnings_of,
)
from .preproc import (
    PREPROC_VERSION,
    Geometry,
    PixelMeta,
    PreprocessSettings,
    apply_window,
    breast_box,
    needs_flip,
    padding_mask,
    preprocess_array,
    resize_bilinear_aa,
    to_display,
)
from .structure import DEFLATED, PIXEL_DATA, Inflation, check_inflation, check_structure, element_name
from .views import is_view, view_of_code
from .walk import kind_of

__all__ = [
    "CHECK_SETTINGS",
    "FOR_PROCESSING_CLASSES",
    "MG_FOR_PRESENTATION",
    "MG_FOR_PROCESSING",
    "PREPROC_VERSION",
    "Geometry",
    "ImageHeader",
    "PixelMeta",
    "PreprocessSettings",
    "apply_window",
    "breast_box",
    "check_file",
    "check_mg",
    "check_pixels",
    "decode_stored",
    "header_only_marker",
    "laterality_of",
    "needs_flip",
    "open_dicom",
    "padding_mask",
    "preprocess_array",
    "preprocess_dataset",
    "preprocess_file",
    "preprocess_with_geometry",
    "read_image",
    "resize_bilinear_aa",
    "to_display",
    "verify_image",
    "view_of",
    "warnings_of",
]


#: which pip package decodes which transfer syntax (kept under its old name too)
_DECODER_PACKAGES = DECODER_PACKAGES
#: values longer than this are not loaded by a header-only read (pixel data: its length is still known)
_DEFER_BYTES = 64 * 1024
#: what `--decode` checks run the contract at: only rejections matter, not the output size
CHECK_SETTINGS = PreprocessSettings(img_size=(64, 32))


# --------------------------------------------------------------------------- reading


@contextmanager
def _quiet() -> Iterator[list[warnings.WarningMessage]]:
    """pydicom's and the decoders' noise (warnings, log records) captured instead of printed; the
    list it gives fills as warnings arrive (pydicom reports a truncated file only as a warning)."""
    logger = logging.getLogger("pydicom")  # its children (the decoders) log through it: stop there
    was = logger.disabled, logger.propagate
    logger.disabled, logger.propagate = True, False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    finally:
        logger.disabled, logger.propagate = was


@contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """File descriptor 2 captured while a C decoder runs (main thread only: fd 2 is process-wide)."""
    out: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield out
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield out
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.extend(ln for ln in tmp.read(4096).decode("utf-8", "replace").splitlines() if ln.strip())


def _convert_all(ds: Dataset, path: str) -> None:
    """Convert every value now, inside the capture: one that pydicom cannot convert (unknown VR,
    broken sequence) is an error if the pipeline reads it, else dropped with a named warning."""
    for tag in list(ds.keys()):
        if int(tag) == PIXEL_DATA:
            continue
        raw = ds.get_item(tag, keep_deferred=True)
        if getattr(raw, "value", b"") is None and getattr(raw, "length", 0) not in (0, None):
            continue  # deferred (a big value of a header-only read): not needed
        try:
            el = ds[tag]
            if el.VR == "SQ":
                for item in el.value:
                    _convert_all_strict(item)
        except Exception as exc:  # pydicom raises many types on hostile bytes
            name = element_name(int(tag))
            kw = keyword_for_tag(tag)
            if kw in READ_KEYWORDS:
                raise InvalidValue(f"{path}: invalid value of {name}: {one_line(exc)}") from None
            del ds[tag]
            add_warning(ds, f"{name} unreadable ({one_line(exc, 120)}): ignored")


def _convert_meta(ds: Dataset, path: str) -> None:
    """The file meta's values converted inside the capture too (a hostile TransferSyntaxUID warns on access)."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        return
    for tag in list(meta.keys()):
        try:
            meta[tag]
        except Exception as exc:  # as in _convert_all
            raise InvalidValue(f"{path}: invalid value of {element_name(int(tag))}: {one_line(exc)}") from None


def _convert_all_strict(ds: Dataset) -> None:
    for tag in list(ds.keys()):
        el = ds[tag]
        if el.VR == "SQ":
            for item in el.value:
                _convert_all_strict(item)


def _nonblocking(path: str, flags: int) -> int:
    # a FIFO swapped in after the stat must not block the open
    return os.open(path, flags | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))


def check_file(path: str | Path, budget: Budget | None = None) -> os.stat_result:
    """A regular file within the budget's size, from `stat` alone (nothing opened): a FIFO, device,
    socket or dangling link is NotDicom / MissingFile, a file too big OverBudget. Call it before
    anything else opens a file from outside (hashing it, say)."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        if os.path.islink(p):
            raise MissingFile(f"{p}: dangling symbolic link (its target does not exist)") from None
        raise MissingFile(f"{p}: file not found") from None
    except OSError as exc:
        raise DicomError(f"{p}: cannot read ({exc.strerror or type(exc).__name__})") from None
    if not stat.S_ISREG(st.st_mode):
        raise NotDicom(f"{p}: not a file ({kind_of(st.st_mode)}): not opened")
    (budget or default_budget()).check_file_size(p, st.st_size)
    return st


def open_dicom(path: str | Path, *, header_only: bool = False, budget: Budget | None = None) -> Dataset:
    """Parse a file; missing, non-DICOM, truncated and unreadable files become typed one-line errors.

    `header_only` does not load big values (pixel data), but still sees where they lie, so a short
    or missing PixelData is found without reading it. Every other value is converted here, with
    pydicom's warnings captured, so nothing later raises or prints on first access.
    Before anything is read the file is stat'ed: a FIFO, a device, a socket or a dangling link is
    refused without being opened, and a file over the `budget` (default: `default_budget()`,
    the XPR_MAX_* variables) is refused before it is read, as is an image whose header declares
    more pixels or frames than the budget, before anything decodes it.
    """
    p = Path(path)
    budget = budget or default_budget()
    check_file(p, budget)
    try:
        f = open(p, "rb", opener=_nonblocking)  # noqa: SIM115 (closed below, after pydicom read it)
    except OSError as exc:
        raise DicomError(f"{p}: cannot read ({exc.strerror or type(exc).__name__})") from None
    with f:
        try:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise NotDicom(f"{p}: not a file ({kind_of(st.st_mode)}): not read")
            size = st.st_size
            budget.check_file_size(p, size)
            head = f.read(132)
            inflation = check_inflation(f, p, budget) if DEFLATED in head + f.read(8192) else None
            f.seek(0)
        except OSError as exc:
            raise DicomError(f"{p}: cannot read ({exc.strerror or type(exc).__name__})") from None
        return _parse(f, p, size, head, header_only, budget, inflation)


def _parse(
    f: BinaryIO, p: Path, size: int, head: bytes, header_only: bool, budget: Budget, inflation: Inflation | None
) -> Dataset:
    dicm = len(head) == 132 and head[128:132] == b"DICM"
    with _quiet() as noise:
        try:
            ds = pydicom.dcmread(f, defer_size=_DEFER_BYTES if header_only else None)
        except InvalidDicomError:
            raise NotDicom(f"{p}: not a DICOM file") from None
        except EOFError as exc:
            raise TruncatedFile(f"{p}: truncated ({one_line(exc, 120)})") from None
        except OSError as exc:
            raise DicomError(f"{p}: cannot read ({exc.strerror or one_line(exc, 120)})") from None
        except Exception as exc:  # pydicom raises many types on garbage (struct.error, ValueError, ...)
            kind = TruncatedFile if dicm or size > 132 else NotDicom
            raise kind(f"{p}: cannot parse DICOM ({type(exc).__name__}: {one_line(exc, 120)})") from None
        for w in noise:
            text = str(w.message)
            if "End of file reached" in text or "truncat" in text.lower():
                raise TruncatedFile(f"{p}: truncated ({printable(text.splitlines()[0], 120)})")
        if len(ds) == 0:
            if dicm:
                raise TruncatedFile(f"{p}: truncated: nothing after the file meta information ({size} bytes)")
            raise NotDicom(f"{p}: not a DICOM file (empty dataset)")
        check_structure(ds, p, size, inflation)
        _convert_meta(ds, str(p))
        _convert_all(ds, str(p))
        _check_budget(ds, str(p), budget)
    if header_only:
        ds.__dict__["_xpr_header_only"] = True
    return ds


def _check_budget(ds: Dataset, path: str, budget: Budget) -> None:
    """The pixels and frames the header declares, against the budget (an unreadable value is left
    to `parse_header`, which names it)."""
    size = declared_size(ds, path)
    if size is not None:
        budget.check_image(path, *size)


def check_pixels(ds: Dataset, path: str, *, budget: Budget | None = None) -> ImageHeader:
    """Single-frame greyscale, every Image Pixel value valid, pixel data of the announced size,
    within the budget (default: `default_budget()`)."""
    return parse_header(ds, path, budget=budget)


def header_only_marker(ds: Dataset) -> bool:
    """True for a dataset read with `header_only` (pixel data not loaded)."""
    return bool(ds.__dict__.get("_xpr_header_only", False))


def check_mg(ds: Dataset, path: str) -> None:
    """MG modality and FOR PRESENTATION intent."""
    modality = text_value(ds, "Modality", path).upper()
    if modality != "MG":
        raise WrongModality(f"{path}: modality {printable(modality) or 'missing'}, not MG (mammography)")
    sop = text_value(ds, "SOPClassUID", path)
    intent = text_value(ds, "PresentationIntentType", path).upper()
    if sop in FOR_PROCESSING_CLASSES or intent == "FOR PROCESSING":
        raise ForProcessing(f"{path}: FOR PROCESSING image; use the FOR PRESENTATION image")


def read_image(
    path: str | Path, *, require_mg: bool = True, header_only: bool = False, budget: Budget | None = None
) -> Dataset:
    """Open and validate a mammogram: greyscale, single frame, MG, FOR PRESENTATION.

    `require_mg=False` skips the MG checks (used for other modalities in tests and by tools).
    `header_only=True` reads no pixel data (fast indexing of big datasets) but checks its length.
    `budget` (default: `default_budget()`, the XPR_MAX_* variables) bounds the file and its pixels.
    """
    p = str(path)
    budget = budget or default_budget()
    ds = open_dicom(path, header_only=header_only, budget=budget)
    check_pixels(ds, p, budget=budget)
    if require_mg:
        check_mg(ds, p)
    return ds


def verify_image(path: str | Path, *, decode: bool = False) -> Dataset:
    """What dataset indexing checks per file: the header (no pixels), and with `decode` the whole
    contract on the pixels (what `train` and `predict` would do), so a file that passes is usable."""
    ds = read_image(path, header_only=True)
    if decode:
        preprocess_with_geometry(path, CHECK_SETTINGS)
    return ds


def decode_stored(ds: Dataset, path: str = "<dataset>") -> np.ndarray:
    """The stored pixel values as a 2-D integer array (decompressing if needed); decoder failures
    are one line, and the decoders' own warnings and stderr output are captured, not printed."""
    if header_only_marker(ds) or "PixelData" not in ds:
        raise UnsupportedImage(f"{path}: no pixel data loaded")
    return _decode(ds, path, parse_header(ds, path))


def _decode(ds: Dataset, path: str, header: ImageHeader) -> np.ndarray:
    if header_only_marker(ds):
        raise UnsupportedImage(f"{path}: no pixel data loaded")
    uid = UID(header.transfer_syntax)
    try:
        with _quiet(), _captured_stderr() as err:
            arr = ds.pixel_array
    except Exception as exc:  # decoders raise RuntimeError, ValueError, struct.error, ... on corrupt streams
        msg = one_line(exc)
        if "less than expected" in msg or "truncat" in msg.lower() or "end of file" in msg.lower():
            raise TruncatedFile(f"{path}: truncated pixel data ({msg})") from None
        extra = f" [{printable(err[0], 80)}]" if err else ""
        raise DecodeError(f"{path}: cannot decode {uid.name} pixel data: {msg}{extra}") from None
    if arr.ndim != 2:
        raise UnsupportedImage(f"{path}: decoded pixel array has shape {arr.shape}, need 2-D")
    if arr.shape != (header.rows, header.columns):
        got = f"{arr.shape[0]}x{arr.shape[1]}"
        raise DecodeError(f"{path}: decoded {got} pixels, the header says {header.rows}x{header.columns}")
    return arr


def laterality_of(ds: Dataset, path: str = "<dataset>") -> str:
    """'L' or 'R' from ImageLaterality, else Laterality; missing or contradictory is an error."""
    il = printable(text_value(ds, "ImageLaterality", path).upper())
    sl = printable(text_value(ds, "Laterality", path).upper())
    if il and sl and il != sl:
        raise BadLaterality(f"{path}: ImageLaterality {il} contradicts Laterality {sl}")
    lat = il or sl
    if lat not in ("L", "R"):
        raise BadLaterality(f"{path}: laterality {lat or 'missing'} (need L or R)")
    return lat


def view_of(ds: Dataset, path: str = "<dataset>") -> str:
    """'CC' or 'MLO' from ViewPosition, else ViewCodeSequence; other views are BadView."""
    vp = printable(text_value(ds, "ViewPosition", path).upper())
    code_view = ""
    seq = ds["ViewCodeSequence"].value if "ViewCodeSequence" in ds else None
    if seq is not None and not isinstance(seq, Sequence):
        raise InvalidValue(
            f"{path}: invalid value of ViewCodeSequence (0054,0220): VR {ds['ViewCodeSequence'].VR}, not SQ"
        )
    if seq:
        item = seq[0]
        meaning = printable(text_value(item, "CodeMeaning", f"{path}: ViewCodeSequence"))
        code_view = view_of_code(text_value(item, "CodeValue", f"{path}: ViewCodeSequence"), meaning)
        if not code_view and not vp:
            raise BadView(f"{path}: view {meaning or '?'} is not CC or MLO")
    if vp and code_view and vp != code_view:
        raise BadView(f"{path}: ViewPosition {vp} contradicts ViewCodeSequence {code_view}")
    view = vp or code_view
    if not view:
        raise BadView(f"{path}: view missing (no ViewPosition or ViewCodeSequence)")
    if not is_view(view):
        raise BadView(f"{path}: view {view} is not CC or MLO")
    return view


# --------------------------------------------------------------------------- file / dataset to model input


def preprocess_with_geometry(
    src: str | Path | Dataset, settings: PreprocessSettings, *, require_mg: bool = True
) -> tuple[np.ndarray, Geometry]:
    """A path or a pydicom Dataset to (float32 [H, W] model input, Geometry)."""
    if isinstance(src, Dataset):
        path = str(getattr(src, "filename", None) or "<dataset>")
        ds = src
        if require_mg:
            check_mg(ds, path)
    else:
        path = str(src)
        ds = read_image(src, require_mg=require_mg)
    header = parse_header(ds, path)
    stored = _decode(ds, path, header)
    return preprocess_array(stored, header.meta, settings, path)


def preprocess_file(path: str | Path, settings: PreprocessSettings) -> np.ndarray:
    """The float32 [H, W] model input of one mammogram file."""
    return preprocess_with_geometry(path, settings)[0]


def preprocess_dataset(ds: Dataset, settings: PreprocessSettings) -> np.ndarray:
    """The float32 [H, W] model input of an already-read pydicom Dataset."""
    return preprocess_with_geometry(ds, settings)[0]
