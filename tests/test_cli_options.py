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
