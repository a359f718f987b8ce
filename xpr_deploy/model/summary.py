"""Static facts about a config: parameters, per-block window grids and K, multiply-adds dense vs pruned."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, cast

from ..config import NUM_STAGES, ModelConfig, static_k


@dataclass(frozen=True)
class BlockInfo:
    view: str
    stage: int  # 1..4
    block: int  # 0-based within the stage
    window_grid: tuple[int, int]
    windows: int
    k: int
    shifted: bool
    #: cyclic shift (rows, cols) of this block; timm leaves a dimension no larger than a window unshifted
    shift: tuple[int, int]
    dim: int
    heads: int


def block_table(cfg: ModelConfig) -> list[BlockInfo]:
    rows = []
    for view in ("cc", "mlo"):
        for s in range(1, NUM_STAGES + 1):
            grid = cfg.window_grid(s)
            n = grid[0] * grid[1]
            half = cfg.window_size // 2
            shift = tuple(half if size > cfg.window_size else 0 for size in cfg.stage_grid(s))
            for b in range(cfg.depths[s - 1]):
                blk_shift = cast(tuple[int, int], shift if b % 2 == 1 else (0, 0))
                rows.append(
                    BlockInfo(
                        view=view,
                        stage=s,
                        block=b,
                        window_grid=grid,
                        windows=n,
                        k=static_k(cfg.keep(s), n),
                        shifted=any(blk_shift),
                        shift=blk_shift,
                        dim=cfg.stage_dims[s - 1],
                        heads=cfg.num_heads[s - 1],
                    )
                )
    return rows


def _block_macs(tokens: int, dim: int, window_area: int) -> int:
    # qkv 3C^2 + proj C^2 + MLP 8C^2 per token, plus QK^T and AV inside the window
    return tokens * (12 * dim * dim + 2 * window_area * dim)


def macs(cfg: ModelConfig, pruned: bool = True) -> int:
    """Multiply-adds of one forward (batch 1, both views), LayerNorms and softmax left out."""
    wa = cfg.window_size**2
    total = 0
    for blk in block_table(cfg):
        kept = blk.k if pruned else blk.windows
        total += _block_macs(kept * wa, blk.dim, wa)
    tokens1 = cfg.stage_grid(1)[0] * cfg.stage_grid(1)[1]
    per_view = tokens1 * cfg.in_chans * cfg.patch_size**2 * cfg.embed_dim  # patch embedding
    for s in range(2, NUM_STAGES + 1):
        gh, gw = cfg.stage_grid(s)
        c_in = cfg.stage_dims[s - 2]
        per_view += gh * gw * 4 * c_in * 2 * c_in  # patch merging: 4C -> 2C
    total += 2 * per_view
    t = cfg.stage_grid(NUM_STAGES)[0] * cfg.stage_grid(NUM_STAGES)[1]
    c = cfg.stage_dims[-1]
    total += 2 * (12 * t * c * c + 2 * t * t * c)  # two cross-view blocks, global attention
    d = 2 * c
    total += d * cfg.head_hidden + cfg.head_hidden * cfg.num_classes
    return total


def summarize(cfg: ModelConfig) -> dict[str, Any]:
    """What `xpr info` prints; parameters are counted on a real instance of the model."""
    import torch

    from .xpruning import XPruning

    with torch.device("meta"):
        model = XPruning(cfg)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    dense, pruned = macs(cfg, pruned=False), macs(cfg, pruned=True)
    return {
        "config": cfg.name,
        "img_size": list(cfg.img_size),
        "prune_rates": list(cfg.prune_rates),
        "params_total": total,
        "params_trainable": trainable,
        "params_frozen": total - trainable,
        "macs_dense": dense,
        "macs_pruned": pruned,
        "macs_ratio": pruned / dense,
        "blocks": [asdict(b) for b in block_table(cfg)],
    }
