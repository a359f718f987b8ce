"""Window-selection maps: which image regions each stage's pruned blocks attended to.

In the spirit of the paper's Figure 2: per stage, count how many of the stage's blocks kept each
window; gray = never kept, then yellow (1), blue (2), red (3), ... Kept indices of a shifted block
number the windows of the rolled map (`torch.roll` by -shift), so they are rolled back by +shift
before counting: the count map lives on the token grid, not on one window partition.

The maps are drawn over the stored images (the orientation a viewer shows), mapped back through
the preprocessing geometry (flip + crop + resize), nearest neighbour so counts stay integers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import NUM_STAGES, ModelConfig
from .model.summary import block_table

if TYPE_CHECKING:
    from .data.dicom import Geometry

#: (view, stage 1..4, block 0-based) -> kept window indices, [K] or [B, K]
SelectionLike = Mapping[tuple[str, int, int], Any]

#: count -> colour: 0 gray (never kept), then the paper's yellow, blue, red, and more for deep stages
COUNT_COLOURS = ("#8c8c8c", "#ffd700", "#1e6bff", "#e8161b", "#a43cf0", "#00b35a", "#ff8c00")
OVERLAY_ALPHA = 0.45
NEVER_ALPHA = 0.30


def _indices(value: Any, batch_index: int) -> np.ndarray:
    arr = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
    if arr.ndim == 2:
        arr = arr[batch_index]
    return arr.astype(np.int64).reshape(-1)


def count_maps(selection: SelectionLike, cfg: ModelConfig, batch_index: int = 0) -> dict[str, dict[int, np.ndarray]]:
    """{view: {stage: int [rows, cols] on the stage's token grid}}: how many blocks kept each token's window."""
    ws = cfg.window_size
    out: dict[str, dict[int, np.ndarray]] = {}
    for blk in block_table(cfg):
        key = (blk.view, blk.stage, blk.block)
        gh, gw = cfg.stage_grid(blk.stage)
        maps = out.setdefault(blk.view, {})
        if blk.stage not in maps:
            maps[blk.stage] = np.zeros((gh, gw), dtype=np.int32)
        if key not in selection:
            raise KeyError(f"selection has no entry for view {blk.view} stage {blk.stage} block {blk.block}")
        idx = _indices(selection[key], batch_index)
        if idx.size and (idx.min() < 0 or idx.max() >= blk.windows):
            raise ValueError(f"selection {key}: window index outside 0..{blk.windows - 1}")
        kept = np.zeros(blk.windows, dtype=bool)
        kept[idx] = True
        nh, nw = blk.window_grid
        tokens = np.repeat(np.repeat(kept.reshape(nh, nw), ws, axis=0), ws, axis=1)
        if blk.shifted:  # window (r, c) of the rolled map covers tokens (r*ws + shift ...) mod size
            tokens = np.roll(tokens, shift=blk.shift, axis=(0, 1))
        maps[blk.stage] += tokens
    return out


def to_input_pixels(token_map: np.ndarray, cfg: ModelConfig, stage: int) -> np.ndarray:
    """A stage's token-grid map upsampled to the model input (each token is 4 * 2^(stage-1) pixels)."""
    f = cfg.patch_size * 2 ** (stage - 1)
    return np.repeat(np.repeat(token_map, f, axis=0), f, axis=1)


def to_stored(model_map: np.ndarray, geo: Geometry, fill: int = -1) -> np.ndarray:
    """A map on the model input grid onto the stored image, nearest neighbour; `fill` outside the crop."""
    r0, r1, c0, c1 = geo.crop
    h, w = model_map.shape
    ch, cw = r1 - r0 + 1, c1 - c0 + 1
    # stored oriented pixel r covers model row floor((r - r0 + 0.5) * H / ch)
    ri = np.minimum(((np.arange(ch) + 0.5) * h / ch).astype(np.int64), h - 1)
    ci = np.minimum(((np.arange(cw) + 0.5) * w / cw).astype(np.int64), w - 1)
    out = np.full((geo.rows, geo.cols), fill, dtype=model_map.dtype)
    out[r0 : r1 + 1, c0 : c1 + 1] = model_map[np.ix_(ri, ci)]
    return out[:, ::-1].copy() if geo.flipped else out


def overlay_rgba(counts: np.ndarray, max_count: int) -> np.ndarray:
    """RGBA [rows, cols, 4] float for a count map; negative counts (outside the model input) are transparent."""
    from matplotlib.colors import to_rgb

    colours = np.array([to_rgb(COUNT_COLOURS[min(i, len(COUNT_COLOURS) - 1)]) for i in range(max_count + 1)])
    rgba = np.zeros((*counts.shape, 4), dtype=np.float32)
    inside = counts >= 0
    c = np.clip(counts, 0, max_count)
    rgba[..., :3] = colours[c]
    rgba[..., 3] = np.where(inside, np.where(c > 0, OVERLAY_ALPHA, NEVER_ALPHA), 0.0)
    return rgba


@dataclass
class ViewImage:
    """What one panel shows: the display image in [0, 1] and how the model input maps onto it."""

    image: np.ndarray  # [rows, cols] float, brighter = denser
    geometry: Geometry | None = None  # None: `image` is the model input itself
    label: str = ""  # e.g. "R CC"


def _display_step(shape: tuple[int, int], max_rows: int) -> int:
    return max(1, int(np.ceil(shape[0] / max_rows)))


def render(
    out_path: str | Path,
    views: Mapping[str, ViewImage],
    counts: Mapping[str, Mapping[int, np.ndarray]],
    cfg: ModelConfig,
    title: str,
    subtitle: str = "",
    stages: Sequence[int] = tuple(range(1, NUM_STAGES + 1)),
    max_rows: int = 900,
) -> Path:
    """One PNG: per view the image, then one panel per stage with its selection map; views side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from .io import write_figure

    order = [v for v in ("cc", "mlo") if v in views]
    ncols = len(order) * (1 + len(stages))
    first = views[order[0]].image
    aspect = first.shape[0] / first.shape[1]
    panel_w = 1.9
    fig, axes = plt.subplots(
        1, ncols, figsize=(panel_w * ncols, panel_w * aspect + 1.6), squeeze=False, gridspec_kw={"wspace": 0.04}
    )
    depths = {s: cfg.depths[s - 1] for s in stages}
    for vi, view in enumerate(order):
        vimg = views[view]
        step = _display_step(vimg.image.shape, max_rows)
        img = vimg.image[::step, ::step]
        label = vimg.label or view.upper()
        base = vi * (1 + len(stages))
        ax = axes[0, base]
        ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="bilinear")
        ax.set_title(label, fontsize=10, fontweight="bold")
        for j, s in enumerate(stages):
            px = to_input_pixels(counts[view][s], cfg, s)
            m = to_stored(px, vimg.geometry) if vimg.geometry is not None else px
            ax = axes[0, base + 1 + j]
            ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="bilinear")
            ax.imshow(overlay_rgba(m[::step, ::step], depths[s]), interpolation="nearest")
            grid = cfg.window_grid(s)
            ax.set_title(f"{label} · stage {s}\n{depths[s]} blocks, {grid[0]}x{grid[1]} windows", fontsize=8)
    for ax in axes[0]:
        ax.set_xticks([])
        ax.set_yticks([])
    top = max(depths.values())
    handles = [Patch(facecolor=COUNT_COLOURS[0], alpha=0.8, label="never kept")]
    for n in range(1, top + 1):
        colour = COUNT_COLOURS[min(n, len(COUNT_COLOURS) - 1)]
        handles.append(Patch(facecolor=colour, alpha=0.8, label=f"kept by {n} block{'s' if n > 1 else ''}"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=12, fontweight="bold")
    if subtitle:
        fig.text(0.5, 0.905, subtitle, ha="center", fontsize=9, color="#444444")
    fig.subplots_adjust(left=0.01, right=0.99, top=0.84, bottom=0.08)
    return write_figure(fig, out_path, dpi=110)
