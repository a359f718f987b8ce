"""Every header value the pipeline reads, parsed and validated in one place.

pydicom converts values lazily and forgivingly: an invalid DS comes back as a str, an unknown VR
raises NotImplementedError on first access, a multi-valued US is a list, a NaN DS is a float.
Here each attribute is read once into the type the contract needs; anything else is an
`InvalidValue` naming the attribute, or, where a fallback is standard, a named warning kept on the
dataset (`warnings_of`): never a silent default. `preproc.PixelMeta` (and so the C++ runtime's
contract) only ever sees checked, finite numbers. Nothing here reads files.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from .budget import Budget, default_budget
from .codestream import stream_size
from .errors import InvalidValue, MissingDecoder, UnsupportedImage, UnsupportedTransferSyntax
from .preproc import PixelMeta

#: mammography SOP classes (the selection and the reader decide on them)
MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MG_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
#: other SOP classes that are raw detector data
FOR_PROCESSING_CLASSES = {MG_FOR_PROCESSING, "1.2.840.10008.5.1.4.1.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.3.1"}

__all__ = [
    "DECODER_PACKAGES",
    "READ_KEYWORDS",
    "ImageHeader",
    "add_warning",
    "check_decoder",
    "declared_size",
    "float_value",
    "int_value",
    "one_line",
    "parse_header",
    "pixel_meta",
    "printable",
    "tag_of",
    "text_value",
    "warnings_of",
]

#: attributes the pipeline reads (an unreadable one is an error; any other unreadable one is dropped with a warning)
READ_KEYWORDS = frozenset(
    {
        "SOPClassUID",
        "SOPInstanceUID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "PatientID",
        "Modality",
        "PresentationIntentType",
        "ImageLaterality",
        "Laterality",
        "ViewPosition",
        "ViewCodeSequence",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "Rows",
        "Columns",
        "NumberOfFrames",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "PixelPaddingValue",
        "PixelPaddingRangeLimit",
        "WindowCenter",
        "WindowWidth",
        "VOILUTFunction",
        "RescaleSlope",
        "RescaleIntercept",
        "ModalityLUTSequence",
        "SpecificCharacterSet",
    }
)

#: which pip package decodes which transfer syntax (the MissingDecoder message names it); the
#: transfer syntaxes xpr reads are the native ones, deflated, and these (README, "Transfer syntaxes")
DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg (JPEG)",
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg (JPEG)",
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg (JPEG lossless)",
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg (JPEG lossless)",
    "1.2.840.10008.1.2.4.80": "pyjpegls or pylibjpeg-libjpeg (JPEG-LS)",
    "1.2.840.10008.1.2.4.81": "pyjpegls or pylibjpeg-libjpeg (JPEG-LS)",
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg (JPEG 2000)",
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg (JPEG 2000)",
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg (HTJ2K)",
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg (HTJ2K)",
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg (HTJ2K)",
    "1.2.840.10008.1.2.5": "pydicom (RLE: built in)",
}

_WARNINGS = "_xpr_warnings"
_COLOUR = {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "PALETTE COLOR", "ARGB", "CMYK"}
_MONO = ("MONOCHROME1", "MONOCHROME2")


# --------------------------------------------------------------------------- messages


def printable(value: object, limit: int = 64) -> str:
    """A value for a one-line message: control characters as '?', long values cut."""
    if isinstance(value, bytes):
        text = repr(value[:limit])
    elif isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        text = "\\".join(str(v) for v in value)  # type: ignore[attr-defined]
    else:
        text = str(value)
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


#: a Code String (CS) value, upper-cased: PS3.5 6.2 allows A-Z, 0-9, space and underscore, 16 characters
_CODE_STRING = re.compile(r"[A-Z0-9 _]{0,16}")


def is_code_string(value: str) -> bool:
    """Whether `value` (upper-cased) can be a CS value; a damaged header's run-on bytes cannot."""
    return _CODE_STRING.fullmatch(value) is not None


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception (a decoder's multi-line report, pydicom's plugin list) as one short line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if lines and lines[0].startswith("Unable to decode as exceptions were raised"):
        lines = lines[1:]  # pydicom's header over one line per plugin
    text = "; ".join(lines) or type(exc).__name__
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", text)  # object addresses: not reproducible
    return printable(text, limit)


def tag_of(keyword: str) -> str:
    from pydicom.datadict import tag_for_keyword

    t = tag_for_keyword(keyword)
    return f"({t >> 16:04X},{t & 0xFFFF:04X})" if t is not None else ""


def _invalid(path: str, keyword: str, why: str) -> InvalidValue:
    return InvalidValue(f"{path}: invalid value of {keyword} {tag_of(keyword)}: {why}")


def _missing(path: str, keyword: str) -> InvalidValue:
    return InvalidValue(f"{path}: missing {keyword} {tag_of(keyword)} (required)")


def add_warning(ds: Dataset, text: str) -> None:
    """Record a named warning on the dataset (a value that was unusable but has a standard fallback)."""
    found = ds.__dict__.setdefault(_WARNINGS, [])
    if text not in found:
        found.append(text)


def warnings_of(ds: Dataset) -> list[str]:
    """The named warnings recorded while reading and parsing this dataset."""
    return list(ds.__dict__.get(_WARNINGS, []))


# --------------------------------------------------------------------------- typed values


def _raw(ds: Dataset, keyword: str, path: str) -> Any:
    """The converted value, None when absent; a failed conversion (unknown VR, ...) names the attribute."""
    if keyword not in ds:
        return None
    try:
        return ds[keyword].value
    except Exception as exc:  # pydicom raises NotImplementedError, ValueError, ... on hostile bytes
        raise _invalid(path, keyword, one_line(exc)) from None


def _empty(v: Any) -> bool:
    return (
        v is None
        or (isinstance(v, (str, bytes, list)) and len(v) == 0)
        or (type(v).__name__ == "MultiValue" and len(v) == 0)
    )


def _single(v: Any, path: str, keyword: str, *, first: bool = False) -> Any:
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        if len(v) != 1 and not first:
            raise _invalid(path, keyword, f"{printable(v)!r} (need one value, got {len(v)})")
        return v[0]
    return v


def int_value(
    ds: Dataset,
    keyword: str,
    path: str,
    *,
    required: bool = False,
    default: int | None = None,
    lo: int | None = None,
    hi: int | None = None,
) -> int | None:
    """An integer attribute (US, SS, IS), or `default` when absent; an empty one warns."""
    v = _raw(ds, keyword, path)
    if _empty(v):
        if required:
            raise _missing(path, keyword) if v is None else _invalid(path, keyword, "empty (required)")
        if v is not None and default is not None:
            add_warning(ds, f"{keyword} {tag_of(keyword)} is empty: taken as {default}")
        return default
    v = _single(v, path, keyword)
    if isinstance(v, (bool, bytes)):
        raise _invalid(path, keyword, f"{printable(v)} (not an integer)")
    if isinstance(v, int) or (isinstance(v, float) and math.isfinite(v) and v.is_integer()):
        n = int(v)
    else:
        try:
            n = int(str(v).strip())
        except ValueError:
            raise _invalid(path, keyword, f"{printable(v)!r} (not an integer)") from None
    if (lo is not None and n < lo) or (hi is not None and n > hi):
        want = f"{lo}..{hi}" if lo is not None and hi is not None else f">= {lo}" if lo is not None else f"<= {hi}"
        raise _invalid(path, keyword, f"{n} (need {want})")
    return n


def float_value(
    ds: Dataset, keyword: str, path: str, *, default: float | None = None, first: bool = False
) -> float | None:
    """A finite decimal attribute (DS), or `default` when absent; `first`: the first of several values."""
    v = _raw(ds, keyword, path)
    if _empty(v):
        if v is not None and default is not None:
            add_warning(ds, f"{keyword} {tag_of(keyword)} is empty: taken as {default:g}")
        return default
    v = _single(v, path, keyword, first=first)
    if isinstance(v, (bool, bytes)):
        raise _invalid(path, keyword, f"{printable(v)} (not a number)")
    try:
        x = float(v if isinstance(v, (int, float)) else str(v).strip())
    except (TypeError, ValueError):
        raise _invalid(path, keyword, f"{printable(v)!r} (not a decimal string)") from None
    if not math.isfinite(x):
        raise _invalid(path, keyword, f"{x} (not a finite number)")
    return x


def text_value(ds: Dataset, keyword: str, path: str) -> str:
    """A code or text attribute, "" when absent or empty; several values joined by a backslash."""
    v = _raw(ds, keyword, path)
    if _empty(v):
        return ""
    if isinstance(v, bytes):
        raise _invalid(path, keyword, f"{printable(v)} (binary, not text)")
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        return "\\".join(str(x) for x in v).strip()
    return str(v).strip()


# --------------------------------------------------------------------------- the image header


@dataclass(frozen=True)
class ImageHeader:
    """The checked Image Pixel values of one file and what the contract needs (`meta`)."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    frames: int
    transfer_syntax: str
    compressed: bool
    pixel_bytes: int | None  # native PixelData length in the file (None: encapsulated)
    meta: PixelMeta

    @property
    def expected_bytes(self) -> int:
        """Rows * Columns * SamplesPerPixel * NumberOfFrames * BitsAllocated / 8."""
        return self.rows * self.columns * self.samples_per_pixel * self.frames * self.bits_allocated // 8


def _pixel_element(ds: Dataset) -> Any:
    return ds.get_item(0x7FE00010, keep_deferred=True)


def _pixel_length(ds: Dataset) -> tuple[int | None, bool]:
    """(native length in bytes or None, encapsulated?) without loading deferred pixel data."""
    el = _pixel_element(ds)
    undefined = bool(getattr(el, "is_undefined_length", False)) or getattr(el, "length", 0) == 0xFFFFFFFF
    value = el.value
    if undefined:
        return None, True
    if isinstance(value, (bytes, bytearray)):
        return len(value), False
    return int(getattr(el, "length", 0) or 0), False  # deferred (header-only read) or empty


def _transfer_syntax(ds: Dataset, path: str) -> Any:
    from pydicom.uid import UID

    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts is None or not str(ts).strip():
        raise InvalidValue(f"{path}: missing TransferSyntaxUID (0002,0010) in the file meta information")
    text = str(ts).strip()
    if not re.fullmatch(r"[0-9.]{1,64}", text) or not UID(text).is_transfer_syntax:
        raise UnsupportedTransferSyntax(f"{path}: transfer syntax {printable(text)!r} is not supported: unknown UID")
    return UID(text)


def check_decoder(uid: Any, path: str) -> None:
    """A compressed transfer syntax needs a pydicom decoder with an installed plugin; one that has
    none (JPEG 2000 Part 2, retired JPEG processes, MPEG, JPIP, ...) is named, UID and all."""
    from pydicom.pixels import get_decoder

    try:
        dec = get_decoder(uid)
    except NotImplementedError:
        raise UnsupportedTransferSyntax(
            f"{path}: transfer syntax {uid.name} ({uid}) is not supported: no decoder in pydicom"
        ) from None
    if not dec.is_available:
        pkg = DECODER_PACKAGES.get(str(uid), "pylibjpeg with the matching plugin, or python-gdcm")
        raise MissingDecoder(f"{path}: transfer syntax {uid.name} ({uid}) needs a decoder: pip install {pkg}")


def declared_size(ds: Dataset, path: str) -> tuple[int, int, int, int] | None:
    """(Rows, Columns, SamplesPerPixel, NumberOfFrames) as the header declares them, for the
    resource budget before anything decodes; None when it has no pixel data or an unreadable value
    (the checks that follow name that one)."""
    if "PixelData" not in ds:
        return None
    try:
        rows, cols, spp, frames = (
            int_value(ds, k, path) for k in ("Rows", "Columns", "SamplesPerPixel", "NumberOfFrames")
        )
    except InvalidValue:
        return None
    return max(rows or 0, 0), max(cols or 0, 0), max(spp or 1, 1), max(frames or 1, 1)


def parse_header(ds: Dataset, path: str, *, budget: Budget | None = None) -> ImageHeader:
    """Check the Image Pixel module and the pixel data length against it (no decoding).

    Greyscale, one frame, a known transfer syntax with a decoder, and native pixel data exactly as
    long as Rows x Columns x BitsAllocated / 8 (a shorter one is truncated, a longer one means a
    wrong header value): what `train` and `predict` would otherwise find only when decoding.
    First of all, the pixels and frames it declares are within `budget` (default:
    `default_budget()`), so no decoder is asked to allocate more, even for a dataset that came
    from memory rather than a file.
    """
    from .errors import TruncatedFile

    if "PixelData" not in ds:
        raise UnsupportedImage(f"{path}: no pixel data (not an image)")
    size = declared_size(ds, path)
    if size is not None:
        (budget or default_budget()).check_image(path, *size)
    spp = int_value(ds, "SamplesPerPixel", path, required=True, lo=1, hi=4)
    pi = text_value(ds, "PhotometricInterpretation", path)  # CS: upper case, as the decoders require
    assert spp is not None
    if spp == 3 or pi.upper() in _COLOUR:
        what = f"{printable(pi) or '?'}, {spp} samples per pixel"
        raise UnsupportedImage(f"{path}: colour image ({what}); need MONOCHROME1/2")
    if spp != 1:
        raise _invalid(path, "SamplesPerPixel", f"{spp} (need 1 for a greyscale image)")
    if not pi:
        raise _missing(path, "PhotometricInterpretation")
    if pi not in _MONO:
        raise _invalid(path, "PhotometricInterpretation", f"{printable(pi)!r} (need MONOCHROME1 or MONOCHROME2)")
    frames = int_value(ds, "NumberOfFrames", path, default=1, lo=1)
    assert frames is not None
    if frames != 1:
        raise UnsupportedImage(f"{path}: multi-frame image ({frames} frames); need a single frame")
    rows = int_value(ds, "Rows", path, required=True, lo=1, hi=65535)
    cols = int_value(ds, "Columns", path, required=True, lo=1, hi=65535)
    bits = int_value(ds, "BitsAllocated", path, required=True)
    if bits not in (8, 16, 32):
        raise _invalid(path, "BitsAllocated", f"{bits} (need 8, 16 or 32)")
    stored = int_value(ds, "BitsStored", path, required=True, lo=1, hi=bits)
    rep = int_value(ds, "PixelRepresentation", path, required=True, lo=0, hi=1)
    assert rows is not None and cols is not None and stored is not None and rep is not None
    high = int_value(ds, "HighBit", path)
    if high is not None and high != stored - 1:
        raise _invalid(path, "HighBit", f"{high} with BitsStored {stored} (need BitsStored - 1)")
    uid = _transfer_syntax(ds, path)
    have, encapsulated = _pixel_length(ds)
    if uid.is_compressed:
        check_decoder(uid, path)
        if not encapsulated:
            raise InvalidValue(f"{path}: PixelData (7FE0,0010) is not encapsulated, but {uid.name} is compressed")
        _check_stream_size(ds, path, rows, cols)
    elif encapsulated:
        raise InvalidValue(f"{path}: PixelData (7FE0,0010) is encapsulated, but {uid.name} is not compressed")
    header = ImageHeader(rows, cols, spp, bits, stored, rep, frames, str(uid), bool(uid.is_compressed), have,
                         pixel_meta(ds, path, photometric=pi))  # fmt: skip
    if have is not None:
        need = header.expected_bytes
        shape = f"{rows}x{cols}x{bits} bit"
        if have < need:
            raise TruncatedFile(f"{path}: truncated pixel data: {have} bytes, {shape} needs {need}")
        if have > need + 1:
            raise InvalidValue(
                f"{path}: PixelData (7FE0,0010) is {have} bytes but {shape} needs {need}: "
                "Rows, Columns or BitsAllocated is wrong"
            )
    return header


def _first_fragment(ds: Dataset) -> bytes | None:
    """The first fragment of encapsulated pixel data that is in memory (None: deferred or unreadable)."""
    from pydicom.encaps import generate_fragments

    value = _pixel_element(ds).value
    if not isinstance(value, (bytes, bytearray)):
        return None
    try:
        items = generate_fragments(bytes(value[: 1 << 20]))
        next(items)  # the Basic Offset Table
        return next(items, None)
    except Exception:  # a broken item structure: the decoder names it
        return None


def _check_stream_size(ds: Dataset, path: str, rows: int, cols: int) -> None:
    """A compressed stream that declares another size than Rows x Columns is refused before its
    decoder allocates what the stream says (a size bomb), not after."""
    frag = _first_fragment(ds)
    found = stream_size(frag) if frag else None
    if found is None:
        return
    kind, r, c = found
    if (r and r != rows) or (c and c != cols):
        raise InvalidValue(
            f"{path}: PixelData (7FE0,0010): the {kind} stream declares {r}x{c} pixels, the header {rows}x{cols}: "
            "not decoded"
        )


def pixel_meta(ds: Dataset, path: str = "<dataset>", *, photometric: str | None = None) -> PixelMeta:
    """The tags of the `xpr-preproc-1` contract, checked: finite rescale, a usable window or none."""
    if "ModalityLUTSequence" in ds:
        raise UnsupportedImage(f"{path}: Modality LUT Sequence is not supported (xpr-preproc-1)")
    pi = photometric if photometric is not None else text_value(ds, "PhotometricInterpretation", path).upper()
    slope = float_value(ds, "RescaleSlope", path, default=1.0)
    intercept = float_value(ds, "RescaleIntercept", path, default=0.0)
    assert slope is not None and intercept is not None
    if slope == 0.0:
        raise _invalid(path, "RescaleSlope", "0 (every pixel would be the intercept)")
    wc = float_value(ds, "WindowCenter", path, first=True)
    ww = float_value(ds, "WindowWidth", path, first=True)
    if (wc is None) != (ww is None):
        have, lack = ("WindowCenter", "WindowWidth") if ww is None else ("WindowWidth", "WindowCenter")
        add_warning(ds, f"{have} without {lack}: window ignored, the image is scaled to its min..max")
        wc = ww = None
    fn = text_value(ds, "VOILUTFunction", path).upper() or "LINEAR"
    if fn not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        raise UnsupportedImage(f"{path}: VOI LUT Function {printable(fn)!r} is not supported")
    if ww is not None and (ww < 1 if fn == "LINEAR" else ww <= 0):
        raise _invalid(path, "WindowWidth", f"{ww:g} (need {'>= 1' if fn == 'LINEAR' else '> 0'} for {fn})")
    pv = int_value(ds, "PixelPaddingValue", path)
    pl = int_value(ds, "PixelPaddingRangeLimit", path)
    if pl is not None and pv is None:
        add_warning(ds, "PixelPaddingRangeLimit without PixelPaddingValue: no padding")
    return PixelMeta(
        photometric=pi,
        slope=slope,
        intercept=intercept,
        window_center=wc,
        window_width=ww,
        voi_function=fn,
        padding_value=pv,
        padding_limit=None if pv is None else pl,
    )
