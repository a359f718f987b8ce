"""`xpr demo` pipeline: the steps run in order, share artifacts, and record themselves in demo.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xpr_deploy.demo import STEPS, DemoContext, Step, run_demo


def test_demo_steps_small(tmp_path: Path) -> None:
    seen: list[str] = []

    def probe(ctx: DemoContext) -> dict[str, object]:  # what a later step (export, ...) would see
        seen.extend(sorted(ctx.artifacts))
        return {"checkpoint": str(ctx.artifacts["checkpoint"])}

    mine = [s for s in STEPS if s.name in ("synth", "train", "eval")]  # later steps have their own tests
    res = run_demo(tmp_path / "demo", steps=[*mine, Step("probe", probe)], breasts=16, epochs=1, quiet=True)
    assert res.ok and [s["name"] for s in res.steps] == ["synth", "train", "eval", "probe"]
    assert {"checkpoint", "data", "eval", "run"} <= set(seen)
    d = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert d["ok"] and d["steps"][2]["n"] >= 2
    assert (tmp_path / "demo" / "eval" / "eval.json").is_file()
    assert (tmp_path / "demo" / "run" / "best" / "model.safetensors").is_file()


def test_demo_failure_is_recorded(tmp_path: Path) -> None:
    def boom(ctx: DemoContext) -> dict[str, object]:
        raise RuntimeError("step broke")

    with pytest.raises(RuntimeError, match="step broke"):
        run_demo(tmp_path, steps=[Step("boom", boom)], quiet=True)
    d = json.loads((tmp_path / "demo.json").read_text())
    assert not d["ok"] and d["steps"][0]["error"] == "RuntimeError: step broke"


def test_cli_demo_defaults_are_the_demo_module_s() -> None:
    """The CLI must not carry its own copy of the demo sizes (it once trained 80 breasts, not 320)."""
    from xpr_deploy.demo import DEMO_BREASTS, DEMO_EPOCHS

    out = subprocess.run(
        [sys.executable, "-m", "xpr_deploy.cli", "demo", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},  # no wrapping inside "(default N)"
    ).stdout
    assert f"(default {DEMO_BREASTS})" in out and f"(default {DEMO_EPOCHS})" in out
