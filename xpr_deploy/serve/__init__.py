"""Serving with a real NVIDIA Triton Inference Server (SPEC §8).

- `env`: where a `tritonserver` is (the `nvidia-pytriton` wheel's, or one on PATH), its backends,
  and the Python environment the `python`-backend model runs in (venv site-packages behind a
  numpy-1.x folder: Triton's Python stub breaks on numpy 2, see notes/serving-pacs-polygraphy.md).
- `server`: start a server on 127.0.0.1, wait until ready, stop it (`xpr serve`).
- `backend`: the `python`-backend model itself; it runs inside Triton's stub process and reads the
  bundle only through the verified reader and the runner layer.
"""

from __future__ import annotations

from .env import ServeError, ServerInstall, find_server, model_sys_path, numpy1_dir
from .server import TritonServer, free_port, free_ports

__all__ = [
    "ServeError",
    "ServerInstall",
    "TritonServer",
    "find_server",
    "free_port",
    "free_ports",
    "model_sys_path",
    "numpy1_dir",
]
