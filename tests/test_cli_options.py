"""One option, one meaning: the commands that share a concern declare its options once (issue 24)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
from test_export_support import xpr_main

from xpr_deploy.cli import app


def _params(command: str) -> dict[str, Any]:
    cmd = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return {p.name: p for p in cmd.params if p.name is not None}


def test_serve_takes_every_repository_option_of_triton_with_the_same_meaning() -> None:
    """`xpr serve` used to re-declare five of `xpr triton`'s options, drop `--queue-delay-us` and
    `--operating-point`, and give `--instances` another meaning."""
    triton, serve = _params("triton"), _params("serve")
    shared = set(triton) - {"bundle", "repo", "name", "python", "as_json"}
    assert shared == {"max_batch", "instances", "python_backend", "kind", "dynamic_batching", "queue_delay_us",
                      "threads", "operating_point"}  # fmt: skip
    for name in shared:
        assert name in serve, f"xpr serve has no --{name.replace('_', '-')}"
        a, b = triton[name], serve[name]
        assert (a.opts, a.secondary_opts, a.default, getattr(a, "help", None)) == (
            b.opts, b.secondary_opts, b.default, getattr(b, "help", None),
        ), name  # fmt: skip


def _all_commands(group: Any, path: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, cmd in getattr(group, "commands", {}).items():
        full = f"{path} {name}".strip()
        out |= _all_commands(cmd, full) if hasattr(cmd, "commands") else {full: cmd}
    return out


def test_json_is_the_same_flag_in_every_command() -> None:
    """`--json` prints one JSON object instead of tables, in every command: `xpr bench --json PATH`
    used to take a file (that is `--out` now, as in `xpr eval`)."""
    commands = _all_commands(typer.main.get_command(app))
    with_json = {}
    for name, cmd in commands.items():
        for p in cmd.params:
            if "--json" in p.opts:
                with_json[name] = (p.is_flag, p.help)
    assert {"bench", "eval", "verify", "validate", "info", "data check"} <= set(with_json), sorted(with_json)
    assert set(with_json.values()) == {(True, "print one JSON object instead of tables")}, with_json
    out = {p.name: p for p in commands["bench"].params}["out"]
    assert (out.opts, out.is_flag) == (["--out", "-o"], False)


def test_backend_is_a_registry_runner_in_every_command() -> None:
    """`--backend` picks a runner from the backend registry wherever it is an option; `xpr export
    --backend` used to pick the TensorRT flavour that builds the engine (that is `--trt-flavour` now).
    Every name a command's `--backend` help lists is a registered backend, none a TensorRT flavour."""
    from xpr_deploy.bundle.schema import TRT_FLAVOURS
    from xpr_deploy.runners import BACKENDS

    with_backend = {}
    for name, cmd in _all_commands(typer.main.get_command(app)).items():
        for p in cmd.params:
            if "--backend" in p.opts:
                choices = re.search(r"[\w-]+(?: \| [\w-]+)+", p.help or "")
                assert choices, f"xpr {name} --backend: its help lists no backend names ({p.help!r})"
                with_backend[name] = choices.group(0).split(" | ")
    assert {"predict", "bench", "listen"} <= set(with_backend) and "export" not in with_backend, sorted(with_backend)
    for name, listed in with_backend.items():
        assert set(listed) <= set(BACKENDS) and not set(listed) & set(TRT_FLAVOURS), (name, listed)
    assert with_backend["predict"] == with_backend["listen"] == list(BACKENDS)


def test_export_trt_flavour_is_checked_and_backend_is_gone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`xpr export --trt-flavour` takes auto or a TensorRT flavour (bundle.schema), any other value is
    one line and exit 2 before any work; `xpr export --backend` is now a usage error. In this process:
    the claim is the command's options and messages, not a second interpreter importing torch."""
    from xpr_deploy.bundle.schema import TRT_FLAVOURS

    monkeypatch.chdir(tmp_path)

    params = _params("export")
    assert "backend" not in params and params["trt_flavour"].opts == ["--trt-flavour"]
    for good in ("auto", *TRT_FLAVOURS):  # accepted: the next check (no checkpoint, no --config) answers
        code, _, err = xpr_main(capsys, monkeypatch, "export", "--no-engine", "--trt-flavour", good)
        assert code == 2 and err.strip().splitlines() == [
            "error: give a checkpoint, or --config tiny|paper for random weights"
        ], (good, err)
    code, _, err = xpr_main(capsys, monkeypatch, "export", "--config", "tiny", "--trt-flavour", "tensorrt-llm")
    assert code == 2 and err.strip().splitlines() == [
        "error: --trt-flavour must be auto, tensorrt-rtx or tensorrt, not 'tensorrt-llm'"
    ], err
    code, _, err = xpr_main(capsys, monkeypatch, "export", "--config", "tiny", "--backend", "tensorrt")
    assert code == 2 and "No such option: --backend" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing exported
