"""Checkpoints: a folder with `model.safetensors` + `meta.json` (+ `train_state.pt` for resuming).

Layout of a training run folder (`xpr train --out RUN`):

    RUN/best/        best epoch by validation AUC   (model.safetensors, meta.json)
    RUN/last/        latest epoch, resumable        (model.safetensors, meta.json, train_state.pt)
    RUN/split.json   the split the run used         RUN/metrics.jsonl  one line per epoch

Every folder is written with `atomic_dir`, so a run killed mid-save leaves the previous one intact
(killed between the swap's two renames: `.last.old`, which readers and `--resume` put back).
Every file goes through `io.write_bytes`: one error mapping for a full disk, the umask's modes.
`load_checkpoint` accepts a checkpoint folder, its `meta.json`, or a run folder (-> `best/`).
"""

from __future__ import annotations

import datetime as _dt
import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..config import NUM_STAGES, ModelConfig
from ..errors import WeightsError
from ..io import atomic_dir, recover_dir, sha256_file, write_buffer, write_bytes
from .meta_schema import FORMAT, FORMAT_VERSION, schema_problem

if TYPE_CHECKING:
    from ..model.xpruning import XPruning

WEIGHTS = "model.safetensors"
META = "meta.json"
TRAIN_STATE = "train_state.pt"


class CheckpointError(WeightsError):
    """A checkpoint is missing, corrupt, or does not match the model it describes."""


def git_commit() -> str | None:
    """Commit of the toolkit source tree (with '-dirty' when tracked files changed), or None outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head or None


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def save_checkpoint(
    dest: str | Path,
    model: XPruning,
    meta: dict[str, Any],
    train_state: dict[str, Any] | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write weights + meta (+ resumable train state, + small files such as the split) atomically into `dest`."""
    from safetensors.torch import save

    dest = Path(dest)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_dir(dest) as tmp:
        # in memory first: safetensors' own writer reports a full disk as SafetensorError, with mode 0600
        write_bytes(tmp / WEIGHTS, save(state, metadata={"format": FORMAT}))
        full = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            **meta,
            "model_config": model.cfg.to_dict(),
            "weights_sha256": sha256_file(tmp / WEIGHTS),
        }
        write_bytes(tmp / META, (json.dumps(full, indent=2, default=str) + "\n").encode())
        if train_state is not None:  # torch.save reports a full disk as a RuntimeError: buffer it
            write_buffer(tmp / TRAIN_STATE, lambda f: torch.save(train_state, f))
        for name, blob in (extra_files or {}).items():
            write_bytes(tmp / name, blob)
    return dest


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder for a checkpoint folder, its meta.json / weights file, or a run folder."""
    p = Path(path)
    if p.name in (META, WEIGHTS) and not p.parent.exists():
        recover_dir(p.parent)
    p = recover_dir(p)
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint")
    if p.is_file():
        if p.name in (META, WEIGHTS):
            return p.parent
        raise CheckpointError(f"{p}: not a checkpoint (give the checkpoint folder or the run folder)")
    if (p / META).is_file():
        return p
    if (recover_dir(p / "best") / META).is_file():
        return recover_dir(p / "best")
    raise CheckpointError(f"{p}: not a checkpoint (no {META} and no best/{META})")


def read_meta(path: str | Path) -> dict[str, Any]:
    """Metadata of a checkpoint, checked against `meta_schema` (types, bounds, agreeing facts) in this
    one place, so every reader can trust it; adds `checkpoint_dir`."""
    ckpt = resolve_checkpoint(path)
    meta_path = ckpt / META
    try:
        meta = json.loads(meta_path.read_text())
    except OSError as exc:
        raise CheckpointError(f"{meta_path}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{meta_path}: corrupt checkpoint metadata ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path}: not an xpr checkpoint (format is not {FORMAT!r})")
    version = meta.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise CheckpointError(f"{meta_path}: checkpoint format {version} is newer than this toolkit ({FORMAT_VERSION})")
    problem = schema_problem(meta)
    if problem is not None:
        raise CheckpointError(f"{meta_path}: {problem}")
    meta["checkpoint_dir"] = str(ckpt)
    return meta


def model_config_of(meta: dict[str, Any]) -> ModelConfig:
    try:
        return ModelConfig.from_dict(meta["model_config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{meta.get('checkpoint_dir', '?')}/{META}: invalid model_config ({exc})") from None


def load_state_dict(ckpt: Path, meta: dict[str, Any], verify: bool = True) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    wpath = ckpt / WEIGHTS
    if not wpath.is_file():
        raise CheckpointError(f"{wpath}: weights file missing")
    try:
        if verify and meta.get("weights_sha256") and sha256_file(wpath) != meta["weights_sha256"]:
            raise CheckpointError(f"{wpath}: SHA-256 does not match {META} (file changed or corrupt)")
        return load_file(str(wpath))
    except OSError as exc:  # e.g. another user's 0600 file
        raise CheckpointError(f"{wpath}: cannot read ({exc.strerror or exc})") from None
    except CheckpointError:
        raise
    except Exception as exc:  # safetensors raises its own error types for truncated/corrupt files
        raise CheckpointError(f"{wpath}: corrupt weights ({type(exc).__name__}: {exc})") from None


def check_weights_fit(cfg: ModelConfig, state: dict[str, torch.Tensor], where: Path) -> None:
    """The weights are the model's, tensor for tensor, checked on a model without memory (torch's
    meta device) before the real one is built: weights for another config cost nothing to refuse,
    and a model is never larger than the weights file that fills it."""
    from ..model.xpruning import build_model

    try:
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in build_model(cfg).state_dict().items()}
    except (ValueError, TypeError, RuntimeError, AssertionError, ZeroDivisionError) as exc:
        first = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"{where.parent / META}: model_config describes no buildable model ({first})") from None
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing, unexpected = sorted(set(shapes) - set(got)), sorted(set(got) - set(shapes))
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: does not match the model in {META} ({len(missing)} missing, {len(unexpected)} unexpected "
            f"tensors, e.g. {(missing or unexpected)[0]})"
        )
    for k, want in shapes.items():
        if got[k] != want:
            raise CheckpointError(
                f"{where}: does not match the model in {META} (tensor {k} is {list(got[k])}, the model's {list(want)})"
            )


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[XPruning, dict[str, Any]]:
    """(model in eval mode at the config's target keep ratio, metadata) of a checkpoint written by `xpr train`."""
    from ..model.xpruning import build_model

    meta = read_meta(path)
    ckpt = Path(meta["checkpoint_dir"])
    cfg = model_config_of(meta)
    state = load_state_dict(ckpt, meta)
    check_weights_fit(cfg, state, ckpt / WEIGHTS)
    model = build_model(cfg)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{ckpt / WEIGHTS}: does not match the model in {META} ({first})") from None
    bad = [*result.missing_keys, *result.unexpected_keys]
    if bad:
        raise CheckpointError(
            f"{ckpt / WEIGHTS}: does not match the model in {META} "
            f"({len(result.missing_keys)} missing, {len(result.unexpected_keys)} unexpected tensors, e.g. {bad[0]})"
        )
    model.set_keep([cfg.keep(s) for s in range(1, NUM_STAGES + 1)])
    return model.to(device).eval(), meta


def load_train_state(ckpt: str | Path) -> dict[str, Any]:
    """The optimizer / scheduler / RNG state saved beside `last/` weights."""
    p = Path(ckpt) / TRAIN_STATE
    if not p.is_file():
        raise CheckpointError(f"{p}: no training state to resume from")
    from ..model.weights import torch_load_weights_only

    state = torch_load_weights_only(p, CheckpointError)
    if not isinstance(state, dict):
        raise CheckpointError(f"{p}: not a training state (a {type(state).__name__}, not a dict)")
    return state
