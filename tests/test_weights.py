"""ImageNet Swin-T weights from local files: timm safetensors and the Microsoft .pth layout."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from xpr_deploy import build_model
from xpr_deploy.config import get_config
from xpr_deploy.errors import WeightsError

PAPER = get_config("paper")


@pytest.fixture(scope="module")
def imagenet_like() -> dict[str, torch.Tensor]:
    """A real timm Swin-T state dict (3-channel patch embedding, ImageNet head), random values."""
    torch.manual_seed(1)
    ref = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False)
    return {k: v.clone() for k, v in ref.state_dict().items() if "relative_position_index" not in k}


def _microsoft_layout(sd: dict[str, torch.Tensor]) -> dict[str, object]:
    """timm keys -> the original Swin repo keys (downsample at the end of the previous stage)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        k = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", k)
        out[k.replace("head.fc.", "head.")] = v
    return {"model": out}


def _check_loaded(model, sd: dict[str, torch.Tensor]) -> None:
    for view in ("cc", "mlo"):
        stream = model.stream(view)
        folded = sd["patch_embed.proj.weight"].sum(dim=1, keepdim=True)
        assert torch.equal(stream.patch_embed.proj.weight, folded)
        assert torch.equal(stream.layers[2].blocks[3].mlp.fc1.weight, sd["layers.2.blocks.3.mlp.fc1.weight"])
        assert torch.equal(stream.layers[3].downsample.reduction.weight, sd["layers.3.downsample.reduction.weight"])


def test_timm_safetensors_and_microsoft_pth(tmp_path: Path, imagenet_like: dict[str, torch.Tensor]) -> None:
    st = tmp_path / "swin_tiny.safetensors"
    save_file(imagenet_like, str(st))
    _check_loaded(build_model(PAPER, pretrained=str(st)), imagenet_like)

    pth = tmp_path / "swin_tiny_patch4_window7_224.pth"
    torch.save(_microsoft_layout(imagenet_like), pth)
    _check_loaded(build_model(PAPER, pretrained=str(pth)), imagenet_like)


def test_folded_patch_embedding_matches_rgb_replication(imagenet_like: dict[str, torch.Tensor]) -> None:
    """Summing the RGB kernel is exactly what feeding the grey image on three channels computes."""
    rgb = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=0)
    rgb.load_state_dict({k: v for k, v in imagenet_like.items() if not k.startswith("head")}, strict=False)
    from xpr_deploy.model.weights import fold_rgb_patch_embed

    conv = torch.nn.Conv2d(1, 96, 4, 4)
    conv.weight.data = fold_rgb_patch_embed(rgb.patch_embed.proj.weight.data, 1)
    conv.bias.data = rgb.patch_embed.proj.bias.data
    grey = torch.randn(1, 1, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(conv(grey), rgb.patch_embed.proj(grey.expand(-1, 3, -1, -1)))


def test_bad_weight_files(tmp_path: Path, imagenet_like: dict[str, torch.Tensor]) -> None:
    with pytest.raises(WeightsError, match="no such file"):
        build_model("tiny", pretrained=str(tmp_path / "missing.safetensors"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(WeightsError, match=r"junk\.pth: not a readable weights file"):
        build_model("tiny", pretrained=str(junk))
    st = tmp_path / "swin_tiny.safetensors"
    save_file(imagenet_like, str(st))
    with pytest.raises(WeightsError, match="config 'tiny' needs"):  # Swin-T (C=96) into the C=32 tiny config
        build_model("tiny", pretrained=str(st))
    partial = tmp_path / "partial.safetensors"
    save_file({k: v for k, v in imagenet_like.items() if "layers.1.blocks.0.attn.qkv" not in k}, str(partial))
    with pytest.raises(WeightsError, match="missing"):
        build_model(PAPER, pretrained=str(partial))
