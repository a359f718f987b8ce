"""The backend registry: each backend declared once, where its runner is defined, and every place that
offers a choice of backend (make_runner, --backend checks, validate's rows, doctor) reads it."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_export_support import trained_ckpt  # noqa: F401  (fixture)

from xpr_deploy.errors import ConfigError
from xpr_deploy.runners import BACKENDS, make_runner, open_source
from xpr_deploy.runners.registry import FP16_GATE, BackendSpec, ParityRow, register_backend


def test_every_backend_declares_what_the_callers_read() -> None:
    assert {"eager", "onnx", "engine"} <= set(BACKENDS)
    for name, spec in BACKENDS.items():
        assert spec.name == name and spec.help and spec.artefact and callable(spec.build)
        assert spec.needs in ("checkpoint", "bundle") and spec.devices
        for row in spec.parity:
            assert row.candidate is not None and row.gate.output in ("logits", "prob") and row.gate.atol > 0
    rows = [r.name for s in BACKENDS.values() for r in s.parity]
    assert len(rows) == len(set(rows)), "a parity row name is declared twice"


def test_a_backend_cannot_be_declared_twice() -> None:
    onnx = BACKENDS["onnx"]
    assert register_backend(onnx) is onnx  # the same declaration again (a module re-imported) is harmless
    with pytest.raises(ValueError, match="declared twice"):
        register_backend(BackendSpec("onnx", "other", needs="bundle", artefact="x", build=onnx.build))


def test_unknown_backend_is_one_line() -> None:
    with pytest.raises(ConfigError, match="unknown backend 'tflite': choose one of onnx, eager, engine"):
        make_runner(Path("/nonexistent"), "tflite")


def test_a_registered_backend_is_built_by_make_runner_and_becomes_a_validate_row(trained_ckpt) -> None:  # noqa: F811
    """Adding a backend is one registration: make_runner builds it, validate's candidates list its row."""
    from xpr_deploy.runners.eager import EagerRunner
    from xpr_deploy.validate.run import candidates

    built = []

    def build(source, req):
        built.append(req.name)
        return EagerRunner(lambda: None, name=req.name or "probe")

    def candidate(source, model, row):
        return None, "probe backend: not runnable here"

    spec = BackendSpec(
        "probe", "a test backend", needs="checkpoint", artefact="checkpoint", build=build,
        parity=(ParityRow("probe-row", FP16_GATE, None, candidate),),
    )  # fmt: skip
    register_backend(spec)
    try:
        src = open_source(trained_ckpt)
        r = make_runner(src, "probe", name="p1")
        assert built == ["p1"] and r.name == "p1"
        rows = {c.name: c for c in candidates(src, model=None)}
        assert list(rows)[-1] == "probe-row" and rows["probe-row"].runner is None
        assert rows["probe-row"].skip == "probe backend: not runnable here" and rows["probe-row"].gate == FP16_GATE
    finally:
        del BACKENDS["probe"]


def test_bundle_backend_on_a_checkpoint_is_one_line(trained_ckpt) -> None:  # noqa: F811
    from xpr_deploy.errors import PredictError

    with pytest.raises(PredictError, match="the onnx backend needs an export bundle"):
        make_runner(trained_ckpt, "onnx")


def test_an_optional_row_is_left_out_when_the_bundle_lacks_its_artefact(trained_ckpt) -> None:  # noqa: F811
    """A bundle without --int8 gets no INT8 row (validate's table and parity.json stay as they were)."""
    from xpr_deploy.validate.run import candidates

    names = [c.name for c in candidates(open_source(trained_ckpt), model=None)]
    assert names == ["onnxruntime-fp32", "onnxruntime-fp16", "eager-fp16", "engine"]


def test_doctor_has_a_line_per_backend() -> None:
    from xpr_deploy.doctor import run_checks

    names = {c.name for c in run_checks()}
    assert {f"backend {n}" for n in BACKENDS} <= names
