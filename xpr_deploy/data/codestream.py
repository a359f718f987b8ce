"""The image size a compressed pixel stream declares, read from its first bytes without decoding.

A decoder allocates what the stream's own header says, not what the DICOM header says: a JPEG 2000
codestream whose SIZ marker claims 20000 x 10000 pixels inside a file whose Rows and Columns say
320 x 160 makes OpenJPEG allocate 1.3 GB before anyone compares. So the stream's size (JPEG 2000 /
HTJ2K SIZ, JPEG and JPEG-LS SOF) is read here and compared with the header before decoding.
"""

from __future__ import annotations

import struct

__all__ = ["stream_size"]

#: JPEG start-of-frame markers that carry the frame size (not DHT C4, JPG C8, DAC CC); F7 is JPEG-LS
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}
#: how far into the first fragment the size is looked for (tables before SOF are small)
_SCAN = 1 << 16


def _j2k(data: bytes) -> tuple[str, int, int] | None:
    at = data.find(b"\xff\x4f\xff\x51", 0, _SCAN)  # SOC then SIZ (a JP2 wrapper may come first)
    if at < 0 or len(data) < at + 4 + 22:
        return None
    xsiz, ysiz, xo, yo = struct.unpack_from(">IIII", data, at + 8)
    return "JPEG 2000", max(ysiz - yo, 0), max(xsiz - xo, 0)


def _jpeg(data: bytes) -> tuple[str, int, int] | None:
    if not data.startswith(b"\xff\xd8"):
        return None
    i = 2
    end = min(len(data), _SCAN)
    while i + 4 <= end:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xD8 or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            i += 2
            continue
        (length,) = struct.unpack_from(">H", data, i + 2)
        if marker in _SOF:
            if i + 9 > len(data):
                return None
            rows, cols = struct.unpack_from(">HH", data, i + 5)
            return ("JPEG-LS" if marker == 0xF7 else "JPEG"), rows, cols
        if marker == 0xDA or length < 2:  # scan data before any frame header: nothing to say
            return None
        i += 2 + length
    return None


def stream_size(first_fragment: bytes) -> tuple[str, int, int] | None:
    """(format, rows, columns) the stream declares, None when it is not JPEG / JPEG-LS / JPEG 2000
    or says nothing usable (JPEG's height 0, defined later by a DNL marker, comes back as 0)."""
    return _j2k(first_fragment) or _jpeg(first_fragment)
