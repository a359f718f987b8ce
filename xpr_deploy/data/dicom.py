"""Read one mammogram and turn it into the model input: the `xpr-preproc-1` contract.

This module is the DICOM side: open and validate the file (typed one-line errors), decode the
stored values, read laterality and view, and the file / dataset entry points
(`preprocess_with_geometry`, `preprocess_file`, `preprocess_dataset`). The numeric contract itself
(`PreprocessSettings`, `PixelMeta`, `Geometry`, steps 1-9, `preprocess_array`) is in `preproc`,
free of file reading so it can run on a bare array like the C++ runtime; its names are re-exported
here, so `from xpr_deploy.data.dicom import X` works for all of them.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from .errors import (
    BadLaterality,
    BadView,
    DicomError,
    ForProcessing,
    MissingDecoder,
    MissingFile,
    NotDicom,
    TruncatedFile,
    UnsupportedImage,
    WrongModality,
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
from .views import is_view, view_of_code

__all__ = [
    "FOR_PROCESSING_CLASSES",
    "MG_FOR_PRESENTATION",
    "MG_FOR_PROCESSING",
    "PREPROC_VERSION",
    "Geometry",
    "PixelMeta",
    "PreprocessSettings",
    "apply_window",
    "breast_box",
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
    "view_of",
]

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MG_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
#: other SOP classes that are raw detector data
FOR_PROCESSING_CLASSES = {MG_FOR_PROCESSING, "1.2.840.10008.5.1.4.1.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.3.1"}

#: which pip package decodes which transfer syntax (the MissingDecoder message names it)
_DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg (JPEG 2000)",
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg (JPEG 2000)",
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg (HTJ2K)",
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg (HTJ2K)",
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg (HTJ2K)",
    "1.2.840.10008.1.2.4.80": "pylibjpeg-libjpeg (JPEG-LS)",
    "1.2.840.10008.1.2.4.81": "pylibjpeg-libjpeg (JPEG-LS)",
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg (JPEG)",
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg (JPEG)",
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg (JPEG lossless)",
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg (JPEG lossless)",
}


# --------------------------------------------------------------------------- reading


def open_dicom(path: str | Path, *, header_only: bool = False) -> Dataset:
    """Parse a file; missing, non-DICOM and truncated files become typed one-line errors."""
    p = Path(path)
    if not p.exists():
        raise MissingFile(f"{p}: file not found")
    if not p.is_file():
        raise NotDicom(f"{p}: not a file")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(p, stop_before_pixels=header_only)
    except InvalidDicomError:
        raise NotDicom(f"{p}: not a DICOM file") from None
    except (EOFError, OSError) as exc:
        raise TruncatedFile(f"{p}: truncated or unreadable ({exc})") from None
    except Exception as exc:  # pydicom raises many types on garbage (struct.error, ValueError, ...)
        size = p.stat().st_size
        kind = TruncatedFile if size > 132 else NotDicom
        raise kind(f"{p}: cannot parse DICOM ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
    for w in caught:
        text = str(w.message)
        if "End of file reached" in text or "truncat" in text.lower():
            raise TruncatedFile(f"{p}: truncated ({text.splitlines()[0][:120]})")
    if len(ds) == 0 and "TransferSyntaxUID" not in ds.file_meta:
        raise NotDicom(f"{p}: not a DICOM file (empty dataset)")
    return ds


def check_pixels(ds: Dataset, path: str) -> None:
    """Single-frame greyscale with pixel data of the announced size, or a typed error."""
    if "PixelData" not in ds and not header_only_marker(ds):
        raise UnsupportedImage(f"{path}: no pixel data (not an image)")
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    pi = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if spp != 1 or pi not in ("MONOCHROME1", "MONOCHROME2"):
        raise UnsupportedImage(f"{path}: colour image ({pi or '?'}, {spp} samples per pixel); need MONOCHROME1/2")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise UnsupportedImage(f"{path}: multi-frame image ({frames} frames); need a single frame")
    if "PixelData" in ds and not _is_compressed(ds):
        rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
        bits = int(ds.get("BitsAllocated", 16))
        need = rows * cols * bits // 8
        have = len(ds.PixelData)
        if have < need:
            raise TruncatedFile(f"{path}: pixel data is {have} bytes, {rows}x{cols}x{bits} bit needs {need}")


def header_only_marker(ds: Dataset) -> bool:
    """True for a dataset read with stop_before_pixels (pixel data not loaded)."""
    return bool(getattr(ds, "_xpr_header_only", False))


def _is_compressed(ds: Dataset) -> bool:
    ts = getattr(ds.file_meta, "TransferSyntaxUID", None) if hasattr(ds, "file_meta") else None
    return bool(ts is not None and ts.is_compressed)


def check_mg(ds: Dataset, path: str) -> None:
    """MG modality and FOR PRESENTATION intent."""
    modality = str(ds.get("Modality", "")).strip().upper()
    if modality != "MG":
        raise WrongModality(f"{path}: modality {modality or 'missing'}, not MG (mammography)")
    sop = str(ds.get("SOPClassUID", ""))
    intent = str(ds.get("PresentationIntentType", "")).strip().upper()
    if sop in FOR_PROCESSING_CLASSES or intent == "FOR PROCESSING":
        raise ForProcessing(f"{path}: FOR PROCESSING image; use the FOR PRESENTATION image")


def read_image(path: str | Path, *, require_mg: bool = True, header_only: bool = False) -> Dataset:
    """Open and validate a mammogram: greyscale, single frame, MG, FOR PRESENTATION.

    `require_mg=False` skips the MG checks (used for other modalities in tests and by tools).
    `header_only=True` reads no pixel data (fast indexing of big datasets).
    """
    p = str(path)
    ds = open_dicom(path, header_only=header_only)
    if header_only:
        ds._xpr_header_only = True  # type: ignore[attr-defined]
    check_pixels(ds, p)
    if require_mg:
        check_mg(ds, p)
    return ds


def decode_stored(ds: Dataset, path: str = "<dataset>") -> np.ndarray:
    """The stored pixel values as a 2-D integer array (decompressing if needed)."""
    if header_only_marker(ds) or "PixelData" not in ds:
        raise UnsupportedImage(f"{path}: no pixel data loaded")
    ts = ds.file_meta.TransferSyntaxUID if "TransferSyntaxUID" in getattr(ds, "file_meta", {}) else None
    if ts is not None and ts.is_compressed:
        from pydicom.pixels import get_decoder

        try:
            dec = get_decoder(ts)
        except NotImplementedError:
            raise UnsupportedImage(f"{path}: transfer syntax {ts.name} has no decoder in pydicom") from None
        if not dec.is_available:
            pkg = _DECODER_PACKAGES.get(str(ts), "pylibjpeg with the matching plugin, or python-gdcm")
            raise MissingDecoder(f"{path}: {ts.name} needs a decoder: pip install {pkg}")
    try:
        arr = ds.pixel_array
    except ValueError as exc:
        msg = str(exc).splitlines()[0]
        if "less than expected" in msg or "truncat" in msg.lower():
            raise TruncatedFile(f"{path}: pixel data truncated ({msg[:120]})") from None
        raise DicomError(f"{path}: cannot decode pixel data ({msg[:160]})") from None
    except Exception as exc:
        raise DicomError(f"{path}: cannot decode pixel data ({type(exc).__name__}: {str(exc)[:160]})") from None
    if arr.ndim != 2:
        raise UnsupportedImage(f"{path}: decoded pixel array has shape {arr.shape}, need 2-D")
    return arr


def laterality_of(ds: Dataset, path: str = "<dataset>") -> str:
    """'L' or 'R' from ImageLaterality, else Laterality; missing or contradictory is an error."""
    il = str(ds.get("ImageLaterality", "") or "").strip().upper()
    sl = str(ds.get("Laterality", "") or "").strip().upper()
    if il and sl and il != sl:
        raise BadLaterality(f"{path}: ImageLaterality {il} contradicts Laterality {sl}")
    lat = il or sl
    if lat not in ("L", "R"):
        raise BadLaterality(f"{path}: laterality {lat or 'missing'} (need L or R)")
    return lat


def view_of(ds: Dataset, path: str = "<dataset>") -> str:
    """'CC' or 'MLO' from ViewPosition, else ViewCodeSequence; other views are BadView."""
    vp = str(ds.get("ViewPosition", "") or "").strip().upper()
    code_view = ""
    seq = ds.get("ViewCodeSequence")
    if seq:
        item = seq[0]
        code_view = view_of_code(item.get("CodeValue", ""), item.get("CodeMeaning", ""))
        if not code_view and not vp:
            raise BadView(f"{path}: view {item.get('CodeMeaning', '?')!s} is not CC or MLO")
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
        check_pixels(ds, path)
        if require_mg:
            check_mg(ds, path)
    else:
        path = str(src)
        ds = read_image(src, require_mg=require_mg)
    stored = decode_stored(ds, path)
    meta = PixelMeta.from_dataset(ds, path)
    return preprocess_array(stored, meta, settings, path)


def preprocess_file(path: str | Path, settings: PreprocessSettings) -> np.ndarray:
    """The float32 [H, W] model input of one mammogram file."""
    return preprocess_with_geometry(path, settings)[0]


def preprocess_dataset(ds: Dataset, settings: PreprocessSettings) -> np.ndarray:
    """The float32 [H, W] model input of an already-read pydicom Dataset."""
    return preprocess_with_geometry(ds, settings)[0]
