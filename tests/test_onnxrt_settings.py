"""ONNX Runtime session settings: every option `OrtSettings` offers makes a working session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from xpr_deploy.errors import XprError
from xpr_deploy.runners.onnxrt import OrtSettings, create_session


def _graph(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    g = helper.make_graph([helper.make_node("Add", ["x", "one"], ["y"])], "g", [x], [y], [one])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 10
    onnx.save(m, str(path))
    return path


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"optimization": "extended"},
        {"optimization": "disabled"},
        {"cpu_arena": False},
        {"spinning": False},
        {"buffer_reuse": True, "low_memory": False},
    ],
    ids=["default", "extended", "disabled", "no-arena", "no-spin", "ort-memory-defaults"],
)
def test_every_setting_makes_a_working_session(tmp_path: Path, changes: dict) -> None:
    path = _graph(tmp_path / "g.onnx")
    sess = create_session(path, OrtSettings(providers=("CPUExecutionProvider",), threads=1, **changes), path)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(sess.run(["y"], {"x": x})[0], x + 1)


def test_unknown_optimization_level_is_one_line(tmp_path: Path) -> None:
    path = _graph(tmp_path / "g.onnx")
    with pytest.raises(XprError, match="optimization must be one of"):
        create_session(path, OrtSettings(providers=("CPUExecutionProvider",), optimization="max"), path)


def test_default_session_keeps_peak_memory_low(tmp_path: Path) -> None:
    """Memory pattern and same-size buffer reuse off by default: at paper size the reuse alone held
    the peak at 2.5 GB instead of 0.96 GB (bench/README.md)."""
    path = _graph(tmp_path / "g.onnx")
    so = create_session(path, OrtSettings(providers=("CPUExecutionProvider",)), path).get_session_options()
    assert not so.enable_mem_pattern and not so.enable_mem_reuse
    so = create_session(path, OrtSettings(providers=("CPUExecutionProvider",), buffer_reuse=True), path)
    assert so.get_session_options().enable_mem_reuse


def test_onnx_runner_does_not_import_torch(tiny_bundle: Path) -> None:
    """A process that only serves the graph must not carry PyTorch (~480 MB resident): polygraphy's
    own infer imports it to check for torch tensors, the runner's does not."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from xpr_deploy.runners import make_runner\n"
        f"with make_runner({str(tiny_bundle)!r}, 'onnx') as r:\n"
        "    x = np.zeros((1, 1, 448, 224), np.float32)\n"
        "    assert r.infer({'cc': x, 'mlo': x})['prob'].shape == (1,)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
