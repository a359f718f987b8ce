"""`xpr predict` gives `xpr eval`'s per-breast probabilities for the same breasts (eager and ONNX)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from xpr_deploy import build_model
from xpr_deploy.cli import app
from xpr_deploy.config import get_config
from xpr_deploy.data.dicom import PreprocessSettings
from xpr_deploy.train.checkpoint import save_checkpoint

CFG = get_config("tiny")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model whose LayerNorms are not at their init: at init every window score ties exactly."""
    torch.manual_seed(0)
    model = build_model(CFG).eval()
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            m.weight.data = torch.rand(m.weight.shape, generator=g) + 0.5
            m.bias.data = 0.1 * torch.randn(m.bias.shape, generator=g)
    meta = {
        "threshold": 0.5,
        "preprocess": PreprocessSettings.for_config(CFG).to_dict(),
        "label_rule": "vindr:birads>=4",
    }
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "best", model, meta)


def _run(*args: str) -> dict:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def _by_breast(predicted: dict) -> dict[tuple[str, str], float]:
    # VinDr's study id is the images/<study_id>/ folder; predict names studies by StudyInstanceUID
    return {(Path(b["cc"]).parent.name, b["laterality"]): b["prob"] for b in predicted["breasts"]}


@pytest.fixture(scope="module")
def evaluated(ckpt: Path, synth_vindr: Path) -> dict[tuple[str, str], float]:
    out = _run("eval", str(ckpt), str(synth_vindr), "--split", "all", "--device", "cpu", "--json")
    return {(b["study"], b["laterality"]): b["prob"] for b in out["breasts"]}


def test_eager_predict_matches_eval(ckpt: Path, synth_vindr: Path, evaluated: dict) -> None:
    pred = _by_breast(_run("predict", str(ckpt), str(synth_vindr / "images"), "--backend", "eager", "--json"))
    assert len(evaluated) == 8 and set(pred) == set(evaluated)
    for key, p in evaluated.items():
        assert pred[key] == pytest.approx(p, abs=1e-5), key
