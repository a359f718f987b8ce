"""The exporter's optimizer without the rewrite rules `SKIPPED_REWRITES` leaves out (they cost up to 38 %
of an export) must give the graph the full onnxscript optimizer gives, byte for byte: if a model change
made a skipped rule match, this fails and the rule goes back in. One capture per variant: the
unoptimized program is optimized twice, once as `to_proto` does and once with every default rule."""

from __future__ import annotations

import pytest

from xpr_deploy.export.onnx import SKIPPED_REWRITES, exported_program, optimizer_without, to_proto
from xpr_deploy.model.xpruning import random_model


@pytest.mark.parametrize(
    "options",
    [{}, {"fp16": True, "with_selection": True}],
    ids=["fp32", "fp16-selection"],
)
def test_skipped_rewrites_change_nothing(options: dict) -> None:
    import onnx_ir as ir

    prog = exported_program(random_model("tiny", 0), optimize=False, **options)
    captured = ir.serde.serialize_model(prog.model)

    def optimized(skipped: tuple[str, ...]) -> bytes:
        prog.model = ir.serde.deserialize_model(captured)
        with optimizer_without(skipped):
            prog.optimize()
        return prog.model_proto.SerializeToString()

    fast, full = optimized(SKIPPED_REWRITES), optimized(())
    assert SKIPPED_REWRITES and fast == full
    assert len(fast) < len(captured.SerializeToString())  # the optimizer ran (it folds and fuses)


def test_to_proto_runs_the_optimizer_without_the_skipped_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `to_proto` hands torch.onnx: onnxscript's default rules less exactly the skipped ones, and
    the default list put back afterwards (even when the export fails)."""
    from onnxscript import rewriter

    default = rewriter._DEFAULT_REWRITE_RULES
    seen: list[tuple[str, ...]] = []

    def capture(*args: object, **kwargs: object) -> None:
        seen.append(tuple(getattr(r, "name", "") for r in rewriter._DEFAULT_REWRITE_RULES))
        raise RuntimeError("stop after the capture")

    import torch

    monkeypatch.setattr(torch.onnx, "export", capture)
    with pytest.raises(Exception, match="stop after the capture"):
        to_proto(random_model("tiny", 0))
    names = tuple(getattr(r, "name", "") for r in default)
    assert seen == [tuple(n for n in names if n not in SKIPPED_REWRITES)] and len(seen[0]) < len(names)
    assert rewriter._DEFAULT_REWRITE_RULES is default


def test_the_skipped_rules_exist_in_the_pinned_onnxscript() -> None:
    """A rule renamed upstream would silently run again: the names must still be onnxscript's."""
    from onnxscript import rewriter

    names = {getattr(r, "name", None) for r in rewriter._DEFAULT_REWRITE_RULES}
    assert set(SKIPPED_REWRITES) <= names
