"""Synthetic inputs for timing: a pair of views shaped like the model's input."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def example_views(shape: Sequence[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two float32 views of `shape` [B, 1, H, W]: a smooth breast-like blob plus noise.

    Timing does not depend on the pixel values except through which windows are kept; smooth
    content with a bright region avoids the exact score ties of pure noise.
    """
    rng = np.random.default_rng(seed)
    b, c, h, w = (int(s) for s in shape)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for _ in range(2):
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.0, 0.3) * w
        blob = np.exp(-(((yy - cy) / (0.35 * h)) ** 2 + ((xx - cx) / (0.6 * w)) ** 2))
        img = blob[None, None] * 2.0 - 1.0 + 0.1 * rng.standard_normal((b, c, h, w), dtype=np.float32)
        out.append(np.ascontiguousarray(img, dtype=np.float32))
    return out[0], out[1]
