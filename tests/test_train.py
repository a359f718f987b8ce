"""Training: schedules, resume (bitwise), the two-process gloo path, eval JSON, cross-validation.

All on a small synthetic VinDr-layout dataset with the tiny config on CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from xpr_deploy.config import get_config
from xpr_deploy.errors import ConfigError
from xpr_deploy.train.checkpoint import CheckpointError, read_meta
from xpr_deploy.train.loop import FitState, TrainConfig, class_weights, keep_for_epoch, lr_lambda, train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 breasts (8 studies) at 256x128 stored pixels; own fixture because runs write a cache."""
    from xpr_deploy.data.synth import write_synthetic

    root = tmp_path_factory.mktemp("train") / "data"
    write_synthetic(root, 16, "vindr", size=(256, 128), seed=3)
    return root


def _cfg(data: Path, out: Path, **kw: object) -> TrainConfig:
    base: dict[str, object] = dict(
        config="tiny", epochs=2, batch_size=4, lr=3e-4, prune_warmup=1, holdout=0.25, val_fraction=0.25,
        device="cpu", seed=0, cache=str(out.parent / "cache"), progress=False,
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(data=str(data), out=str(out), **base)  # type: ignore[arg-type]


def test_class_weights_inverse_frequency() -> None:
    w = class_weights([0, 0, 0, 1])
    assert w.tolist() == pytest.approx([4 / 6, 4 / 2])
    with pytest.raises(ConfigError, match="no samples of class"):
        class_weights([0, 0])


def test_lr_schedule_warmup_then_cosine() -> None:
    f = lr_lambda(total_steps=100, warmup_steps=10, min_ratio=0.01)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.505)
    assert f(100) == pytest.approx(0.01) and f(99) > 0.01


def test_best_epoch_is_higher_auc_then_lower_loss() -> None:
    st = FitState()
    assert st.improved_by(0.5, 0.9)  # anything beats "no epoch yet"
    st.best_score, st.best_loss = 1.0, 0.40
    assert not st.improved_by(0.99, 0.01)  # AUC first
    assert st.improved_by(1.0, 0.39)  # equal AUC (a saturated small validation set): lower loss wins
    assert not st.improved_by(1.0, 0.40) and not st.improved_by(1.0, 0.41)


def test_keep_warmup_per_stage() -> None:
    cfg = get_config("tiny").with_prune_rates((0.5, 0.5, 0.25, 0.0))
    assert keep_for_epoch(cfg, 0, 4) == [1.0, 1.0, 1.0, 1.0]
    assert keep_for_epoch(cfg, 2, 4) == [0.75, 0.75, 0.875, 1.0]
    assert keep_for_epoch(cfg, 9, 4) == [0.5, 0.5, 0.75, 1.0]


def test_resume_is_bitwise_identical(small_data: Path, tmp_path: Path) -> None:
    """2 epochs straight vs 1 epoch, stop, resume to 2: the same weights, bit for bit."""
    straight = train(_cfg(small_data, tmp_path / "straight"))
    assert straight.finished and len(straight.history) == 2

    part = train(_cfg(small_data, tmp_path / "resumed", stop_after=1))
    assert not part.finished and read_meta(tmp_path / "resumed" / "last")["epoch"] == 1
    with pytest.raises(ConfigError, match="already holds a training run"):
        train(_cfg(small_data, tmp_path / "resumed"))
    resumed = train(_cfg(small_data, tmp_path / "resumed", resume=True))
    assert resumed.finished and [r.epoch for r in resumed.history] == [1, 2]

    for sub in ("last", "best"):
        a = load_file(str(tmp_path / "straight" / sub / "model.safetensors"))
        b = load_file(str(tmp_path / "resumed" / sub / "model.safetensors"))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{sub}/{k} differs after resume"
    la = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in la] == [r["train_loss"] for r in lb]

    meta = read_meta(tmp_path / "straight")
    assert meta["label_rule"] == "vindr:birads>=4" and meta["preprocess"]["img_size"] == [448, 224]
    assert meta["toolkit_version"] and meta["threshold_method"] in ("youden-validation", "fixed-0.5")
    assert meta["split"]["files"]["split.json"] and (tmp_path / "straight" / "best" / "split.json").is_file()

    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(_cfg(small_data, tmp_path / "fresh", resume=True))


def test_torchrun_two_process_gloo(small_data: Path, tmp_path: Path) -> None:
    """The DDP path on CPU: torchrun, 2 processes, gloo, 1 epoch; rank 0 writes the checkpoint."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "xpr_deploy.cli", "train", str(small_data), "--out", str(out), "--config", "tiny", "--epochs", "1",
        "--batch-size", "2", "--device", "cpu", "--holdout", "0.25", "--val-fraction", "0.25",
        "--cache", str(tmp_path / "cache"), "--json",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    meta = read_meta(out)
    assert meta["world_size"] == 2 and meta["epoch"] == 1
    curve = Path(json.loads(proc.stdout)["history_plot"])  # rank 0 alone draws the learning curve
    assert curve == out / "history.png" and curve.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    hist = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(hist) == 1 and hist[0]["val"]["n"] == meta["data"]["n_val"]


def test_cli_errors_are_one_line(small_data: Path, tmp_path: Path) -> None:
    xpr = [sys.executable, "-m", "xpr_deploy.cli"]
    p = subprocess.run([*xpr, "eval", str(tmp_path / "missing"), str(small_data)], capture_output=True, text=True)
    assert p.returncode != 0 and "no such checkpoint" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run([*xpr, "train", str(small_data), "--out", str(tmp_path / "r"), "--prune-rate", "0.5",
                        "--prune-rates", "0.5,0.5"], capture_output=True, text=True)  # fmt: skip
    assert p.returncode != 0 and "not both" in p.stderr and "Traceback" not in p.stderr


def test_cv_two_folds_table(small_data: Path, tmp_path: Path) -> None:
    from xpr_deploy.train.cv import run_cv

    res = run_cv(_cfg(small_data, tmp_path / "cv", epochs=1, val_fraction=0.0), folds=2)
    assert len(res.folds) == 2
    s = json.loads((tmp_path / "cv" / "cv.json").read_text())["summary"]
    assert s["pooled"]["n"] == 16 and set(s) >= {"auc", "acc", "f1", "sensitivity", "specificity"}
    assert s["acc"]["mean"] is not None and s["acc"]["sd"] is not None
    md = (tmp_path / "cv" / "cv.md").read_text()
    assert "| Model | AUC, pooled (95% CI) |" in md and "± " in md and md.count("\n| ") >= 5
    tests = [set(json.loads((tmp_path / "cv" / f"fold{k}" / "eval.json").read_text())["breasts"][i]["key"]
                 for i in range(f["metrics"]["n"])) for k, f in enumerate(res.folds)]  # fmt: skip
    assert not tests[0] & tests[1] and len(tests[0] | tests[1]) == 16
    shutil.rmtree(tmp_path / "cv")


@pytest.mark.parametrize("command", ["train", "cv"])
def test_train_and_cv_help_show_trainconfig_defaults(command: str) -> None:
    """Both commands take their defaults from TrainConfig (one source), and the help shows them."""
    from typer.testing import CliRunner

    from xpr_deploy.cli import app

    res = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    d = TrainConfig(data="", out="")
    for shown in (f"epochs (default {d.epochs})", f"(default {d.lr})", f"(default {d.freeze})", "(default paper)"):
        assert shown in res.output, shown


def test_train_request_is_the_cli_options_as_a_library_call(small_data: Path, tmp_path: Path) -> None:
    """`xpr train` is `run_training(TrainRequest(...))`: options as given (None: TrainConfig's default),
    the same one-line refusals, and the summary the command prints."""
    from xpr_deploy.train.run import TrainRequest, TrainSummary, run_training

    cfg = TrainRequest(Path("d"), Path("o"), prune_rates="0.5,0.5,0.25,0", split_file=Path("s.json"), format="cbis")
    assert cfg.train_config() == TrainConfig(
        data="d", out="o", prune_rates=(0.5, 0.5, 0.25, 0.0), split_file="s.json", data_format="cbis"
    )
    with pytest.raises(ConfigError, match="not both"):
        TrainRequest(small_data, tmp_path / "r", prune_rate=0.5, prune_rates="0.5,0.5").train_config()
    with pytest.raises(ConfigError, match="need numbers"):
        TrainRequest(small_data, tmp_path / "r", prune_rates="half").train_config()

    opts = dict(config="tiny", epochs=2, batch_size=4, prune_warmup=1, holdout=0.25, val_fraction=0.25,
                device="cpu", seed=0, cache=tmp_path / "cache", progress=False)  # fmt: skip
    summary = run_training(TrainRequest(small_data, tmp_path / "run", stop_after=1, **opts))  # type: ignore[arg-type]
    assert isinstance(summary, TrainSummary) and not summary.finished and summary.epochs_done == 1
    assert summary.history_plot == tmp_path / "run" / "history.png" and summary.history_plot.is_file()
    d = summary.to_dict()
    assert d["best"] == str(tmp_path / "run" / "best") and set(d["best_val"]) == {"auc", "auc_ci", "loss", "threshold"}
    with pytest.raises(ConfigError, match="--epochs 3 differs from the interrupted run"):
        TrainRequest(small_data, tmp_path / "run", resume=True, **{**opts, "epochs": 3}).train_config()  # type: ignore[arg-type]
    assert TrainRequest(small_data, tmp_path / "run", resume=True, **opts).train_config().resume  # type: ignore[arg-type]
