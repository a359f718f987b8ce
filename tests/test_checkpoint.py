"""Checkpoint folders: round trip, run-folder resolution, and one-line errors for broken ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import xpr_deploy
from xpr_deploy.config import get_config
from xpr_deploy.model.xpruning import build_model
from xpr_deploy.train.checkpoint import (
    META,
    WEIGHTS,
    CheckpointError,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_model(get_config("tiny").with_prune_rates((0.5, 0.5, 0.25, 0.0)))
    model.set_keep(1.0)  # as during the pruning warm-up; the checkpoint must come back at the target
    run = tmp_path_factory.mktemp("ckpt") / "run"
    meta = {"label_rule": "vindr:birads>=4", "threshold": 0.42, "threshold_method": "youden-validation", "epoch": 3}
    save_checkpoint(run / "best", model, meta, extra_files={"split.json": b"{}\n"})
    return run, model


def test_round_trip_bitwise_and_target_keep(saved: tuple[Path, torch.nn.Module]) -> None:
    run, model = saved
    loaded, meta = xpr_deploy.load_checkpoint(str(run))  # the run folder resolves to best/
    assert meta["checkpoint_dir"] == str(run / "best")
    assert meta["label_rule"] == "vindr:birads>=4" and meta["threshold"] == 0.42
    assert meta["model_config"]["prune_rates"] == [0.5, 0.5, 0.25, 0.0]
    assert loaded.keep_ratios == [0.5, 0.5, 0.75, 1.0]
    assert not loaded.training
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert (run / "best" / "split.json").read_text() == "{}\n"
    assert not list(run.glob(".best*")), "temporary folders left behind"


def test_accepts_meta_file_path(saved: tuple[Path, torch.nn.Module]) -> None:
    run, _ = saved
    assert read_meta(run / "best" / META)["epoch"] == 3


def _copy(saved: tuple[Path, torch.nn.Module], tmp_path: Path) -> Path:
    dst = tmp_path / "ck"
    shutil.copytree(saved[0] / "best", dst)
    return dst


def test_missing(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(tmp_path)


def test_missing_weights(saved: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    ck = _copy(saved, tmp_path)
    (ck / WEIGHTS).unlink()
    with pytest.raises(CheckpointError, match="weights file missing"):
        load_checkpoint(ck)


def test_corrupt_meta(saved: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    ck = _copy(saved, tmp_path)
    (ck / META).write_text('{"format": "xpr-checkpoint", ')
    with pytest.raises(CheckpointError, match="corrupt checkpoint metadata") as ei:
        load_checkpoint(ck)
    assert "\n" not in str(ei.value)


def test_corrupt_weights(saved: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    ck = _copy(saved, tmp_path)
    blob = (ck / WEIGHTS).read_bytes()
    (ck / WEIGHTS).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="SHA-256 does not match"):
        load_checkpoint(ck)
    meta = json.loads((ck / META).read_text())
    del meta["weights_sha256"]
    (ck / META).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="corrupt weights"):
        load_checkpoint(ck)


def test_mismatched_config(saved: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    ck = _copy(saved, tmp_path)
    meta = json.loads((ck / META).read_text())
    meta["model_config"]["head_hidden"] = 96  # weights are for 64
    (ck / META).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not match the model") as ei:
        load_checkpoint(ck)
    assert "\n" not in str(ei.value)
    meta["model_config"]["img_size"] = [100, 100]  # not a valid config at all
    (ck / META).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="invalid model_config"):
        load_checkpoint(ck)


def test_not_an_xpr_checkpoint(tmp_path: Path) -> None:
    (tmp_path / META).write_text('{"hello": 1}')
    with pytest.raises(CheckpointError, match="not an xpr checkpoint"):
        load_checkpoint(tmp_path)
