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
    [{}, {"optimization": "extended"}, {"optimization": "disabled"}, {"cpu_arena": False}, {"spinning": False}],
    ids=["default", "extended", "disabled", "no-arena", "no-spin"],
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
