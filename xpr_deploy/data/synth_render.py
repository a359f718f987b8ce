"""The synthetic breast model and its renderer: what `write_synthetic` draws, as brightness in [0, 1].

Each breast is drawn in a fixed "left" frame (chest wall at column 0) with a soft elliptical
outline, a thickness fall-off towards the skin, smooth fibroglandular texture, the pectoral muscle
on MLO, a small burned-in marker, and for malignant breasts a bright spiculated mass placed at the
same depth in both views (so cross-view attention has something to agree on). `plan_breasts` draws
the breasts of a dataset; nothing here knows about DICOM (`synth_dicom`) or layouts (`synth`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

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
