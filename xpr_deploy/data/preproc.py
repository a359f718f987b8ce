"""The `xpr-preproc-1` contract on arrays: settings, tag values, steps 1-9 and the geometry back.

The steps follow `export/README.md` ("Preprocessing contract") literally, because the C++ runtime
implements the same steps and must match these arrays within ~1e-6. Everything is float64 until
the final cast, so 12-16 bit detector precision survives until the normalisation. Nothing here
reads files: `dicom` opens and validates the DICOM, decodes the stored values and fills
`PixelMeta`; `preprocess_array` is the contract on the bare array.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .errors import EmptyBreastMask, UnsupportedImage

PREPROC_VERSION = "xpr-preproc-1"


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class PreprocessSettings:
    """Everything that changes the model input; its hash keys the prepared-array cache."""

    img_size: tuple[int, int] = (2688, 896)  # rows x cols
    mask_threshold: float = 0.05  # step 7: a pixel is breast if x > this
    profile_threshold: float = 0.02  # step 7: a row/column is kept if this fraction is breast
    mean: float = 0.449
    std: float = 0.226
    version: str = PREPROC_VERSION

    def __post_init__(self) -> None:
        h, w = self.img_size
        if h < 1 or w < 1:
            raise ValueError(f"img_size {h}x{w} must be positive")
        if self.std <= 0:
            raise ValueError("std must be positive")

    @classmethod
    def for_config(cls, cfg: Any) -> PreprocessSettings:
        """Settings for a ModelConfig (only its img_size matters)."""
        return cls(img_size=tuple(cfg.img_size))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["img_size"] = list(self.img_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessSettings:
        d = dict(d)
        if d.get("version", PREPROC_VERSION) != PREPROC_VERSION:
            raise ValueError(f"preprocessing version {d['version']!r} is not {PREPROC_VERSION!r}")
        if "img_size" in d:
            d["img_size"] = tuple(int(v) for v in d["img_size"])
        return cls(**d)

    def hash(self) -> str:
        """Short stable hash of the settings (cache key part)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class Geometry:
    """Where the model input came from in the stored image, for heatmaps and boxes.

    Model pixel (row i, col j) covers oriented rows `r0 + (i + 0.5) * sy - 0.5` and columns
    `c0 + (j + 0.5) * sx - 0.5` (crop inclusive, `sy = (r1 - r0 + 1) / H`); if `flipped`, the
    oriented column c is stored column `cols - 1 - c`.
    """

    rows: int  # stored image size
    cols: int
    flipped: bool  # the stored image was mirrored left-right (chest wall was on the right)
    crop: tuple[int, int, int, int]  # r0, r1, c0, c1 inclusive, in oriented (after flip) coordinates
    out_size: tuple[int, int]  # model rows x cols

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "cols": self.cols,
            "flipped": self.flipped,
            "crop": list(self.crop),
            "out_size": list(self.out_size),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Geometry:
        r0, r1, c0, c1 = (int(v) for v in d["crop"])
        oh, ow = (int(v) for v in d["out_size"])
        return cls(int(d["rows"]), int(d["cols"]), bool(d["flipped"]), (r0, r1, c0, c1), (oh, ow))

    def model_to_stored(self, row: np.ndarray | float, col: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Continuous model-pixel coordinates (pixel centres at integers) to stored-image coordinates."""
        r0, r1, c0, c1 = self.crop
        sy = (r1 - r0 + 1) / self.out_size[0]
        sx = (c1 - c0 + 1) / self.out_size[1]
        r = r0 + (np.asarray(row, dtype=np.float64) + 0.5) * sy - 0.5
        c = c0 + (np.asarray(col, dtype=np.float64) + 0.5) * sx - 0.5
        if self.flipped:
            c = self.cols - 1 - c
        return r, c

    def stored_box(self) -> tuple[int, int, int, int]:
        """The crop as (r0, r1, c0, c1) inclusive in stored (unflipped) columns."""
        r0, r1, c0, c1 = self.crop
        if self.flipped:
            c0, c1 = self.cols - 1 - c1, self.cols - 1 - c0
        return r0, r1, c0, c1

    def paste(self, model_map: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Resize a [H, W] map on the model grid back onto the stored image (bilinear), e.g. a heatmap."""
        m = np.asarray(model_map, dtype=np.float64)
        r0, r1, c0, c1 = self.crop
        crop = resize_bilinear_aa(m, (r1 - r0 + 1, c1 - c0 + 1))
        out = np.full((self.rows, self.cols), fill, dtype=np.float64)
        out[r0 : r1 + 1, c0 : c1 + 1] = crop
        return out[:, ::-1].copy() if self.flipped else out


@dataclass(frozen=True)
class PixelMeta:
    """The tags the contract reads, so the numeric pipeline can run on a bare array (and in C++).
    Filled from a dataset, checked, by `header.pixel_meta` (the one place header values are parsed)."""

    photometric: str = "MONOCHROME2"
    slope: float = 1.0
    intercept: float = 0.0
    window_center: float | None = None
    window_width: float | None = None
    voi_function: str = "LINEAR"
    padding_value: int | None = None
    padding_limit: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        return d


# --------------------------------------------------------------------------- the numeric pipeline


def padding_mask(stored: np.ndarray, meta: PixelMeta) -> np.ndarray:
    """Step 1: padding pixels on stored values."""
    if meta.padding_value is None:
        return np.zeros(stored.shape, dtype=bool)
    if meta.padding_limit is None:
        return stored == meta.padding_value
    lo, hi = sorted((meta.padding_value, meta.padding_limit))
    return (stored >= lo) & (stored <= hi)


def apply_window(x: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Step 3 with a window: PS3.3 C.11.2.1.2, output in [0, 1]."""
    c, w = float(center), float(width)
    if function == "LINEAR_EXACT":
        return np.clip((x - c) / w + 0.5, 0.0, 1.0)
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    lo = c - 0.5 - (w - 1.0) / 2.0
    hi = c - 0.5 + (w - 1.0) / 2.0
    if w == 1.0:  # the ramp is empty: a step at c - 0.5
        return np.where(x <= lo, 0.0, 1.0)
    ramp = (x - (c - 0.5)) / (w - 1.0) + 0.5
    return np.where(x <= lo, 0.0, np.where(x > hi, 1.0, ramp))


def to_display(stored: np.ndarray, meta: PixelMeta) -> np.ndarray:
    """Steps 1-5: stored values to float64 in [0, 1], brighter = more attenuation, padding 0."""
    pad = padding_mask(stored, meta)
    x = stored.astype(np.float64) * meta.slope + meta.intercept
    if meta.window_center is not None and meta.window_width is not None:
        x = apply_window(x, meta.window_center, meta.window_width, meta.voi_function)
    else:
        vals = x[~pad]
        lo = float(vals.min()) if vals.size else 0.0
        hi = float(vals.max()) if vals.size else 0.0
        x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    if meta.photometric == "MONOCHROME1":
        x = 1.0 - x
    x[pad] = 0.0
    return x


def needs_flip(x: np.ndarray) -> bool:
    """Step 6: chest wall (the brighter half) must be on the left."""
    cols = x.shape[1]
    half = cols // 2
    left = float(x[:, :half].sum())
    right = float(x[:, cols - half :].sum())
    return right > left


def breast_box(
    x: np.ndarray, mask_threshold: float, profile_threshold: float, path: str = "<image>"
) -> tuple[int, int, int, int]:
    """Step 7: rows/cols where at least `profile_threshold` of the line is breast; inclusive box."""
    m = x > mask_threshold
    col_prof = m.mean(axis=0)
    row_prof = m.mean(axis=1)
    cols = np.flatnonzero(col_prof >= profile_threshold)
    rows = np.flatnonzero(row_prof >= profile_threshold)
    if cols.size == 0 or rows.size == 0:
        raise EmptyBreastMask(f"{path}: empty breast mask (nothing above {mask_threshold} after windowing)")
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def _aa_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Index and weight tables [n_out, taps] of the antialiased triangle filter (PIL BILINEAR)."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    taps = math.ceil(support) * 2 + 1
    idx = np.zeros((n_out, taps), dtype=np.int64)
    wts = np.zeros((n_out, taps), dtype=np.float64)
    for i in range(n_out):
        centre = (i + 0.5) * scale
        j0 = max(math.floor(centre - support + 0.5), 0)
        j1 = min(math.floor(centre + support + 0.5), n_in)
        js = np.arange(j0, j1)
        w = np.maximum(0.0, 1.0 - np.abs((js + 0.5 - centre) / support))
        s = w.sum()
        if s > 0:
            w = w / s
        k = len(js)
        idx[i, :k] = js
        wts[i, :k] = w
    return idx, wts


def _aa_matrix(n_in: int, n_out: int) -> Any:
    """The filter of `_aa_weights` as a sparse [n_out, n_in] matrix."""
    from scipy import sparse

    idx, wts = _aa_weights(n_in, n_out)
    rows = np.repeat(np.arange(n_out), idx.shape[1])
    keep = wts.ravel() != 0
    return sparse.csr_matrix((wts.ravel()[keep], (rows[keep], idx.ravel()[keep])), shape=(n_out, n_in))


def resize_bilinear_aa(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Step 8: antialiased bilinear resize to (rows, cols), columns first then rows, float64.

    Each output value is a short weighted sum (sparse matrix products: fast and small in memory
    for 4k x 3k mammograms).
    """
    out_h, out_w = int(size[0]), int(size[1])
    x = np.asarray(x, dtype=np.float64)
    tmp = np.asarray((_aa_matrix(x.shape[1], out_w) @ x.T).T)  # [rows, out_w]
    return np.ascontiguousarray(np.asarray(_aa_matrix(x.shape[0], out_h) @ tmp))  # [out_h, out_w]


def preprocess_array(
    stored: np.ndarray, meta: PixelMeta, settings: PreprocessSettings, path: str = "<image>"
) -> tuple[np.ndarray, Geometry]:
    """Steps 1-9 on a decoded stored-value array: the exact contract, independent of pydicom."""
    if stored.ndim != 2:
        raise UnsupportedImage(f"{path}: need a 2-D image, got shape {stored.shape}")
    x = to_display(stored, meta)
    flipped = needs_flip(x)
    if flipped:
        x = x[:, ::-1]
    r0, r1, c0, c1 = breast_box(x, settings.mask_threshold, settings.profile_threshold, path)
    crop = np.ascontiguousarray(x[r0 : r1 + 1, c0 : c1 + 1])
    y = resize_bilinear_aa(crop, settings.img_size)
    y = (y - settings.mean) / settings.std
    geo = Geometry(
        rows=stored.shape[0],
        cols=stored.shape[1],
        flipped=flipped,
        crop=(r0, r1, c0, c1),
        out_size=(int(settings.img_size[0]), int(settings.img_size[1])),
    )
    return y.astype(np.float32), geo
