"""The must-show check: on synthetic studies (tiny config, CPU, random init) training learns the lesions.

Held-out test breasts (patient-level hold-out, never used for model selection) must reach AUC >= 0.90.
The demo's settings are used as they are (320 breasts, 6 epochs, batch 4): about two minutes on 2 cores.
Then `xpr eval --json` (in process) on that checkpoint must report the same breasts with the agreed keys.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xpr_deploy.demo import run_demo
from xpr_deploy.train.evaluate import evaluate_checkpoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, float]:
    root = tmp_path_factory.mktemp("learn")
    res = run_demo(root, only=["synth", "train"], quiet=True)  # the demo's own data and recipe, seed 0
    train = res.steps[-1]
    assert train["name"] == "train" and train["finished"]
    return root / "data", root / "run", float(train["train_seconds"])


def test_learns_synthetic_lesions(trained: tuple[Path, Path, float]) -> None:
    data, run, wall = trained
    rep = evaluate_checkpoint(run, data, "test", cache=run.parent / "cache")
    print(f"\nheld-out AUC {rep.metrics.auc:.3f} CI {rep.metrics.auc_ci} n={rep.metrics.n}; training {wall:.1f} s")
    assert rep.metrics.n >= 16 and 0 < rep.metrics.n_pos < rep.metrics.n
    assert rep.metrics.auc >= 0.90, rep.summary_lines()


def test_eval_cli_json(trained: tuple[Path, Path, float], tmp_path: Path) -> None:
    data, run, _ = trained
    from typer.testing import CliRunner

    from xpr_deploy.cli import app

    # in this process (typer's runner): the claim is the command's JSON, not a second torch import
    args = ["eval", str(run / "best"), str(data), "--split", "test", "--json",
            "--plots", str(tmp_path / "plots"), "--device", "cpu", "--cache", str(run.parent / "cache")]  # fmt: skip
    p = CliRunner().invoke(app, args)
    assert p.exit_code == 0 and p.exception is None, (p.exception, p.stderr[-2000:])
    d = json.loads(p.stdout)
    for key in ("auc", "auc_ci", "acc", "f1", "sensitivity", "specificity", "threshold", "n", "label_rule"):
        assert key in d, key
    assert len(d["auc_ci"]) == 2 and d["auc_ci"][0] <= d["auc"] <= d["auc_ci"][1]
    assert "DeLong" in d["ci_method"] and d["label_rule"] == "vindr:birads>=4"
    assert len(d["breasts"]) == d["n"] and {"study", "laterality", "prob", "label"} <= set(d["breasts"][0])
    split = json.loads((run / "split.json").read_text())
    assert sorted(b["key"] for b in d["breasts"]) == sorted(split["folds"][0]["test"])
    assert (tmp_path / "plots" / "roc.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "confusion.png").is_file()
