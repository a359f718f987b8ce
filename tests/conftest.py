"""Shared fixtures. Torch runs on few threads: CI has 2 cores and tests run one after another."""

from __future__ import annotations

import torch

torch.set_num_threads(2)
