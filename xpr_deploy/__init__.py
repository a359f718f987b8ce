"""xpr: the deployment toolkit for X-Pruning (dual-view window-pruned Swin + cross-attention)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:
    from .config import ModelConfig
    from .model.xpruning import XPruning


def build_model(config: ModelConfig | str = "paper", pretrained: str | None = None) -> XPruning:
    """Build the X-Pruning model (`config` a preset name or ModelConfig; `pretrained` a local Swin-T file)."""
    from .model.xpruning import build_model as _build

    return _build(config, pretrained)


def load_checkpoint(path: str, device: str = "cpu") -> tuple[XPruning, dict[str, Any]]:
    """(model in eval mode, metadata) from a checkpoint written by `xpr train`."""
    from .train.checkpoint import load_checkpoint as _load

    return _load(path, device=device)


__all__ = ["__version__", "build_model", "load_checkpoint"]
