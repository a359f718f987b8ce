"""A vectorised DICOM RLE Lossless (PackBits) encoder.

pydicom's built-in RLE encoder is pure Python (~2 s for a 1024x512 16-bit image), too slow to
write a hundred synthetic studies; this one does the same encoding (PS3.5 Annex G: one segment per
byte plane, most significant first, each row encoded separately) with numpy in milliseconds.
Its output is checked against pydicom's RLE decoder in the tests.
"""

from __future__ import annotations

import numpy as np


def _chunks(pos: np.ndarray, length: np.ndarray, limit: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Split intervals (pos, length) into pieces of at most `limit`."""
    n = (length + limit - 1) // limit
    first = np.cumsum(n) - n
    k = np.arange(int(n.sum())) - np.repeat(first, n)
    p = np.repeat(pos, n) + k * limit
    ln = np.minimum(np.repeat(length, n) - k * limit, limit)
    return p, ln


def packbits_rows(plane: np.ndarray) -> bytes:
    """PackBits-encode a [rows, cols] uint8 plane row by row; the result has even length."""
    _rows, cols = plane.shape
    flat = np.ascontiguousarray(plane, dtype=np.uint8).ravel()
    n = flat.size
    start = np.ones(n, dtype=bool)
    start[1:] = flat[1:] != flat[:-1]
    start[::cols] = True
    starts = np.flatnonzero(start)
    lengths = np.diff(np.append(starts, n))
    rep = lengths >= 3
    # literal stretches: consecutive short runs within one row
    lit_idx = np.flatnonzero(~rep)
    prev_is_lit = np.zeros(lit_idx.size, dtype=bool)
    if lit_idx.size:
        prev_is_lit[1:] = lit_idx[1:] == lit_idx[:-1] + 1
        prev_is_lit &= (starts[lit_idx] % cols) != 0
    stretch_first = lit_idx[~prev_is_lit]
    lit_pos = starts[stretch_first]
    lit_len = np.add.reduceat(lengths[lit_idx], np.flatnonzero(~prev_is_lit)) if lit_idx.size else lit_pos
    rp, rl = _chunks(starts[rep], lengths[rep])
    lp, ll = _chunks(lit_pos, lit_len)
    pos = np.concatenate([rp, lp])
    ln = np.concatenate([rl, ll])
    is_rep = np.concatenate([np.ones(rp.size, bool), np.zeros(lp.size, bool)])
    order = np.argsort(pos, kind="stable")
    pos, ln, is_rep = pos[order], ln[order], is_rep[order]
    size = 1 + np.where(is_rep, 1, ln)
    off = np.cumsum(size) - size
    total = int(size.sum())
    out = np.zeros(total + (total & 1), dtype=np.uint8)
    out[off] = np.where(is_rep, (257 - ln) & 0xFF, ln - 1).astype(np.uint8)
    out[off[is_rep] + 1] = flat[pos[is_rep]]
    lpos, llen, loff = pos[~is_rep], ln[~is_rep], off[~is_rep]
    if llen.size:
        first = np.cumsum(llen) - llen
        within = np.arange(int(llen.sum())) - np.repeat(first, llen)
        out[np.repeat(loff + 1, llen) + within] = flat[np.repeat(lpos, llen) + within]
    return out.tobytes()


def rle_encode_frame(arr: np.ndarray) -> bytes:
    """One RLE Lossless frame of a 2-D uint8/uint16 greyscale image (header + byte-plane segments)."""
    a = np.asarray(arr)
    if a.ndim != 2 or a.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"need a 2-D uint8/uint16 array, got {a.dtype} {a.shape}")
    planes = [(a >> 8).astype(np.uint8), (a & 255).astype(np.uint8)] if a.dtype == np.uint16 else [a]
    segments = [packbits_rows(p) for p in planes]
    header = np.zeros(16, dtype="<u4")
    header[0] = len(segments)
    offset = 64
    for i, s in enumerate(segments):
        header[i + 1] = offset
        offset += len(s)
    return header.tobytes() + b"".join(segments)
