"""The X-Pruning model: pruned blocks against timm, selection, masks, freezing, cross-view fusion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch

from xpr_deploy import build_model
from xpr_deploy.config import get_config, static_k, warmup_keep
from xpr_deploy.model.ptb import PrunedSwinBlock
from xpr_deploy.model.xpruning import XPruning

TINY = get_config("tiny")


def _timm_reference(cfg):
    return timm.create_model(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        img_size=cfg.img_size,
        in_chans=cfg.in_chans,
        num_classes=0,
        embed_dim=cfg.embed_dim,
        depths=cfg.depths,
        num_heads=cfg.num_heads,
        window_size=cfg.window_size,
    ).eval()


def _windows(x: torch.Tensor, ws: int) -> torch.Tensor:
    """[B, H, W, C] -> [B, N, ws*ws, C], written out here independently of timm's helper."""
    b, h, w, c = x.shape
    return x.reshape(b, h // ws, ws, w // ws, ws, c).transpose(2, 3).reshape(b, (h // ws) * (w // ws), ws * ws, c)


def _block_input(blk: PrunedSwinBlock, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """Features with clearly separated window norms (no ties), boundary windows strongest."""
    g = torch.Generator().manual_seed(seed)
    h, w = blk.input_resolution
    x = torch.randn(batch, h, w, blk.dim, generator=g)
    x = x * (0.5 + torch.rand(batch, h, w, 1, generator=g))
    x[:, -4:, :, :] *= 3.0  # the rows the shift wraps around: their windows carry the -100 mask
    x[:, :, -4:, :] *= 3.0
    return x


@pytest.fixture(scope="module")
def tiny_model() -> XPruning:
    torch.manual_seed(0)
    return build_model(TINY).eval()


def test_static_k_and_warmup() -> None:
    assert static_k(0.5, 3072) == 1536
    assert static_k(0.5, 2) == 1
    assert static_k(1.0, 48) == 48
    assert static_k(0.7, 10) == 7
    assert warmup_keep(0, 4, 0.5) == 1.0
    assert warmup_keep(2, 4, 0.5) == pytest.approx(0.75)
    assert warmup_keep(4, 4, 0.5) == 0.5
    assert warmup_keep(9, 4, 0.5) == 0.5
    assert warmup_keep(0, 0, 0.5) == 0.5


def test_unpruned_stream_equals_timm_exactly(tiny_model: XPruning) -> None:
    tiny_model.set_keep(1.0)
    try:
        x = torch.randn(2, 1, *TINY.img_size)
        for view in ("cc", "mlo"):
            stream = tiny_model.stream(view)
            ref = _timm_reference(TINY)
            ref.load_state_dict(stream.state_dict())
            with torch.no_grad():
                assert torch.equal(stream.forward_features(x), ref.forward_features(x))
    finally:
        tiny_model.set_keep([TINY.keep(s) for s in range(1, 5)])


@pytest.mark.parametrize("block_index", [0, 1], ids=["regular", "shifted"])
def test_pruned_block_selection_replication_and_mask(tiny_model: XPruning, block_index: int) -> None:
    blk = tiny_model.cc.layers[0].blocks[block_index]
    assert isinstance(blk, PrunedSwinBlock)
    assert any(blk.shift_size) == (block_index == 1)
    x = _block_input(blk)
    ws = blk.window_size[0]
    sh = blk.shift_size[0]
    k = blk.k
    assert k == math.ceil(0.5 * blk.num_windows) < blk.num_windows

    blk.record_selection = True
    try:
        with torch.no_grad():
            out = blk(x)
            dense = PrunedSwinBlock.__mro__[1].forward(blk, x)  # timm's own forward: every window
        kept = blk.last_selection
    finally:
        blk.record_selection = False
        blk.last_selection = None
    assert kept is not None and kept.shape == (2, k)

    # the kept set is the top-K of the score computed here, in the shifted partition for shifted blocks
    xs = torch.roll(x, (-sh, -sh), (1, 2))
    scores = _windows(xs, ws).double().pow(2).sum(-1).sqrt().mean(-1)
    expected = torch.topk(scores, k, dim=1).indices
    for b in range(2):
        assert set(kept[b].tolist()) == set(expected[b].tolist())

    win_in = _windows(xs, ws)
    win_out = _windows(torch.roll(out, (-sh, -sh), (1, 2)), ws)
    win_dense = _windows(torch.roll(dense, (-sh, -sh), (1, 2)), ws)
    n = blk.num_windows
    for b in range(2):
        kept_b = torch.zeros(n, dtype=torch.bool)
        kept_b[kept[b]] = True
        # pruned windows are replicated bit for bit
        assert torch.equal(win_out[b, ~kept_b], win_in[b, ~kept_b])
        # kept windows get exactly what the dense block computes there (same window, same shift mask)
        torch.testing.assert_close(win_out[b, kept_b], win_dense[b, kept_b], rtol=1e-5, atol=1e-5)
    if block_index == 1:
        # the boundary windows (the ones with a -100 mask) were selected, so the mask was exercised
        mask = blk.attn_mask
        assert mask is not None
        masked = (mask != 0).flatten(1).any(1)
        assert masked[kept[0]].any()


def test_selection_output(tiny_model: XPruning) -> None:
    cc, mlo = torch.randn(2, 1, *TINY.img_size), torch.randn(2, 1, *TINY.img_size)
    with torch.no_grad():
        logits, sel = tiny_model(cc, mlo, return_selection=True)
        plain = tiny_model(cc, mlo)
    assert logits.shape == (2, 2)
    torch.testing.assert_close(logits, plain)
    assert len(sel) == 2 * sum(TINY.depths)
    assert sel[("cc", 1, 0)].shape == (2, static_k(0.5, TINY.num_windows(1)))
    assert sel[("mlo", 4, 1)].shape == (2, 1)
    for (_, stage, _), idx in sel.items():
        assert int(idx.max()) < TINY.num_windows(stage)
    # no state is left behind on the blocks
    assert all(blk.last_selection is None for _, blk in tiny_model.blocks())


def test_bad_input_shape(tiny_model: XPruning) -> None:
    with pytest.raises(ValueError, match="views must be"):
        tiny_model(torch.randn(1, 1, 224, 224), torch.randn(1, 1, 224, 224))
    with pytest.raises(ValueError, match="differ"):
        tiny_model(torch.randn(1, 1, *TINY.img_size), torch.randn(2, 1, *TINY.img_size))


def test_frozen_parameters_do_not_train() -> None:
    torch.manual_seed(0)
    model = build_model(TINY).train()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.split(".")[1] in ("patch_embed", "layers") for n in frozen), (
        "only patch embedding and early stages are frozen"
    )
    assert any(n.startswith("cc.layers.1.") for n in frozen) and not any(n.startswith("cc.layers.2.") for n in frozen)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    cc, mlo = torch.randn(2, 1, *TINY.img_size), torch.randn(2, 1, *TINY.img_size)
    loss = torch.nn.functional.cross_entropy(model(cc, mlo), torch.tensor([0, 1]))
    loss.backward()
    for n, p in model.named_parameters():
        if n in frozen:
            assert p.grad is None, n
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert not (changed & frozen)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    # every trainable tensor that received a gradient moved (stage 3/4, CTB, head)
    assert {"fusion.cc_from_mlo.attn.q.weight", "head.fc2.weight", "cc.layers.2.blocks.0.attn.qkv.weight"} <= changed
    assert len(changed) > 0.9 * len(trainable)


def test_cross_view_block_mixes_views(tiny_model: XPruning) -> None:
    dim = TINY.stage_dims[-1]
    gh, gw = TINY.stage_grid(4)
    cc, mlo = torch.randn(1, gh, gw, dim), torch.randn(1, gh, gw, dim)
    with torch.no_grad():
        cc_a, mlo_a = tiny_model.fusion(cc, mlo)
        cc_b, mlo_b = tiny_model.fusion(cc, mlo + torch.randn_like(mlo))
        _, mlo_c = tiny_model.fusion(cc + torch.randn_like(cc), mlo)
    assert not torch.allclose(cc_a, cc_b)  # CC output reads MLO
    assert not torch.allclose(mlo_a, mlo_c)  # MLO output reads CC
    assert torch.equal(mlo_a, mlo_b) is False and cc_a.shape == cc.shape
    # and through the whole model: changing only the MLO view changes the CC stream's fused features
    x = torch.randn(1, 1, *TINY.img_size)
    with torch.no_grad():
        f_cc = tiny_model._features_before_fusion(tiny_model.cc, x)
        f1 = tiny_model._features_before_fusion(tiny_model.mlo, torch.randn(1, 1, *TINY.img_size))
        f2 = tiny_model._features_before_fusion(tiny_model.mlo, torch.randn(1, 1, *TINY.img_size))
        p1 = tiny_model._features_after_fusion(tiny_model.cc, tiny_model.fusion(f_cc, f1)[0])
        p2 = tiny_model._features_after_fusion(tiny_model.cc, tiny_model.fusion(f_cc, f2)[0])
    assert not torch.allclose(p1, p2)


def test_per_stage_rates_and_keep() -> None:
    cfg = TINY.with_prune_rates((0.0, 0.25, 0.5, 0.5))
    model = build_model(cfg)
    assert model.keep_ratios == [1.0, 0.75, 0.5, 0.5]
    assert model.cc.layers[0].blocks[0].k == TINY.num_windows(1)  # r = 0: dense, no TopK
    assert model.cc.layers[1].blocks[0].k == static_k(0.75, TINY.num_windows(2))
    model.set_keep(1.0)
    assert all(blk.k == blk.num_windows for _, blk in model.blocks())
    with pytest.raises(ValueError):
        get_config("tiny").with_prune_rates(1.0)


@pytest.mark.slow
def test_paper_config_forward() -> None:
    cfg = get_config("paper")
    assert cfg.num_windows(1) == 3072 and cfg.num_windows(4) == 48
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    x = torch.randn(1, 1, *cfg.img_size)
    with torch.no_grad():
        logits, sel = model(x, 0.5 * x, return_selection=True)
    assert logits.shape == (1, 2) and torch.isfinite(logits).all()
    assert sel[("cc", 1, 0)].shape == (1, 1536)
    assert sel[("mlo", 3, 5)].shape == (1, 96)


def test_block_table_matches_the_model(tiny_model: XPruning) -> None:
    """`xpr info` and the manifest describe the blocks the model really runs (timm's shift rule included)."""
    from xpr_deploy.model.summary import block_table

    rows = block_table(TINY)
    blocks = dict(tiny_model.blocks())
    assert len(rows) == len(blocks)
    for row in rows:
        blk = blocks[(row.view, row.stage, row.block)]
        assert row.windows == blk.num_windows and row.k == blk.k
        assert row.shift == tuple(blk.shift_size) and row.shifted == any(blk.shift_size)
    assert next(r for r in rows if (r.stage, r.block) == (4, 1)).shift == (3, 0)  # 14x7 map: rows only


# ---- the mask table and the token-norm window scores (issue 16) ----------------------------------
@pytest.mark.parametrize(
    ("hw", "shift", "n_masks"),
    [((112, 56), (3, 3), 4), ((14, 7), (3, 0), 2), ((672, 224), (3, 3), 4), ((28, 28), (3, 3), 4)],
    ids=["tiny-s1", "tiny-s4-rows-only", "paper-s1", "square"],
)
def test_mask_table_reproduces_timms_dense_masks(hw, shift, n_masks) -> None:
    from timm.models.swin_transformer import SwinTransformerBlock

    from xpr_deploy.model.ptb import window_mask_table

    blk = SwinTransformerBlock(8, hw, num_heads=1, window_size=7, shift_size=max(shift))
    if shift[1] == 0:  # timm drops the shift along an axis the window covers (the 7-wide map)
        assert tuple(blk.shift_size) == shift
    dense = blk.attn_mask
    assert dense is not None and dense.shape == ((hw[0] // 7) * (hw[1] // 7), 49, 49)
    table, index = window_mask_table(*hw, (7, 7), tuple(blk.shift_size))
    assert table.shape == (n_masks, 49, 49) and table.dtype == np.float32
    assert index.shape == (dense.shape[0],) and index.dtype == np.int64
    assert torch.equal(torch.from_numpy(table[index]), dense)  # bit for bit timm's masks


def _scores_of_gathered_windows(x: torch.Tensor, blk: PrunedSwinBlock) -> torch.Tensor:
    """The score as scored before issue 16: roll, partition, norm over channels, mean over the window."""
    sh, sw = blk.shift_size
    xs = torch.roll(x, (-sh, -sw), (1, 2))
    return torch.linalg.vector_norm(_windows(xs, blk.window_size[0]).float(), dim=-1).mean(dim=-1)


def _tied_inputs(blk: PrunedSwinBlock) -> dict[str, torch.Tensor]:
    """Inputs where many windows score exactly the same (the all-background case), plus random ones."""
    g = torch.Generator().manual_seed(5)
    h, w = blk.input_resolution
    c = blk.dim
    ln = torch.nn.functional.layer_norm(torch.randn(2, h, w, c, generator=g), (c,))  # norms ~ sqrt(C), near ties
    const = torch.zeros(2, h, w, c)
    const[1] = 1.0
    half = torch.randn(2, h, w, c, generator=g)
    half[:, h // 2 :] = 0.25  # the lower half: identical windows
    return {"random": _block_input(blk, seed=3), "layernormed": ln, "constant": const, "half-tied": half}


@pytest.mark.parametrize("block_index", [0, 1], ids=["regular", "shifted"])
def test_token_norm_scores_and_selection_equal_the_window_gather_path(tiny_model: XPruning, block_index) -> None:
    from xpr_deploy.model.ptb import select_windows, token_index_tensor, window_scores

    for stage in range(4):
        blk = tiny_model.cc.layers[stage].blocks[block_index]
        h, w = blk.input_resolution
        tok = token_index_tensor(h, w, tuple(blk.window_size), tuple(blk.shift_size), torch.device("cpu"))
        for name, x in _tied_inputs(blk).items():
            new, old = window_scores(x, tok), _scores_of_gathered_windows(x, blk)
            assert torch.equal(new, old), (stage, name)  # same FP32 bits, so ties stay ties
            assert torch.equal(select_windows(new, blk.k), select_windows(old, blk.k)), (stage, name)
            if name == "constant":
                assert (new[0] == new[0, 0]).all()  # really tied: the order comes from the tie rule


def test_pruned_block_equals_the_dense_mask_window_gather_form(tiny_model: XPruning) -> None:
    """Block outputs bit for bit those of the pre-issue-16 form (dense timm mask, all windows gathered)."""
    for stage in range(3):
        blk = tiny_model.cc.layers[stage].blocks[1]  # shifted: the mask is used
        x = _tied_inputs(blk)["random"]
        b, h, w, c = x.shape
        ws, (sh, sw), k = blk.window_size[0], blk.shift_size, blk.k
        with torch.no_grad():
            out = blk(x)
            win = _windows(torch.roll(x, (-sh, -sw), (1, 2)), ws)  # [B, N, 49, C]
            idx = torch.sort(_scores_of_gathered_windows(x, blk), dim=1, descending=True, stable=True).indices[:, :k]
            kept = win[torch.arange(b)[:, None], idx].reshape(b * k, ws * ws, c)
            kept = kept + blk.attn(blk.norm1(kept), mask=blk.attn_mask[idx.reshape(-1)])
            kept = kept + blk.mlp(blk.norm2(kept))
            win[torch.arange(b)[:, None], idx] = kept.reshape(b, k, ws * ws, c)
            grid = win.reshape(b, h // ws, w // ws, ws, ws, c).transpose(2, 3).reshape(b, h, w, c)
            ref = torch.roll(grid, (sh, sw), (1, 2))
        assert torch.equal(out, ref), stage
