"""The bench/ driver scripts' own logic (they are scripts, not package modules: loaded by path)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_driver(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_cpu_paper_records_paths_outside_the_repository(tmp_path: Path) -> None:
    """`--bundle` outside the repository used to crash the end of the run (`relative_to(ROOT)`)."""
    cpu_paper = load_driver("cpu_paper")
    outside = tmp_path / "bundle" / "model.onnx"
    assert cpu_paper.display_path(outside) == str(outside)
    assert cpu_paper.display_path(ROOT / "export" / "b" / "model.onnx") == "export/b/model.onnx"
