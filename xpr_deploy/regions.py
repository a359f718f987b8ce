"""Where the model looked, as a region a viewer draws on the mammogram (SR SCOORD, CAD SR marks).

The region is derived from the window-selection heatmap on the stored pixel grid
(`dicom_out.stage_heatmaps`: per stage, the fraction of the stage's pruned blocks that kept the
window covering each pixel). Rule: the **deepest stage's most-kept windows** — the pixels whose
last-stage fraction is the highest on that image (every last-stage block kept them, where any
window was kept by all), their largest connected part, outlined by its bounding rectangle in
stored pixel coordinates. Why the last stage: its windows are what the classifier head pooled;
earlier stages keep half the image or more and outline little. Why a rectangle: the kept windows
are axis-aligned 7x7-token squares, so the outline of one connected group is at most a few
rectangles; its bounding box is one closed POLYLINE that every viewer draws (OHIF, Weasis, CAD
workstations) and stays small in the SR.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Region:
    """A closed rectangle on the stored pixel grid (columns x, rows y, pixel edges: 0 .. cols / rows)."""

    x0: float
    y0: float
    x1: float
    y1: float
    level: float  # the last-stage kept fraction inside (1.0: kept by every last-stage block)

    def polyline(self) -> np.ndarray:
        """[5, 2] float32 (column, row) points, first == last: a closed POLYLINE (PS3.3 C.18.6.1.2:
        (0, 0) is the top-left corner of the top-left pixel)."""
        pts = [(self.x0, self.y0), (self.x1, self.y0), (self.x1, self.y1), (self.x0, self.y1), (self.x0, self.y0)]
        return np.asarray(pts, dtype=np.float32)

    @property
    def center(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0


def attention_region(maps: np.ndarray, tol: float = 1e-6) -> Region | None:
    """The region of one image from its stage heatmaps `maps` [stages, rows, cols] (values in [0, 1]);
    None when the last stage kept no window on the image (nothing to draw)."""
    from scipy import ndimage

    if maps.ndim != 3 or maps.shape[0] < 1:
        raise ValueError(f"stage heatmaps must be [stages, rows, cols], got shape {tuple(maps.shape)}")
    last = np.asarray(maps[-1], dtype=np.float32)
    top = float(last.max()) if last.size else 0.0
    if not np.isfinite(top) or top <= 0.0:
        return None
    mask = last >= top - tol
    labels, n = ndimage.label(mask)
    if n > 1:  # the largest part; ties: the first in raster order (deterministic)
        sizes = np.bincount(labels.ravel())[1:]
        mask = labels == 1 + int(np.argmax(sizes))
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return Region(float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1), top)
