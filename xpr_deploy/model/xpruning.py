"""The X-Pruning dual-view classifier: two pruned Swin streams, cross-view fusion, fusion head."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Literal, cast, overload

import timm
import torch
from timm.models.swin_transformer import SwinTransformer, SwinTransformerStage
from torch import nn

from ..config import NUM_STAGES, ModelConfig, get_config
from .ctb import CrossViewFusion
from .ptb import PrunedSwinBlock

VIEWS: tuple[str, str] = ("cc", "mlo")
#: (view, stage 1..4, block index within the stage, 0-based)
BlockKey = tuple[str, int, int]
Selection = dict[BlockKey, torch.Tensor]


def build_stream(cfg: ModelConfig) -> SwinTransformer:
    """A timm Swin-T (no classifier) whose blocks are all pruned transformer blocks."""
    stream = timm.create_model(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        img_size=cfg.img_size,
        in_chans=cfg.in_chans,
        num_classes=0,
        patch_size=cfg.patch_size,
        embed_dim=cfg.embed_dim,
        depths=cfg.depths,
        num_heads=cfg.num_heads,
        window_size=cfg.window_size,
        mlp_ratio=cfg.mlp_ratio,
        drop_path_rate=cfg.drop_path_rate,
    )
    swin = cast(SwinTransformer, stream)
    for stage in stages(swin):
        for blk in stage.blocks:
            blk.__class__ = PrunedSwinBlock  # same parameters, new forward
    return swin


def stages(stream: SwinTransformer) -> list[SwinTransformerStage]:
    """The four stages of a stream, typed (timm's `layers` is an nn.Sequential)."""
    return cast(list[SwinTransformerStage], list(stream.layers))


class FusionHead(nn.Module):
    """Concatenated pooled features of both views -> LN -> MLP -> class logits."""

    def __init__(self, in_dim: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.fc1 = nn.Linear(in_dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class XPruning(nn.Module):
    """Dual-view (CC + MLO) mammography classifier of the X-Pruning paper (SPEC §2)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.cc = build_stream(cfg)
        self.mlo = build_stream(cfg)
        dim4 = cfg.stage_dims[-1]
        self.fusion = CrossViewFusion(dim4, cfg.ctb_heads, cfg.mlp_ratio)
        self.head = FusionHead(2 * dim4, cfg.head_hidden, cfg.num_classes)
        self.set_keep([cfg.keep(s) for s in range(1, NUM_STAGES + 1)])
        self._freeze()

    # ---- pruning -------------------------------------------------------------------------
    def blocks(self) -> Iterator[tuple[BlockKey, PrunedSwinBlock]]:
        for view in VIEWS:
            stream = self.stream(view)
            for s, stage in enumerate(stages(stream), start=1):
                for b, blk in enumerate(stage.blocks):
                    yield (view, s, b), cast(PrunedSwinBlock, blk)

    def set_keep(self, keep: float | Sequence[float]) -> None:
        """Keep ratio per stage (1 - r); used by the warm-up schedule and by dense baselines."""
        keeps = [float(keep)] * NUM_STAGES if isinstance(keep, (int, float)) else list(keep)
        if len(keeps) != NUM_STAGES:
            raise ValueError(f"need {NUM_STAGES} keep ratios, got {len(keeps)}")
        for (_, stage, _), blk in self.blocks():
            blk.keep = keeps[stage - 1]

    @property
    def keep_ratios(self) -> list[float]:
        return [cast(PrunedSwinBlock, st.blocks[0]).keep for st in stages(self.cc)]

    # ---- freezing ------------------------------------------------------------------------
    def frozen_modules(self) -> list[nn.Module]:
        mods: list[nn.Module] = []
        for view in VIEWS:
            stream = self.stream(view)
            mods.append(stream.patch_embed)
            mods.extend(stages(stream)[: self.cfg.frozen_stages])
        return mods

    def _freeze(self) -> None:
        for m in self.frozen_modules():
            m.requires_grad_(False)

    def train(self, mode: bool = True) -> XPruning:
        super().train(mode)
        for m in self.frozen_modules():
            m.eval()  # frozen ImageNet features never see dropout / drop-path
        return self

    # ---- forward -------------------------------------------------------------------------
    def stream(self, view: str) -> SwinTransformer:
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
        return self.cc if view == "cc" else self.mlo

    def _features_before_fusion(self, stream: SwinTransformer, x: torch.Tensor) -> torch.Tensor:
        n_frozen = self.cfg.frozen_stages
        # frozen stages need no autograd graph while training (saves most activation memory);
        # outside training the context is left alone so tracing and export see plain ops
        ctx = torch.no_grad() if self.training and torch.is_grad_enabled() else contextlib.nullcontext()
        with ctx:
            x = stream.patch_embed(x)
            for stage in stages(stream)[:n_frozen]:
                x = stage(x)
        for stage in stages(stream)[n_frozen : NUM_STAGES - 1]:
            x = stage(x)
        return cast(torch.Tensor, stages(stream)[-1].downsample(x))

    def _features_after_fusion(self, stream: SwinTransformer, x: torch.Tensor) -> torch.Tensor:
        x = stages(stream)[-1].blocks(x)
        return cast(torch.Tensor, stream.norm(x)).mean(dim=(1, 2))  # final LN + global average pool (NHWC)

    @overload
    def forward(self, cc: torch.Tensor, mlo: torch.Tensor, return_selection: Literal[False] = ...) -> torch.Tensor: ...
    @overload
    def forward(
        self, cc: torch.Tensor, mlo: torch.Tensor, return_selection: Literal[True]
    ) -> tuple[torch.Tensor, Selection]: ...

    def forward(
        self, cc: torch.Tensor, mlo: torch.Tensor, return_selection: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, Selection]:
        """cc, mlo: [B, 1, H, W] preprocessed views -> logits [B, 2] (benign, malignant)."""
        if cc.shape != mlo.shape:
            raise ValueError(f"cc {tuple(cc.shape)} and mlo {tuple(mlo.shape)} differ in shape")
        expected = (self.cfg.in_chans, *self.cfg.img_size)
        if tuple(cc.shape[1:]) != expected:
            raise ValueError(f"views must be [B, {expected[0]}, {expected[1]}, {expected[2]}], got {tuple(cc.shape)}")
        for _, blk in self.blocks():
            blk.record_selection = return_selection
        try:
            f_cc = self._features_before_fusion(self.cc, cc)
            f_mlo = self._features_before_fusion(self.mlo, mlo)
            f_cc, f_mlo = self.fusion(f_cc, f_mlo)
            pooled = torch.cat(
                [self._features_after_fusion(self.cc, f_cc), self._features_after_fusion(self.mlo, f_mlo)], dim=1
            )
            logits = self.head(pooled)
            if not return_selection:
                return logits
            return logits, self._collect_selection(cc.shape[0], cc.device)
        finally:
            for _, blk in self.blocks():
                blk.record_selection = False
                blk.last_selection = None

    def _collect_selection(self, batch: int, device: torch.device) -> Selection:
        sel: Selection = {}
        for key, blk in self.blocks():
            if blk.last_selection is not None:
                sel[key] = blk.last_selection
            else:  # dense block: every window is kept
                sel[key] = torch.arange(blk.num_windows, device=device).expand(batch, -1)
        return sel


def malignancy_probability(logits: torch.Tensor) -> torch.Tensor:
    """P(malignant) [B] from logits [B, 2]."""
    return torch.softmax(logits.float(), dim=-1)[:, 1]


def build_model(config: ModelConfig | str = "paper", pretrained: str | None = None) -> XPruning:
    """Build X-Pruning; `pretrained` is a local ImageNet Swin-T file (timm safetensors or MS .pth)."""
    cfg = get_config(config) if isinstance(config, str) else config
    model = XPruning(cfg)
    if pretrained is not None:
        from .weights import load_imagenet_swin

        load_imagenet_swin(model, pretrained)
    return model


@contextlib.contextmanager
def _seeded_cpu_rng(seed: int) -> Iterator[None]:
    """torch's global CPU generator seeded as `torch.manual_seed(seed)` seeds it, restored on exit.

    Only the CPU generator is touched (a model is built on the CPU), so the CUDA generators keep
    their state and no seed is queued for a CUDA device that is not initialised yet.
    """
    state = torch.random.get_rng_state()
    torch.random.default_generator.manual_seed(int(seed))
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


def random_model(config: ModelConfig | str = "paper", seed: int = 0) -> XPruning:
    """A random-weight X-Pruning in eval mode, bit for bit the same for the same `seed` and torch.

    Built on the CPU under a seeded generator; the global RNG state is as before afterwards. Bundles
    exported from random weights record the seed, and `xpr validate` rebuilds the model with it.
    """
    with _seeded_cpu_rng(seed), torch.device("cpu"):
        return build_model(config).eval()
