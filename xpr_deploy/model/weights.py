"""Local ImageNet Swin-T weights (timm safetensors or the Microsoft .pth), never downloaded."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

import torch
from timm.models.swin_transformer import SwinTransformer, checkpoint_filter_fn

from ..config import ModelConfig
from ..errors import WeightsError, XprError


class DualStream(Protocol):
    """What loading needs of a model: its config and its two Swin streams (XPruning is one).

    A protocol, not XPruning itself, so this module does not import `xpruning` (which imports it).
    """

    @property
    def cfg(self) -> ModelConfig: ...

    @property
    def cc(self) -> SwinTransformer: ...

    def stream(self, view: str) -> SwinTransformer: ...


#: non-persistent buffers and the ImageNet classifier are not part of a stream
_IGNORED = ("relative_position_index", "attn_mask")


def torch_load_weights_only(p: Path, error: type[XprError] = WeightsError) -> object:
    """`torch.load(weights_only=True)`, its refusal and other failures as one line naming the file."""
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4 ...": a second stderr line
            warnings.simplefilter("ignore")
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's 6-line advice ends in weights_only=False: never here
        why = "torch.load weights_only refused it"
        raise error(f"{p}: not a safetensors/weights-only file ({why}); refusing to unpickle") from None
    except OSError as exc:
        raise error(f"{p}: cannot read ({exc.strerror or exc})") from None
    except Exception as exc:  # truncated zip, not a tensor file
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise error(f"{p}: not a readable weights file ({type(exc).__name__}: {first})") from None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors / .pth / .pt / .bin file; unwraps {'model': ...} and {'state_dict': ...}."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{p}: no such file")
    sd: object
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd = load_file(str(p))
        except OSError as exc:
            raise WeightsError(f"{p}: cannot read ({exc.strerror or exc})") from None
        except Exception as exc:  # corrupt, truncated, not a safetensors file
            raise WeightsError(f"{p}: not a readable weights file ({type(exc).__name__}: {exc})") from None
    else:
        sd = torch_load_weights_only(p)
    for key in ("model", "state_dict"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{p}: does not hold a state dict of tensors")
    return sd


def fold_rgb_patch_embed(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """[C, 3, p, p] -> [C, 1, p, p] by summing RGB: a grey image replicated to RGB gives the same output."""
    if weight.shape[1] == in_chans:
        return weight
    if weight.shape[1] == 3 and in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    raise WeightsError(f"patch embedding has {weight.shape[1]} input channels, model wants {in_chans}")


def _check_architecture(sd: dict[str, torch.Tensor], model: DualStream, path: str | Path) -> None:
    """Depths and width from the key names, so a wrong file fails with a sentence, not a KeyError."""
    cfg = model.cfg
    depths = [0] * len(cfg.depths)
    for k in sd:
        m = re.match(r"layers\.(\d+)\.blocks\.(\d+)\.", k)
        if m and int(m.group(1)) < len(depths):
            depths[int(m.group(1))] = max(depths[int(m.group(1))], int(m.group(2)) + 1)
    if not any(depths):
        raise WeightsError(f"{path}: no Swin blocks in this file (keys like layers.0.blocks.0.*)")
    embed = sd.get("patch_embed.proj.weight")
    width = int(embed.shape[0]) if embed is not None else None
    if tuple(depths) != tuple(cfg.depths) or width != cfg.embed_dim:
        raise WeightsError(
            f"{path}: Swin with depths {tuple(depths)} and width {width}, "
            f"config {cfg.name!r} needs depths {cfg.depths} and width {cfg.embed_dim}"
        )


def load_imagenet_swin(model: DualStream, path: str | Path) -> None:
    """Load the same ImageNet Swin-T weights into both streams (the CTB and head stay random)."""
    raw = read_state_dict(path)
    _check_architecture(raw, model, path)
    ref = model.cc
    try:
        sd = checkpoint_filter_fn(dict(raw), ref)  # remaps Microsoft's key layout to timm's
    except Exception as exc:
        raise WeightsError(f"{path}: not a Swin checkpoint ({type(exc).__name__}: {exc})") from None
    sd = {k: v for k, v in sd.items() if not k.startswith("head") and not any(n in k for n in _IGNORED)}
    if "patch_embed.proj.weight" in sd:
        sd["patch_embed.proj.weight"] = fold_rgb_patch_embed(sd["patch_embed.proj.weight"], model.cfg.in_chans)
    own = {k: v for k, v in ref.state_dict().items() if not any(n in k for n in _IGNORED)}
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise WeightsError(f"{path}: not a Swin-T checkpoint for config {model.cfg.name!r} ({what} ...)")
    bad = [k for k in own if own[k].shape != sd[k].shape]
    if bad:
        k = bad[0]
        raise WeightsError(
            f"{path}: shape of {k} is {tuple(sd[k].shape)}, config {model.cfg.name!r} needs {tuple(own[k].shape)}"
        )
    for view in ("cc", "mlo"):
        model.stream(view).load_state_dict(sd, strict=False)
