"""Read one mammogram and turn it into the model input: the `xpr-preproc-1` contract.

The steps follow `export/README.md` ("Preprocessing contract") literally, because the C++ runtime
implements the same steps and must match these arrays within ~1e-6. Everything is float64 until
the final cast, so 12-16 bit detector precision survives until the normalisation.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from .errors import (
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
from .views import is_view, view_of_code

PREPROC_VERSION = "xpr-preproc-1"
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
    """The tags the contract reads, so the numeric pipeline can run on a bare array (and in C++)."""

    photometric: str = "MONOCHROME2"
    slope: float = 1.0
    intercept: float = 0.0
    window_center: float | None = None
    window_width: float | None = None
    voi_function: str = "LINEAR"
    padding_value: int | None = None
    padding_limit: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_dataset(cls, ds: Dataset, path: str = "<dataset>") -> PixelMeta:
        if "ModalityLUTSequence" in ds:
            raise UnsupportedImage(f"{path}: Modality LUT Sequence is not supported (xpr-preproc-1)")
        wc, ww = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
        if (wc is None) != (ww is None):
            wc = ww = None
        fn = str(ds.get("VOILUTFunction", "") or "LINEAR").upper()
        if fn not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
            raise UnsupportedImage(f"{path}: VOI LUT Function {fn!r} is not supported")
        if ww is not None and (ww < 1 if fn == "LINEAR" else ww <= 0):
            raise UnsupportedImage(f"{path}: invalid Window Width {ww:g} for {fn}")
        pv = ds.get("PixelPaddingValue")
        pl = ds.get("PixelPaddingRangeLimit")
        return cls(
            photometric=str(ds.get("PhotometricInterpretation", "")).strip().upper(),
            slope=float(ds.get("RescaleSlope", 1) or 1),
            intercept=float(ds.get("RescaleIntercept", 0) or 0),
            window_center=wc,
            window_width=ww,
            voi_function=fn,
            padding_value=None if pv is None else int(pv),
            padding_limit=None if pl is None or pv is None else int(pl),
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        return d


def _first(v: Any) -> float | None:
    if v is None or v == "":
        return None
    if isinstance(v, (list, tuple)) or (hasattr(v, "__getitem__") and not isinstance(v, (str, bytes))):
        try:
            v = v[0]
        except (IndexError, TypeError):
            return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


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
