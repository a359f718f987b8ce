"""What parity runs on: realistic inputs (synthetic studies or a DICOM dataset), never only noise
(random inputs tie)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .report import ParityError


def synthetic_inputs(img_size: tuple[int, int], n: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mammogram-like CC/MLO pairs (xpr synth's renderer, half with a lesion in both views), normalised
    as preprocessing step 9 does: (cc [n,1,H,W], mlo [n,1,H,W], labels [n])."""
    from ..data.dicom import PreprocessSettings
    from ..data.synth import plan_breasts, render_view

    s = PreprocessSettings(img_size=img_size)
    breasts = plan_breasts(n, seed, 0.5, "vindr")
    views = {
        v: np.stack([((render_view(b, v, img_size) - s.mean) / s.std)[None] for b in breasts]).astype(np.float32)
        for v in ("CC", "MLO")
    }
    return views["CC"], views["MLO"], np.array([int(b.malignant) for b in breasts])


def dataset_inputs(
    root: str | Path, img_size: tuple[int, int], limit: int = 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to `limit` breast pairs of a dataset folder, preprocessed by the contract (labels -1 if none)."""
    from ..data import PreprocessSettings, load_dataset, preprocess_file

    ds = load_dataset(root)
    if not ds.pairs:
        raise ParityError(f"{root}: no usable CC+MLO pairs ({len(ds.rejects)} rejected)")
    s = PreprocessSettings(img_size=img_size)
    pairs = ds.pairs[:limit]
    cc = np.stack([preprocess_file(p.cc, s)[None] for p in pairs]).astype(np.float32)
    mlo = np.stack([preprocess_file(p.mlo, s)[None] for p in pairs]).astype(np.float32)
    return cc, mlo, np.array([p.label for p in pairs])
