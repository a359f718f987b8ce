"""One option, one meaning: the commands that share a concern declare its options once (issue 24)."""

from __future__ import annotations

from typing import Any

import typer

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
