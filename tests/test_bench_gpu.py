"""bench/gpu.py off the GPU: the one-line exit without CUDA, and a dry run of every section on the CPU
with only the lent machine's packages importable (bench/device_env.py, `python -S`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU = str(ROOT / "bench" / "gpu.py")
sys.path.insert(0, str(ROOT / "bench"))

import device_env  # noqa: E402


def _env(pythonpath: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "PYTHONPATH": pythonpath, **extra}


def test_without_cuda_exits_2_with_one_line(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, GPU, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(str(ROOT), CUDA_VISIBLE_DEVICES=""),
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0] and "--dry-run" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
    assert time.time() - t0 < 120  # imports torch, then stops: no model is built


@pytest.fixture(scope="module")
def device_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site, _ = device_env.build(tmp_path_factory.mktemp("device"))
    return site


def test_device_env_has_only_the_machines_packages(device_site: Path) -> None:
    """The emulation really restricts: what the machine lacks is absent, what gets carried is there."""
    assert {"polygraphy", "pydicom", "timm"} <= set(device_env.carried())
    code = (
        "import importlib.util as u; print([m for m in ('jsonschema', 'highdicom', 'polygraphy', 'pydicom', "
        "'timm', 'torch', 'typer') if u.find_spec(m) is None])"
    )
    proc = subprocess.run(
        [sys.executable, "-S", "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(f"{ROOT}:{device_site}"),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['jsonschema', 'highdicom']"


@pytest.mark.slow  # five interpreters (parent + a child per section), a few tiny forwards each: 1-4 min here
def test_dry_run_every_section_in_the_device_env(device_site: Path, tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, "-S", GPU, "--dry-run", "--out", str(out), "--compile-budget", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=_env(f"{ROOT}:{device_site}"))
    # the compile section is killed at its 1 s budget: the run is partial (exit 1), the JSON written
    assert proc.returncode == 1, proc.stderr[-3000:]
    rep = json.loads(out.read_text())
    status = {k: v["status"] for k, v in rep["sections"].items()}
    assert status == {"eager": "ok", "parity": "ok", "train": "ok", "compile": "timed_out"}, rep["sections"]
    env = rep["environment"]
    assert env["no_site"] and env["xpr_deploy"] == str(ROOT / "xpr_deploy")
    assert all(env[m]["from"].startswith(str(device_site)) for m in ("polygraphy", "pydicom", "timm"))
    eager = rep["summary"]["eager"]
    assert set(eager) == {"fp32_eager", "bf16_eager"} and all(v["pruned_over_dense"] > 0 for v in eager.values())
    parity = rep["summary"]["parity"]
    assert set(parity) == {"autocast-fp16", "autocast-bf16", "fp16-islands"}
    assert all(v["selection_flips"] == 0 and v["max_abs_prob"] < 0.05 for v in parity.values()), parity
    train = rep["summary"]["train"]
    assert set(train) == {"target_keep", "dense"} and all(v["first_step_ms"] > 0 for v in train.values())
    assert set(rep["not_run"]) == {"onnxruntime_cuda", "tensorrt"}
