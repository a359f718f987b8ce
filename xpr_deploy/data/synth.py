"""Synthetic mammography studies for tests and the demo, in the real VinDr and CBIS layouts.

Each breast is drawn in a fixed "left" frame (chest wall at column 0) with a soft elliptical
outline, a thickness fall-off towards the skin, smooth fibroglandular texture, the pectoral muscle
on MLO, a small burned-in marker, and for malignant breasts a bright spiculated mass placed at the
same depth in both views (so cross-view attention has something to agree on). Right breasts are
stored mirrored, as acquired. Files are valid MG For Presentation objects (checked by `dciodvfy`)
with a mix of MONOCHROME1/2 and of uncompressed, RLE and JPEG 2000 lossless transfer syntaxes.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)
from scipy import ndimage

from ..errors import ConfigError
from ..io import OutputError, atomic_dir, write_text
from .dicom import MG_FOR_PRESENTATION
from .rle import rle_encode_frame
from .views import VIEW_CODES, VIEWS

#: cycled over the images of a synthetic dataset (JPEG 2000 is the slowest to encode: 1 in 5)
TRANSFER_SYNTAXES = (ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless, RLELossless, ExplicitVRLittleEndian)
BITS = 12
MAXV = (1 << BITS) - 1
#: PatientOrientation (row direction, column direction) as stored (right breasts mirrored)
ORIENTATION = {("L", "CC"): ["A", "R"], ("R", "CC"): ["P", "L"], ("L", "MLO"): ["A", "FR"], ("R", "MLO"): ["P", "FL"]}
#: mass core radius as a fraction of the breast depth (spicules reach 1.8-3x further): 2-3 cm masses
#: in a 12 cm breast. Why not the 1-1.7 cm of a typical screening finding (0.045-0.07, used until
#: v0.1): the paper's head averages every stage-4 token, and a mass that small is ~1 of 98 tokens
#: per view at the tiny size; a randomly initialised Swin (no ImageNet weights offline) then does
#: not learn it in a CPU budget (held-out AUC 0.53, 320 breasts, 6 epochs), while this size reaches
#: 0.92-1.0 with the same recipe (issue 4 note, `tests/test_train_learns.py`).
LESION_RADIUS = (0.09, 0.13)


@dataclass
class Lesion:
    """A mass, in breast-relative coordinates shared by both views."""

    depth: float  # distance from the chest wall as a fraction of the breast depth
    cc_offset: float  # CC: vertical offset as a fraction of the half height (-1..1)
    mlo_offset: float  # MLO: same for the MLO outline
    radius: float  # fraction of the breast depth
    contrast: float
    spiculated: bool = True
    seed: int = 0


@dataclass
class Breast:
    """One synthetic breast (its shape and texture seed and its lesion, if any)."""

    laterality: str
    malignant: bool
    depth: float  # breast depth as a fraction of the image width
    half_height: float  # CC half height as a fraction of the image height
    density: float  # 0..1, amount of fibroglandular texture
    seed: int
    lesion: Lesion | None = None
    calcs: int = 0  # benign: number of faint calcifications
    boxes: dict[str, list[float]] = field(default_factory=dict)  # view -> [xmin, ymin, xmax, ymax] stored coords


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """[n_out, n_in] linear interpolation matrix (end points aligned)."""
    pos = np.linspace(0, n_in - 1, n_out)
    i0 = np.clip(np.floor(pos).astype(int), 0, n_in - 2)
    f = pos - i0
    m = np.zeros((n_out, n_in), dtype=np.float32)
    m[np.arange(n_out), i0] = 1 - f
    m[np.arange(n_out), i0 + 1] = f
    return m


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int, sigma: float = 1.0) -> np.ndarray:
    """Smooth random field with unit-ish spread: low-resolution noise, blurred, bilinearly upsampled."""
    h, w = shape
    small = rng.standard_normal((max(3, h // cell + 2), max(3, w // cell + 2)))
    small = ndimage.gaussian_filter(small, sigma, mode="reflect")
    small = (small / (small.std() + 1e-9)).astype(np.float32)
    return _interp_matrix(h, small.shape[0]) @ small @ _interp_matrix(w, small.shape[1]).T


def _add_mass(
    img: np.ndarray,
    weight: np.ndarray,
    cy: float,
    cx: float,
    r: float,
    amp: float,
    spiculated: bool,
    rng: np.random.Generator,
) -> None:
    """Add an irregular round mass (with spicules) in place, drawn on a local patch, times `weight`."""
    h, w = img.shape
    ext = math.ceil(r * (3.2 if spiculated else 1.4)) + 2
    y0, y1 = max(0, int(cy) - ext), min(h, int(cy) + ext + 1)
    x0, x1 = max(0, int(cx) - ext), min(w, int(cx) + ext + 1)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    dy, dx = yy - cy, xx - cx
    rho = np.hypot(dy, dx)
    theta = np.arctan2(dy, dx)
    p1, p2 = rng.uniform(0, 2 * np.pi, 2)
    rr = r * (1 + 0.12 * np.sin(3 * theta + p1) + 0.07 * np.sin(5 * theta + p2))
    core = np.clip(1 - (rho / rr) ** 2, 0, 1) ** 0.35
    patch = amp * core
    if spiculated:
        n = int(rng.integers(9, 15))
        for a in rng.uniform(0, 2 * np.pi, n):
            ux, uy = math.cos(a), math.sin(a)
            t = dx * ux + dy * uy
            d = np.abs(dx * uy - dy * ux)
            length = r * rng.uniform(1.8, 3.0)
            width = max(1.2, 0.09 * r)
            along = np.clip(1 - (t - r * 0.6) / (length - r * 0.6), 0, 1) * (t > 0)
            patch = np.maximum(patch, 0.55 * amp * along * np.exp(-((d / width) ** 2)))
    img[y0:y1, x0:x1] += (patch * weight[y0:y1, x0:x1]).astype(img.dtype)


def render_view(breast: Breast, view: str, size: tuple[int, int]) -> np.ndarray:
    """Brightness in [0, 1] of one view in the left frame (chest wall at column 0), float64."""
    h, w = size
    rng = np.random.default_rng([breast.seed, 0 if view == "CC" else 1])
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    rx = breast.depth * w
    if view == "CC":
        cy, ry = h * (0.5 + rng.uniform(-0.03, 0.03)), breast.half_height * h
    else:  # MLO: taller outline reaching the axilla at the top
        cy, ry = h * (0.56 + rng.uniform(-0.02, 0.02)), h * min(0.62, breast.half_height * 1.35)
    ny, nx = (yy - cy) / ry, xx / rx
    rho0 = np.sqrt(ny**2 + nx**2)
    p = rng.uniform(0, 2 * np.pi)
    # gentle outline modulation: sin(2 theta + p) = 2 sin cos cos p + (cos^2 - sin^2) sin p
    st, ct = ny / np.maximum(rho0, 1e-6), nx / np.maximum(rho0, 1e-6)
    rho = rho0 / (1 + 0.04 * (2 * st * ct * math.cos(p) + (ct**2 - st**2) * math.sin(p)))
    inside = np.clip((1 - rho) / 0.015, 0, 1)
    thick = np.sqrt(np.clip(1 - rho**2, 0, 1))
    coarse = _smooth_noise(rng, size, max(8, h // 24), 1.2)
    fine = _smooth_noise(rng, size, max(3, h // 110), 0.8)
    gland = np.clip(0.55 * coarse + 0.25 * fine + (breast.density - 0.5) * 1.2, 0, None)
    gland = np.tanh(gland) * np.exp(-((ny / 0.75) ** 2)) * np.clip(1.1 - rho, 0, 1)
    tissue = 0.20 + 0.20 * thick**0.6 + 0.24 * gland
    tissue += 0.05 * np.clip(1 - np.abs(1 - rho) / 0.012, 0, 1)  # skin line
    if view == "MLO":
        pw, ph = w * rng.uniform(0.22, 0.32), h * rng.uniform(0.40, 0.55)
        edge = 1 - (xx / pw + yy / ph)
        muscle = np.clip(edge / 0.02, 0, 1)
        muscle_val = 0.66 + 0.04 * _smooth_noise(rng, size, max(6, h // 40), 1.0) + 0.08 * np.clip(edge, 0, 1)
        tissue = tissue * (1 - muscle) + muscle_val * muscle
        inside = np.maximum(inside, muscle * (xx < pw))
    img = tissue * inside
    lesion = breast.lesion
    if lesion is not None:
        lrng = np.random.default_rng([lesion.seed, 7])  # same lesion shape in both views
        off = lesion.cc_offset if view == "CC" else lesion.mlo_offset
        ly = cy + off * ry * math.sqrt(max(0.0, 1 - lesion.depth**2)) * 0.8
        lx = lesion.depth * rx
        r = lesion.radius * rx
        _add_mass(img, inside, ly, lx, r, lesion.contrast, lesion.spiculated, lrng)
        ext = r * 1.1
        breast.boxes[view] = [lx - ext, ly - ext, lx + ext, ly + ext]
    for _ in range(breast.calcs):  # benign: a few faint specks
        cyx = (cy + rng.uniform(-0.5, 0.5) * ry, rng.uniform(0.2, 0.7) * rx)
        _add_mass(img, inside, cyx[0], cyx[1], max(1.5, 0.004 * w), 0.12, False, rng)
    img += rng.standard_normal(size, dtype=np.float32) * np.float32(0.006) * (inside > 0)
    # burned-in marker away from the chest wall, top corner (small enough for the crop's 2 % rule)
    m = max(2, int(0.012 * min(h, w)))
    img[int(0.03 * h) : int(0.03 * h) + m, w - int(0.04 * w) - m : w - int(0.04 * w)] = 0.95
    return np.clip(img, 0.0, 1.0).astype(np.float64)


def to_stored(img: np.ndarray, photometric: str, center: int, width: int) -> np.ndarray:
    """Brightness -> 12-bit stored values such that the LINEAR window (center, width) maps back to it.

    MONOCHROME1 files store `4095 - v` with center `4096 - c`: the contract's window + inversion
    then gives exactly the MONOCHROME2 result.
    """
    lo = center - 0.5 - (width - 1) / 2.0
    v = np.clip(np.rint(lo + 0.5 + img * (width - 1)), 0, MAXV).astype(np.uint16)
    return (MAXV - v).astype(np.uint16) if photometric == "MONOCHROME1" else v


def window_for(photometric: str, center: int, width: int) -> tuple[int, int]:
    return (MAXV + 1 - center, width) if photometric == "MONOCHROME1" else (center, width)


def _uid(*parts: Any) -> UID:
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    d = Dataset()
    d.CodeValue, d.CodingSchemeDesignator, d.CodeMeaning = value, scheme, meaning
    return d


def mg_dataset(
    stored: np.ndarray,
    *,
    photometric: str,
    laterality: str,
    view: str,
    window: tuple[int, int],
    patient_id: str,
    patient_name: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    study_date: str = "20240101",
    accession: str = "",
    instance: int = 1,
    padding_value: int | None = None,
) -> Dataset:
    """A Digital Mammography X-Ray Image (For Presentation) dataset with uncompressed pixel data."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(MG_FOR_PRESENTATION)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.SOPClassUID = MG_FOR_PRESENTATION
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = "090000"
    ds.AccessionNumber = accession
    ds.Modality = "MG"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = "xpr synthetic"
    ds.InstitutionName = "xpr"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "synthetic screening mammogram"
    ds.SeriesDescription = f"{laterality} {view}"
    ds.ManufacturerModelName = "xpr-synth"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    ds.BodyPartExamined = "BREAST"
    ds.DetectorType = "DIRECT"
    ds.ViewPosition = view
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.ImagerPixelSpacing = [0.1, 0.1]
    ds.DistanceSourceToDetector = "650"
    ds.DistanceSourceToPatient = "630"
    ds.EstimatedRadiographicMagnificationFactor = "1.031746"  # 650 / 630
    ds.BodyPartThickness = "50"
    ds.CompressionForce = "100"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance
    ds.PatientOrientation = ORIENTATION[(laterality, view)]
    ds.ImageLaterality = laterality
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
    ds.BitsAllocated = 16
    ds.BitsStored = BITS
    ds.HighBit = BITS - 1
    ds.PixelRepresentation = 0
    if padding_value is not None:
        ds.PixelPaddingValue = padding_value
    ds.BurnedInAnnotation = "NO"
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1
    ds.WindowCenter = str(window[0])
    ds.WindowWidth = str(window[1])
    ds.VOILUTFunction = "LINEAR"
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
    ds.AnatomicRegionSequence = Sequence([_code("76752008", "SCT", "Breast")])
    ds.ViewCodeSequence = Sequence([_code(*VIEW_CODES[view])])
    ds.ViewCodeSequence[0].ViewModifierCodeSequence = Sequence()
    ds.AcquisitionContextSequence = Sequence()
    ds.BreastImplantPresent = "NO"
    ds.OrganExposed = "BREAST"
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()
    return ds


def save_mg(ds: Dataset, path: str | Path, transfer_syntax: str = ExplicitVRLittleEndian) -> None:
    """Encode (RLE / JPEG 2000 lossless via pydicom's encoders) and write atomically."""
    from ..io import atomic_path

    if transfer_syntax == RLELossless:  # pydicom's own RLE encoder is pure Python and slow
        arr = np.frombuffer(ds.PixelData, dtype="<u2").reshape(ds.Rows, ds.Columns)
        ds.PixelData = encapsulate([rle_encode_frame(arr)])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = RLELossless
    elif transfer_syntax != ExplicitVRLittleEndian:
        ds.compress(transfer_syntax, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    with atomic_path(path, suffix=".dcm") as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def plan_breasts(n: int, seed: int, positive_fraction: float, fmt: str) -> list[Breast]:
    """The breasts to draw: exactly round(n * positive_fraction) malignant, the rest benign."""
    rng = np.random.default_rng(seed)
    n_pos = round(n * positive_fraction)
    malignant = np.zeros(n, dtype=bool)
    malignant[rng.permutation(n)[:n_pos]] = True
    out = []
    for i in range(n):
        s = int(rng.integers(0, 2**31))
        lesion = None
        if malignant[i]:
            lesion = Lesion(
                depth=float(rng.uniform(0.3, 0.7)),
                cc_offset=float(rng.uniform(-0.6, 0.6)),
                mlo_offset=float(rng.uniform(-0.2, 0.6)),
                radius=float(rng.uniform(*LESION_RADIUS)),
                contrast=float(rng.uniform(0.25, 0.33)),
                seed=s + 1,
            )
        out.append(
            Breast(
                laterality="L",
                malignant=bool(malignant[i]),
                depth=float(rng.uniform(0.72, 0.88)),
                half_height=float(rng.uniform(0.36, 0.43)),
                density=float(rng.uniform(0.2, 0.8)),
                seed=s,
                lesion=lesion,
                calcs=int(rng.integers(2, 6)) if fmt == "cbis" and not malignant[i] else 0,
            )
        )
    return out


def render_stored(
    breast: Breast, view: str, size: tuple[int, int], photometric: str, center: int, width: int, padding: bool = False
) -> tuple[np.ndarray, int | None]:
    """Stored pixels of a view as acquired (right breasts mirrored) and the padding value used."""
    img = render_view(breast, view, size)
    stored = to_stored(img, photometric, center, width)
    pad = None
    if padding:  # pixels far outside the breast become the padding value
        pad = MAXV if photometric == "MONOCHROME1" else 0
        stored[ndimage.binary_erosion(img <= 0.0, iterations=3)] = pad
    if breast.laterality == "R":
        stored = stored[:, ::-1].copy()
    return stored, pad


@dataclass
class SynthSummary:
    """What `write_synthetic` wrote."""

    root: Path
    format: str
    breasts: int
    positives: int
    files: list[Path]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "format": self.format,
            "breasts": self.breasts,
            "positives": self.positives,
            "files": len(self.files),
            "seconds": round(self.seconds, 2),
        }


def _hex(*parts: Any) -> str:
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    import csv
    import io

    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    wr.writeheader()
    for r in rows:
        wr.writerow(r)
    return buf.getvalue()


def write_synthetic(
    out: str | Path,
    breasts: int,
    format: str = "vindr",
    size: tuple[int, int] = (1024, 512),
    seed: int = 0,
    positive_fraction: float = 0.5,
    overwrite: bool = False,
) -> SynthSummary:
    """Write `breasts` synthetic breasts (CC + MLO each) in the VinDr or CBIS layout under `out`.

    The folder appears atomically; an existing non-empty folder is replaced only with `overwrite`.
    """
    if format not in ("vindr", "cbis"):
        raise ConfigError(f"synthetic format must be vindr or cbis, not {format!r}")
    if breasts < 1:
        raise ConfigError("need at least one breast")
    if not 0.0 <= positive_fraction <= 1.0:
        raise ConfigError(f"positive fraction {positive_fraction} must be in [0, 1]")
    h, w = size
    if h < 64 or w < 32:
        raise ConfigError(f"size {h}x{w} too small (min 64x32)")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise OutputError(f"{out}: exists and is not empty (pass overwrite / --force)")
    t0 = time.perf_counter()
    plan = plan_breasts(breasts, seed, positive_fraction, format)
    rng = np.random.default_rng([seed, 99])
    # group breasts into studies/patients: VinDr studies have L and R; CBIS patients have 1-2 breasts
    groups: list[list[Breast]] = []
    i = 0
    while i < breasts:
        take = 2 if (format == "vindr" or rng.random() < 0.5) and i + 1 < breasts else 1
        group = plan[i : i + take]
        sides = ["L", "R"] if take == 2 else [str(rng.choice(["L", "R"]))]
        for b, s in zip(group, sides, strict=True):
            b.laterality = s
        groups.append(group)
        i += take
    files: list[Path] = []
    rows: list[dict[str, Any]] = []
    img_no = 0
    with atomic_dir(out) as tmp:
        for g, group in enumerate(groups):
            photometric = "MONOCHROME1" if g % 2 else "MONOCHROME2"
            study_uid = _uid(seed, format, g, "study")
            patient_id = f"P_{g + 1:05d}" if format == "cbis" else _hex(seed, g, "patient")[:16]
            study_hex = _hex(seed, g, "study")
            split = "test" if rng.random() < 0.2 else ("training" if format == "vindr" else "train")
            for b in group:
                birads = (
                    int(rng.choice([4, 5], p=[0.7, 0.3]))
                    if b.malignant
                    else int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
                )
                density = str(rng.choice(["A", "B", "C", "D"]))
                abn = "mass" if b.malignant or format == "vindr" else "calcification"
                pathology = "MALIGNANT" if b.malignant else str(rng.choice(["BENIGN", "BENIGN_WITHOUT_CALLBACK"]))
                for view in VIEWS:
                    center, width = int(rng.integers(1700, 2100)), int(rng.integers(3000, 3800))
                    stored, pad = render_stored(b, view, size, photometric, center, width, padding=img_no % 4 == 3)
                    series_uid = _uid(seed, format, g, b.laterality, view, "series")
                    sop_uid = _uid(seed, format, g, b.laterality, view, "sop")
                    ds = mg_dataset(
                        stored,
                        photometric=photometric,
                        laterality=b.laterality,
                        view=view,
                        window=window_for(photometric, center, width),
                        patient_id=patient_id,
                        patient_name=f"SYNTH^{patient_id}",
                        study_uid=study_uid,
                        series_uid=series_uid,
                        sop_uid=sop_uid,
                        accession=f"A{g + 1:06d}",
                        instance=img_no + 1,
                        padding_value=pad,
                    )
                    ts = TRANSFER_SYNTAXES[img_no % len(TRANSFER_SYNTAXES)]
                    img_no += 1
                    box = b.boxes.get(view)
                    if box is not None and b.laterality == "R":  # stored mirrored
                        box = [w - 1 - box[2], box[1], w - 1 - box[0], box[3]]
                    if format == "vindr":
                        image_id = _hex(seed, g, b.laterality, view, "image")
                        rel = Path("images") / study_hex / f"{image_id}.dicom"
                        rows.append(
                            {
                                "study_id": study_hex,
                                "series_id": _hex(seed, g, b.laterality, view, "series"),
                                "image_id": image_id,
                                "laterality": b.laterality,
                                "view_position": view,
                                "height": h,
                                "width": w,
                                "breast_birads": f"BI-RADS {birads}",
                                "breast_density": f"DENSITY {density}",
                                "split": split,
                                "box": box,
                            }
                        )
                    else:
                        kind = "Mass" if abn == "mass" else "Calc"
                        tag = "Training" if split == "train" else "Test"
                        side = "LEFT" if b.laterality == "L" else "RIGHT"
                        case = f"{kind}-{tag}_{patient_id}_{side}_{view}"
                        series_no = int(_hex(case)[:4], 16) % 90000 + 10000
                        rel = (
                            Path("CBIS-DDSM")
                            / case
                            / f"07-20-2016-DDSM-{series_no % 1000:03d}"
                            / f"1.000000-full mammogram images-{series_no}"
                            / "1-1.dcm"
                        )
                        rows.append(
                            {
                                "kind": kind,
                                "split": split,
                                "patient_id": patient_id,
                                "breast_density": "ABCD".index(density) + 1,
                                "side": side,
                                "view": view,
                                "abnormality_type": abn,
                                "pathology": pathology,
                                "assessment": birads,
                                "case": case,
                                "study_uid": study_uid,
                                "series_uid": series_uid,
                            }
                        )
                    save_mg(ds, tmp / rel, ts)
                    files.append(out / rel)
        if format == "vindr":
            _write_vindr_csvs(tmp, rows)
        else:
            _write_cbis_csvs(tmp, rows)
    return SynthSummary(
        root=out,
        format=format,
        breasts=breasts,
        positives=sum(b.malignant for b in plan),
        files=files,
        seconds=time.perf_counter() - t0,
    )


def _write_vindr_csvs(root: Path, rows: list[dict[str, Any]]) -> None:
    cols = [
        "study_id",
        "series_id",
        "image_id",
        "laterality",
        "view_position",
        "height",
        "width",
        "breast_birads",
        "breast_density",
        "split",
    ]
    write_text(root / "breast-level_annotations.csv", _csv([{k: r[k] for k in cols} for r in rows], cols))
    fcols = [*cols[:9], "finding_categories", "finding_birads", "xmin", "ymin", "xmax", "ymax", "split"]
    frows = []
    for r in rows:
        f = {k: r[k] for k in cols}
        if r["box"] is not None:
            f.update(
                finding_categories="['Mass']",
                finding_birads=r["breast_birads"],
                **{k: f"{v:.2f}" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), r["box"], strict=True)},
            )
        else:
            f.update(finding_categories="['No Finding']", finding_birads="", xmin="", ymin="", xmax="", ymax="")
        frows.append(f)
    write_text(root / "finding_annotations.csv", _csv(frows, fcols))


def _write_cbis_csvs(root: Path, rows: list[dict[str, Any]]) -> None:
    tail = ["pathology", "subtlety", "image file path", "cropped image file path", "ROI mask file path"]
    mass_cols = [
        "patient_id",
        "breast_density",
        "left or right breast",
        "image view",
        "abnormality id",
        "abnormality type",
        "mass shape",
        "mass margins",
        "assessment",
        *tail,
    ]
    calc_cols = [
        "patient_id",
        "breast density",
        "left or right breast",
        "image view",
        "abnormality id",
        "abnormality type",
        "calc type",
        "calc distribution",
        "assessment",
        *tail,
    ]
    for kind, cols in (("Mass", mass_cols), ("Calc", calc_cols)):
        for split in ("train", "test"):
            out = []
            for r in rows:
                if r["kind"] != kind or r["split"] != split:
                    continue
                img = f"{r['case']}/{r['study_uid']}/{r['series_uid']}/000000.dcm"
                row = {
                    "patient_id": r["patient_id"],
                    cols[1]: r["breast_density"],
                    "left or right breast": r["side"],
                    "image view": r["view"],
                    "abnormality id": 1,
                    "abnormality type": r["abnormality_type"],
                    "assessment": r["assessment"],
                    "pathology": r["pathology"],
                    "subtlety": 4,
                    "image file path": img,
                    "cropped image file path": f"{r['case']}_1/{r['study_uid']}/x/000000.dcm",
                    "ROI mask file path": f"{r['case']}_1/{r['study_uid']}/x/000001.dcm\n",
                }
                if kind == "Mass":
                    row.update(
                        {
                            "mass shape": "IRREGULAR" if r["pathology"] == "MALIGNANT" else "OVAL",
                            "mass margins": "SPICULATED" if r["pathology"] == "MALIGNANT" else "CIRCUMSCRIBED",
                        }
                    )
                else:
                    row.update({"calc type": "PUNCTATE", "calc distribution": "CLUSTERED"})
                out.append(row)
            name = f"{kind.lower()}_case_description_{split}_set.csv"
            write_text(root / name, _csv(out, cols))
