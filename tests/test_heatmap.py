"""Selection maps mark exactly the windows the blocks kept (shift undone), and land on the right stored pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb

from xpr_deploy import build_model
from xpr_deploy.config import get_config
from xpr_deploy.data.dicom import Geometry
from xpr_deploy.heatmap import COUNT_COLOURS, ViewImage, count_maps, overlay_rgba, render, to_input_pixels, to_stored
from xpr_deploy.model.summary import block_table

CFG = get_config("tiny")  # 448x224; stage 1: 112x56 tokens, 16x8 windows, blocks 0 (plain) and 1 (shifted)


def _selection(kept: dict[tuple[str, int, int], list[int]]) -> dict[tuple[str, int, int], np.ndarray]:
    sel = {(b.view, b.stage, b.block): np.zeros((1, 0), dtype=np.int64) for b in block_table(CFG)}
    for key, idx in kept.items():
        sel[key] = np.asarray([idx], dtype=np.int64)
    return sel


def test_counts_mark_kept_windows_and_undo_the_shift() -> None:
    # block 0 keeps windows 0 and 9 (row 1, col 1); block 1 (shifted by 3 tokens) keeps 0 and the last one
    sel = _selection({("cc", 1, 0): [0, 9], ("cc", 1, 1): [0, 127]})
    m = count_maps(sel, CFG)["cc"][1]
    assert m.shape == CFG.stage_grid(1) == (112, 56)
    expect = np.zeros((112, 56), dtype=np.int32)
    expect[0:7, 0:7] += 1  # block 0, window 0
    expect[7:14, 7:14] += 1  # block 0, window 9
    expect[3:10, 3:10] += 1  # block 1, window 0 of the rolled map = tokens 3..9
    rows = [*range(108, 112), *range(0, 3)]  # block 1, window (15, 7): tokens 108..114 mod 112, wraps
    cols = [*range(52, 56), *range(0, 3)]
    expect[np.ix_(rows, cols)] += 1
    np.testing.assert_array_equal(m, expect)
    assert m[4, 4] == 2 and m[8, 8] == 2 and m[0, 0] == 2 and m[20, 20] == 0
    # the other view and stages saw nothing
    assert count_maps(sel, CFG)["mlo"][1].sum() == 0 and count_maps(sel, CFG)["cc"][2].sum() == 0


def test_shift_only_along_dimensions_larger_than_a_window_and_bad_index() -> None:
    # stage 4 of tiny: 14x7 tokens, a 2x1 window grid; timm shifts block 1 by 3 rows and 0 columns
    m = count_maps(_selection({("cc", 4, 0): [1]}), CFG)["cc"][4]
    assert m[7:, :].all() and m[:7, :].sum() == 0
    m = count_maps(_selection({("cc", 4, 1): [1]}), CFG)["cc"][4]
    assert m[[10, 11, 12, 13, 0, 1, 2], :].all() and m[3:10, :].sum() == 0
    with pytest.raises(ValueError, match="outside"):
        count_maps(_selection({("cc", 1, 0): [128]}), CFG)


def test_overlay_lands_on_the_stored_pixels_under_kept_windows() -> None:
    sel = _selection({("cc", 1, 0): [0]})
    px = to_input_pixels(count_maps(sel, CFG)["cc"][1], CFG, 1)
    assert px.shape == (448, 224) and px[:28, :28].all() and px.sum() == 28 * 28
    # stored image 1000x600, chest wall was on the right (flipped), crop 896x448 -> exactly 2x
    geo = Geometry(rows=1000, cols=600, flipped=True, crop=(100, 995, 50, 497), out_size=(448, 224))
    stored = to_stored(px, geo)
    assert stored.shape == (1000, 600)
    # model pixels 0..27 -> oriented rows 100..155, cols 50..105 -> stored cols 599-105 .. 599-50
    kept = np.zeros_like(stored, dtype=bool)
    kept[100:156, 494:550] = True
    assert (stored[kept] == 1).all()
    inside = np.zeros_like(kept)
    inside[100:996, 102:550] = True
    assert (stored[inside & ~kept] == 0).all()
    assert (stored[~inside] == -1).all()
    rgba = overlay_rgba(stored, max_count=2)
    assert np.allclose(rgba[120, 520, :3], to_rgb(COUNT_COLOURS[1])) and rgba[120, 520, 3] > 0
    assert np.allclose(rgba[500, 300, :3], to_rgb(COUNT_COLOURS[0])) and rgba[500, 300, 3] > 0
    assert rgba[10, 10, 3] == 0  # outside the crop: nothing drawn
    assert (rgba[kept][:, 3] > rgba[inside & ~kept][:, 3].max()).all()


def test_model_selection_counts_conserve_k_and_render_both_views(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(CFG).eval()
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 448), torch.linspace(-1, 1, 224), indexing="ij")
    img = (torch.exp(-((yy - 0.2) ** 2 + (xx + 0.3) ** 2) * 20) * 3 + 0.1 * torch.randn(448, 224))[None, None]
    with torch.no_grad():
        _logits, sel = model(img, img.flip(-2), return_selection=True)
    maps = count_maps(sel, CFG)
    for view in ("cc", "mlo"):
        for s in range(1, 5):
            blocks = [b for b in block_table(CFG) if b.view == view and b.stage == s]
            assert maps[view][s].sum() == sum(b.k * 49 for b in blocks)
            assert maps[view][s].max() <= len(blocks)
    disp = ((img[0, 0] - img.min()) / (img.max() - img.min())).numpy()
    out = render(
        tmp_path / "breast.png",
        {"cc": ViewImage(disp, None, "R CC"), "mlo": ViewImage(disp[::-1].copy(), None, "R MLO")},
        maps,
        CFG,
        title="synthetic · R breast · P(malignant) 0.500",
    )
    import matplotlib.image as mpimg

    png = mpimg.imread(out)
    assert png.ndim == 3 and png.shape[1] > png.shape[0]  # views side by side: a wide figure


def test_counts_agree_with_the_blocks_own_partition() -> None:
    """Every block: the tokens the map marks are exactly the tokens the block's (shifted) windows hold."""
    from xpr_deploy.model.ptb import window_token_index

    model = build_model(CFG)
    rng = np.random.default_rng(0)
    for (view, stage, block), blk in model.blocks():
        h, w = blk.input_resolution
        idx = rng.choice(blk.num_windows, size=blk.k, replace=False)
        m = count_maps(_selection({(view, stage, block): idx.tolist()}), CFG)[view][stage]
        tokens = window_token_index(h, w, tuple(blk.window_size), tuple(blk.shift_size))[idx].reshape(-1)
        expect = np.zeros(h * w, dtype=np.int32)
        expect[tokens] = 1
        np.testing.assert_array_equal(m.reshape(-1), expect, err_msg=str((view, stage, block)))
