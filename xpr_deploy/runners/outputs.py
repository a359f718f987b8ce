"""Raw runner outputs -> what commands use: P(malignant) and kept-window sets. Plain functions, so
every backend is read the same way."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..bundle import BlockKey, IoNames
from ..config import ModelConfig
from ..errors import PredictError

Selection = dict[BlockKey, np.ndarray]


def probabilities(outputs: Mapping[str, np.ndarray], io: IoNames) -> np.ndarray:
    """P(malignant) [B] as float64, from the `prob` output (softmax of logits where it is missing)."""
    if io.prob in outputs:
        return np.asarray(outputs[io.prob], dtype=np.float64).reshape(-1)
    logits = np.asarray(outputs[io.logits], dtype=np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(e[:, 1] / e.sum(axis=1))


def logits_of(outputs: Mapping[str, np.ndarray], io: IoNames) -> np.ndarray:
    return np.asarray(outputs[io.logits], dtype=np.float64)


def kept_windows(
    outputs: Mapping[str, np.ndarray], selection: Mapping[str, BlockKey], cfg: ModelConfig | None = None
) -> Selection:
    """(view, stage, block) -> kept window indices [B, K]; with `cfg`, dense blocks (K = N, no TopK in
    the graph) are filled with every window so that heatmaps see all blocks."""
    sel = {key: np.asarray(outputs[name]) for name, key in selection.items() if name in outputs}
    if cfg is None:
        return sel
    from ..model.summary import block_table

    batch = next(iter(sel.values())).shape[0] if sel else 1
    out: Selection = {}
    for b in block_table(cfg):
        key = (b.view, b.stage, b.block)
        if key in sel:
            out[key] = sel[key]
        elif b.k >= b.windows:
            out[key] = np.broadcast_to(np.arange(b.windows), (batch, b.windows))
        else:
            raise PredictError(f"no kept-window output for block {key}")
    return out
