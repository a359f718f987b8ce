"""Checkpoint folders: round trip, run-folder resolution, and one-line errors for broken ones."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    meta["weights_sha256"] = hashlib.sha256(blob[: len(blob) // 2]).hexdigest()  # the hash agrees: the parser refuses
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


def _edit_meta(ck: Path, change: Callable[[dict[str, Any]], object]) -> None:
    meta = json.loads((ck / META).read_text())
    change(meta)
    (ck / META).write_text(json.dumps(meta, indent=2))


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        (lambda m: m.update(threshold="high"), "threshold", "'high' is not of type 'number'"),
        (lambda m: m.update(threshold=float("nan")), "threshold", "nan is not a finite number"),
        (lambda m: m.update(epoch=1e308), "epoch", "is not of type 'integer'"),
        (lambda m: m["model_config"].update(depths=[2, 2, -1, 2]), "model_config/depths/2", "-1 is less than"),
        (lambda m: m["model_config"].pop("embed_dim"), "model_config", "'embed_dim' is a required property"),
        (lambda m: m.pop("weights_sha256"), "(top)", "'weights_sha256' is a required property"),
        (lambda m: m.update(class_names=["benign"]), "class_names", "is too short"),
        (lambda m: m.update(train_config={"data": "d", "out": "o", "epochs": "abc"}), "train_config/epochs", "'abc'"),
        (lambda m: m.update(format_version="1"), "format_version", "is not of type 'integer'"),
    ],
)
def test_meta_type_errors_are_one_line_naming_file_and_field(
    saved: tuple[Path, torch.nn.Module],
    tmp_path: Path,
    change: Callable[[dict[str, Any]], object],
    field: str,
    says: str,
) -> None:
    from xpr_deploy.errors import WeightsError

    ck = _copy(saved, tmp_path)
    _edit_meta(ck, change)
    with pytest.raises(WeightsError) as ei:
        read_meta(ck)
    msg = str(ei.value)
    assert msg.startswith(f"{ck / META}: ") and f"schema at {field}: " in msg and says in msg, msg
    assert "\n" not in msg and ei.value.exit_code == 2


def test_meta_facts_must_agree(saved: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    ck = _copy(saved, tmp_path)
    _edit_meta(ck, lambda m: m.update(operating_point="youden", operating_points={}))
    with pytest.raises(CheckpointError, match="operating_point 'youden' is not among operating_points"):
        read_meta(ck)
    _edit_meta(ck, lambda m: m.update(operating_point=None, preprocess={"img_size": [672, 224]}))
    with pytest.raises(CheckpointError, match=r"preprocess.img_size \[672, 224\] differs"):
        read_meta(ck)


def test_weights_for_another_config_are_refused_before_building(
    saved: tuple[Path, torch.nn.Module], tmp_path: Path
) -> None:
    """The paper model is never built for tiny weights: the shapes are compared on torch's meta device."""
    from xpr_deploy.config import get_config

    ck = _copy(saved, tmp_path)
    paper = get_config("paper").to_dict()
    _edit_meta(ck, lambda m: m.update(model_config=paper))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: does not match the model in meta\.json") as ei:
        load_checkpoint(ck)
    assert "\n" not in str(ei.value)


def test_cli_predict_on_a_meta_with_threshold_high(saved: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    """The issue's example end to end: one line naming meta.json and the field, exit 2, no traceback."""
    import subprocess
    import sys

    ck = _copy(saved, tmp_path)
    _edit_meta(ck, lambda m: m.update(threshold="high"))
    (tmp_path / "studies").mkdir()
    res = subprocess.run(
        [sys.executable, "-m", "xpr_deploy.cli", "predict", str(ck), str(tmp_path / "studies")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert f"{ck / META}: does not follow the checkpoint schema at threshold" in lines[0]
