"""`xpr info` and `xpr doctor` through the entry point: `info` in this process (its claims are numbers
and messages), `doctor` in a process of its own (it imports TensorRT and initialises CUDA where there
is one, and reports what a fresh interpreter can import, none of which belongs in a test worker)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_export_support import xpr_here


def _xpr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xpr_deploy.cli", *args], capture_output=True, text=True, check=False)


def test_info_paper_json(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    r = xpr_here(capfd, monkeypatch, "info", "--config", "paper", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert abs(info["params_total"] - 69.79e6) / 69.79e6 < 0.01
    assert info["params_trainable"] + info["params_frozen"] == info["params_total"]
    stage1 = [b for b in info["blocks"] if b["stage"] == 1]
    assert len(stage1) == 4  # two blocks, two views
    assert all(b["windows"] == 3072 and b["k"] == 1536 for b in stage1)
    windows = {b["stage"]: b["windows"] for b in info["blocks"]}
    assert windows == {1: 3072, 2: 768, 3: 192, 4: 48}
    assert {"view", "stage", "block", "windows", "k"} <= set(info["blocks"][0])
    assert 0.5 < info["macs_pruned"] / info["macs_dense"] < 0.65
    assert 4.7e11 < info["macs_dense"] < 4.9e11  # ~481 G multiply-adds per breast (notes/swin-timm.md)


def test_info_table_and_unknown_config(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    r = xpr_here(capfd, monkeypatch, "info", "--config", "tiny")
    assert r.returncode == 0 and "multiply-adds" in r.stdout
    r = xpr_here(capfd, monkeypatch, "info", "--config", "huge")
    assert r.returncode == 2  # a usage error: --config is a choice
    assert "'huge' is not one of 'paper', 'tiny'" in r.stderr
    assert "Traceback" not in r.stderr


def test_doctor_lists_components() -> None:
    r = _xpr("doctor", "--json")
    assert r.returncode == 0, r.stderr
    names = {c["name"]: c for c in json.loads(r.stdout)}
    assert names["torch"]["ok"] and names["onnxruntime"]["ok"]
    assert "CPUExecutionProvider" in names["onnxruntime"]["detail"]
    for key in ("CUDA", "TensorRT-RTX", "TensorRT", "JPEG 2000 decoder", "RLE decoder"):
        assert key in names and names[key]["detail"]
