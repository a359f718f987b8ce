"""Shared fixtures for the export / engine / validate tests (no tests here; imported by those modules).

Trained weights, as the issue asks: the fixture trains the tiny preset briefly (AdamW, stages 3-4,
CTB and head trainable as in `xpr train`) on synthetic studies and caches the checkpoint under
.cache/ (gitignored), keyed by a version string. Exact score ties (flat background windows) are
broken the same way in eager and ONNX (lower window index), near-ties are reported by validate.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
XPR = REPO / ".venv" / "bin" / "xpr"
CACHE = Path(os.environ.get("XPR_TEST_CACHE", REPO / ".cache" / "xpr-tests"))
TRAINED_VERSION = "tiny-trained-v3"  # v3: synthetic lesions 2x larger


def train_tiny(dest: Path, steps: int = 12, seed: int = 0) -> Path:
    """A few AdamW steps of the tiny model on synthetic CC/MLO pairs; saved with save_checkpoint."""
    import torch.nn.functional as F

    from xpr_deploy.config import get_config
    from xpr_deploy.data.dicom import PreprocessSettings
    from xpr_deploy.model.xpruning import build_model
    from xpr_deploy.train.checkpoint import save_checkpoint
    from xpr_deploy.validate import synthetic_inputs

    cfg = get_config("tiny")
    torch.manual_seed(seed)
    model = build_model(cfg).train()
    cc, mlo, y = synthetic_inputs(cfg.img_size, 16, seed=101)
    x1, x2, t = torch.from_numpy(cc), torch.from_numpy(mlo), torch.from_numpy(y).long()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = torch.from_numpy(rng.choice(len(t), 4, replace=False))
        loss = F.cross_entropy(model(x1[idx], x2[idx]), t[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    meta: dict[str, Any] = {
        "label_rule": "synthetic:lesion",
        "preprocess": PreprocessSettings.for_config(cfg).to_dict(),
        "threshold": 0.5,
        "threshold_method": "fixed-0.5",
        "class_names": list(cfg.class_names),
        "note": f"test fixture: {steps} AdamW steps on synthetic studies",
    }
    save_checkpoint(dest, model, meta)
    return dest


@contextmanager
def shared_build(dest: Path) -> Iterator[None]:
    """Hold `dest`'s lock while checking for or building it: two runs at once (two worktrees sharing
    .cache/, or XPR_TEST_BUNDLE_CACHE) build a shared artefact once and never read one half-written."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def trained_ckpt() -> Path:
    dest = CACHE / TRAINED_VERSION
    with shared_build(dest):
        if not (dest / "meta.json").is_file():
            shutil.rmtree(dest, ignore_errors=True)
            train_tiny(dest)
    return dest


@pytest.fixture(scope="session")
def fp16_bundle(trained_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """FP32 + FP16 graphs with selection outputs, TensorRT-RTX sm_86 engine of the FP16 graph, parity."""
    from xpr_deploy.export import ExportOptions
    from xpr_deploy.export.bundle import load_source
    from xpr_deploy.validate import export_and_validate

    model, meta = load_source(trained_ckpt)
    out = tmp_path_factory.mktemp("bundles") / "tiny-fp16"
    return export_and_validate(model, meta, out, ExportOptions(fp16=True, with_selection=True, parity_samples=6))


@pytest.fixture(scope="session")
def plugin_bundle(trained_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """FP32 graph in plugin mode (XprWindowSelect nodes) + its TensorRT-RTX engine."""
    from xpr_deploy.export import ExportOptions
    from xpr_deploy.export.bundle import load_source
    from xpr_deploy.validate import export_and_validate

    model, meta = load_source(trained_ckpt)
    out = tmp_path_factory.mktemp("bundles") / "tiny-plugin"
    return export_and_validate(model, meta, out, ExportOptions(plugin=True, parity_samples=2))


def xpr_in_process(*args: Any) -> str:
    """`xpr ARGS` through typer's CliRunner in this process, for a step whose claim is not about the
    process (a fixture's export): no second interpreter importing torch. Returns the output."""
    from typer.testing import CliRunner

    from xpr_deploy.cli import app

    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0 and res.exception is None, (
        f"xpr {args[0]} failed: {res.exception!r}\n{res.output[-3000:]}"
    )
    return res.output


def xpr_main(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *args: Any,
    cwd: str | Path | None = None,
    env: dict[str, str] | None = None,
    interpreter_stderr: bool = False,
) -> tuple[int, str, str]:
    """`xpr ARGS` through the real entry point (its one-line errors and exit codes), in this process, for
    a claim about options and messages: (exit code, stdout, stderr), in the order of
    `subprocess.CompletedProcess(args, code, out, err)`. An exception `main` lets out is the test's error.
    Pass `capfd` for `capsys` to see, as a process's stderr would, what C code (a decoder, ONNX Runtime)
    writes to file descriptor 2 as well.

    For this call only: `cwd` is the working folder, `env` variables are set (COLUMNS also as the width
    of `cli.common`'s consoles, which read it once, at import), and the signal handlers,
    unraisable hook and `signals.caught` that `main` installs are put back after it. `interpreter_stderr`:
    stderr also holds what a fresh interpreter would print there and pytest takes in this process,
    so "nothing on stderr but one line" still means it: Python warnings (under Python's default
    filters), log records that no handler of the program takes (logging's last resort, WARNING+),
    "Exception ignored in ..." and "Exception in thread ..." (Python's own hooks, not pytest's)."""
    import contextlib
    import signal
    import sys
    import threading
    import warnings

    from xpr_deploy.cli import main, signals

    monkeypatch.setattr(sys, "argv", ["xpr", *map(str, args)])
    capsys.readouterr()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    recording = warnings.catch_warnings(record=True) if interpreter_stderr else contextlib.nullcontext([])
    last_resort = _LastResort()
    with pytest.MonkeyPatch.context() as call, recording as warned:
        call.setattr(sys, "unraisablehook", sys.unraisablehook)
        call.setattr(signals, "_previous_unraisable_hook", signals._previous_unraisable_hook)
        call.setattr(signals, "caught", None)
        if cwd is not None:
            call.chdir(cwd)
        for key, value in (env or {}).items():
            call.setenv(key, value)
        if (env or {}).get("COLUMNS", "").isdigit():  # rich took COLUMNS when cli.common made its consoles
            from xpr_deploy.cli import common

            for console in (common.console, common.err_console):
                call.setattr(console, "_width", int((env or {})["COLUMNS"]))
        if interpreter_stderr:  # the hooks a fresh interpreter prints with (pytest's would collect it)
            call.setattr(sys, "unraisablehook", sys.__unraisablehook__)  # "Exception ignored in ..."
            call.setattr(threading, "excepthook", threading.__excepthook__)  # "Exception in thread ..."
            _python_default_warning_filters()
            logging.getLogger().addHandler(last_resort)
        try:
            with pytest.raises(SystemExit) as e:
                main()
        finally:
            logging.getLogger().removeHandler(last_resort)
            for s, h in handlers.items():
                if h is not None:  # None: not set from Python, nothing to put back
                    signal.signal(s, h)
    out, err = capsys.readouterr()
    if interpreter_stderr:
        shown = [warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line) for w in warned]
        err += "".join(shown) + "".join(f"{line}\n" for line in last_resort.lines)
    return int(e.value.code or 0), out, err


def xpr_here(
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *args: object,
    cwd: str | Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`xpr ARGS` in this process (`xpr_main`, stderr as a fresh interpreter's would be), as the
    CompletedProcess a subprocess run gives: for claims about exit codes, messages and files, not about
    the process (signals, limits, a full stdout, a call that may block keep a subprocess). Not for a run
    whose stderr must hold its workers' output: they write to the forkserver's descriptors, not this capture."""
    code, out, err = xpr_main(capfd, monkeypatch, *args, cwd=cwd, env=env, interpreter_stderr=True)
    return subprocess.CompletedProcess([str(a) for a in args], code, out, err)


def _python_default_warning_filters() -> None:
    """The filters of `python` without -W or PYTHONWARNINGS (a release build): warnings are shown
    once per place, except deprecations outside __main__, import and resource warnings."""
    import warnings

    warnings.resetwarnings()
    warnings.simplefilter("default")
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.simplefilter("ignore", category)
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")


class _LastResort(logging.Handler):
    """The records logging's last resort would print to stderr in a process of its own: WARNING and
    above, from a logger whose chain has no handler but pytest's (which a fresh process lacks)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        logger: logging.Logger | None = logging.getLogger(record.name)
        while logger is not None:
            if any(h is not self and not type(h).__module__.startswith("_pytest") for h in logger.handlers):
                return
            logger = logger.parent if logger.propagate else None
        self.lines.append(record.getMessage())
