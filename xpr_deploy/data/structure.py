"""Is the file whole? Truncation and deflate checks made on the parsed element offsets, before any value
is converted: a cut file is called truncated with the element it cuts, and a deflated dataset (a zip bomb
inflates a thousandfold) is measured in bounded steps before pydicom inflates it whole."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from .budget import ENV, Budget, OverBudget
from .errors import TruncatedFile
from .header import one_line

PIXEL_DATA = 0x7FE00010
#: the Deflated Explicit VR Little Endian transfer syntax (the whole dataset is zlib-compressed)
DEFLATED = b"1.2.840.10008.1.2.1.99"


def looks_like_image(ds: Dataset) -> bool:
    """Whether a dataset without PixelData was meant to have some (so it was cut before it)."""
    meta = getattr(ds, "file_meta", None)
    sop = str(meta.get("MediaStorageSOPClassUID", "") if meta is not None else "")
    return sop.startswith("1.2.840.10008.5.1.4.1.1.1") or any(
        k in ds for k in ("Rows", "Columns", "PhotometricInterpretation", "BitsAllocated", "SamplesPerPixel")
    )


def element_name(tag: int) -> str:
    """`Keyword (gggg,eeee)`, the way every message names an element."""
    kw = keyword_for_tag(tag) or "element"
    return f"{kw} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


#: bytes inflated per step while counting a deflated dataset
_INFLATE_CHUNK = 1 << 20


@dataclass(frozen=True)
class Inflation:
    """What a deflated dataset inflates to, counted once per file in bounded steps (never held whole):
    its element offsets are positions in the inflated stream, and a zip bomb is found before pydicom
    inflates it."""

    size: int  # bytes, counted up to the budget + 1
    ended: bool  # the deflate stream reached its end
    error: str | None  # zlib's complaint about a corrupt stream


def _count_inflated(f: BinaryIO, limit: int) -> Inflation | None:
    """None when the file meta cannot be read or the file is not deflated (dcmread says why)."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    try:
        f.seek(0)
        read_preamble(f, False)
        if str(_read_file_meta_info(f).get("TransferSyntaxUID", "")) != DEFLATED.decode():
            return None
    except Exception:  # not DICOM, a broken meta group: dcmread reports it
        return None
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    try:
        while total <= limit and not inflater.eof:
            data = inflater.unconsumed_tail or f.read(_INFLATE_CHUNK)
            if not data:
                break
            total += len(inflater.decompress(data, _INFLATE_CHUNK))
    except zlib.error as exc:
        return Inflation(total, False, one_line(exc, 120))
    return Inflation(total, inflater.eof, None)


def _is_deflated(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    raw = meta.get_item(0x00020010) if meta is not None else None
    value = getattr(raw, "value", None)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value or "").strip(" \0") == DeflatedExplicitVRLittleEndian


def check_structure(ds: Dataset, p: Path, size: int, inflation: Inflation | None) -> None:
    """Every top-level value inside the file, and an image that ends before its pixel data: truncated.

    A deflated file is measured after inflation: its offsets and lengths count inflated bytes."""
    where = "the file"
    if _is_deflated(ds):
        if inflation is None:  # the meta reader and dcmread disagreed: count it now
            try:
                with open(p, "rb") as f:
                    inflation = _count_inflated(f, 1 << 62)
            except OSError as exc:
                raise TruncatedFile(f"{p}: corrupt deflated dataset ({one_line(exc, 120)})") from None
        if inflation is not None:
            if inflation.error is not None:
                raise TruncatedFile(f"{p}: corrupt deflated dataset ({inflation.error})")
            if not inflation.ended:
                raise TruncatedFile(f"{p}: truncated deflated dataset: the deflate stream ends early")
            size, where = inflation.size, "the inflated dataset"
    end = 0
    last = None
    for tag in list(ds.keys()):
        el = ds.get_item(tag, keep_deferred=True)
        tell = getattr(el, "value_tell", None)
        length = getattr(el, "length", None)
        if tell is None or length is None or length == 0xFFFFFFFF:
            last = tag
            continue
        if tell + length > size:
            if int(tag) == PIXEL_DATA:
                have = max(size - tell, 0)
                raise TruncatedFile(f"{p}: truncated pixel data: {have} of the {length} bytes announced")
            raise TruncatedFile(
                f"{p}: truncated or corrupt: {element_name(int(tag))} announces {length} bytes at offset {tell}, "
                f"{where} ends at {size}"
            )
        end, last = max(end, tell + length), tag
    if end and 0 < size - end < 8 and (last is None or int(last) != 0xFFFCFFFC):
        raise TruncatedFile(f"{p}: truncated or corrupt: {where} ends {size - end} bytes into an element header")
    if "PixelData" not in ds and looks_like_image(ds):
        after = f" after {element_name(int(last))}" if last is not None else ""
        raise TruncatedFile(f"{p}: truncated or no pixel data: {where} ends at byte {size}{after}, before PixelData")


def check_inflation(f: BinaryIO, p: Path, budget: Budget) -> Inflation | None:
    """A deflated dataset (a zip bomb inflates a thousandfold) is measured before pydicom inflates it whole."""
    inflation = _count_inflated(f, budget.max_file_bytes)
    if inflation is not None and inflation.size > budget.max_file_bytes:
        raise OverBudget(
            f"{p}: the deflated dataset inflates to more than {budget.max_file_bytes} bytes, over the budget of "
            f"{budget.max_file_bytes} bytes per file ({ENV['max_file_bytes']})"
        )
    return inflation
