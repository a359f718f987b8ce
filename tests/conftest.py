"""Shared fixtures. Torch runs on few threads: CI has 2 cores and tests run one after another."""

from __future__ import annotations

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
