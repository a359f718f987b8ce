"""Shared fixtures. Torch runs on few threads: CI has 2 cores and tests run one after another."""

from __future__ import annotations

import os
import re

import torch

torch.set_num_threads(2)


# --- synthetic datasets (data layer, issue 3): small, built once per session, read-only for tests --

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def synth_vindr(tmp_path_factory):
    """8 synthetic breasts (4 malignant) in the VinDr-Mammo layout, 320x160 stored pixels. Do not modify."""
    from xpr_deploy.data.synth import write_synthetic

    root = tmp_path_factory.mktemp("synth") / "vindr"
    write_synthetic(root, 8, "vindr", size=(320, 160), seed=1)
    return root


@pytest.fixture(scope="session")
def synth_cbis(tmp_path_factory):
    """8 synthetic breasts (4 malignant) in the CBIS-DDSM layout, 320x160 stored pixels. Do not modify."""
    from xpr_deploy.data.synth import write_synthetic

    root = tmp_path_factory.mktemp("synth") / "cbis"
    write_synthetic(root, 8, "cbis", size=(320, 160), seed=2)
    return root


# --- a tiny checkpoint whose windows do not tie ------------------------------------------------


@pytest.fixture(scope="session")
def untied_tiny_checkpoint(tmp_path_factory):
    """`make(meta, name)`: a checkpoint of the tiny model with its LayerNorms off their init, and
    `meta` merged over tiny's preprocessing. At init every window score ties exactly, so which
    windows are kept would be decided by ties, not by the model."""
    from torch import nn

    from xpr_deploy import build_model
    from xpr_deploy.config import get_config
    from xpr_deploy.data.dicom import PreprocessSettings
    from xpr_deploy.train.checkpoint import save_checkpoint

    cfg = get_config("tiny")

    def make(meta: dict, name: str = "ckpt"):
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        g = torch.Generator().manual_seed(1)
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.data = torch.rand(m.weight.shape, generator=g) + 0.5
                m.bias.data = 0.1 * torch.randn(m.bias.shape, generator=g)
        full = {"preprocess": PreprocessSettings.for_config(cfg).to_dict(), "label_rule": "vindr:birads>=4", **meta}
        return save_checkpoint(tmp_path_factory.mktemp(name) / "best", model, full)

    return make


# --- the CI guard (issue 25): in CI a skip is a failure, unless the test needs a GPU ----------------

#: the one reason a test may skip where `CI` is set: hardware CI does not have (or has, for the tests
#: that must not load a real engine). A missing tool, server, browser or package is a failure there.
_HARDWARE = re.compile(r"\bGPU\b")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _skip_reason(rep: pytest.CollectReport | pytest.TestReport) -> str:
    lr = rep.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:
        return str(lr[2]).removeprefix("Skipped: ")
    return str(lr)


def _no_skip_in_ci(rep: pytest.CollectReport | pytest.TestReport) -> None:
    if not in_ci() or not rep.skipped or hasattr(rep, "wasxfail"):
        return
    reason = _skip_reason(rep)
    if _HARDWARE.search(reason):
        return
    rep.outcome = "failed"
    rep.longrepr = f"CI: skipped for a missing dependency, which CI must have: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    outcome = yield
    _no_skip_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> object:
    outcome = yield
    _no_skip_in_ci(outcome.get_result())
