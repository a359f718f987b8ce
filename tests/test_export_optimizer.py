"""The exporter's optimizer without the rewrite rules `SKIPPED_REWRITES` leaves out (they cost up to 38 %
of an export) must give the graph the full onnxscript optimizer gives, byte for byte: if a model change
made a skipped rule match, this fails and the rule goes back in."""

from __future__ import annotations

import pytest

from xpr_deploy.export.onnx import SKIPPED_REWRITES, to_proto
from xpr_deploy.model.xpruning import random_model


@pytest.mark.parametrize(
    "options",
    [{}, {"fp16": True, "with_selection": True}],
    ids=["fp32", "fp16-selection"],
)
def test_skipped_rewrites_change_nothing(options: dict) -> None:
    model = random_model("tiny", 0)
    fast = to_proto(model, **options).SerializeToString()
    full = to_proto(model, skipped_rewrites=(), **options).SerializeToString()
    assert SKIPPED_REWRITES and fast == full


def test_the_skipped_rules_exist_in_the_pinned_onnxscript() -> None:
    """A rule renamed upstream would silently run again: the names must still be onnxscript's."""
    from onnxscript import rewriter

    names = {getattr(r, "name", None) for r in rewriter._DEFAULT_REWRITE_RULES}
    assert set(SKIPPED_REWRITES) <= names
