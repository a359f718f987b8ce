"""Shared fixtures. CI has 2 cores: `make test` runs the suite on two pytest-xdist workers (one torch
thread each; alone, torch gets both). What two workers or two runs at once would build alike (the
trained checkpoint in .cache/, the tiny bundles) is built under a lock (`shared_build`), once, and
never read half-written; the other session artefacts are built once by the one worker that runs the
modules needing them (the scheduler below)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

#: set by pytest-xdist in each of its workers; None in a plain `pytest` run
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
torch.set_num_threads(1 if XDIST_WORKER else 2)


# --- synthetic datasets (data layer, issue 3): small, built once per session, read-only for tests --

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def synth_vindr(tmp_path_factory):
    """8 synthetic breasts (4 malignant) in the VinDr-Mammo layout, 320x160 stored pixels. Do not modify."""
    from xpr_deploy.data.synth import write_synthetic

    root = tmp_path_factory.mktemp("synth") / "vindr"
    write_synthetic(root, 8, "vindr", size=(320, 160), seed=1)
    return root


@pytest.fixture(scope="session")
def synth_cbis(tmp_path_factory):
    """8 synthetic breasts (4 malignant) in the CBIS-DDSM layout, 320x160 stored pixels. Do not modify."""
    from xpr_deploy.data.synth import write_synthetic

    root = tmp_path_factory.mktemp("synth") / "cbis"
    write_synthetic(root, 8, "cbis", size=(320, 160), seed=2)
    return root


# --- bundles built once for the whole session (issue 25: each kind is exported once) -----------------
# The trained tiny checkpoint and its FP16 / plugin bundles live in test_export_support.py; imported
# here, they are conftest fixtures that every module shares (a module that imports them itself gets
# its own copy: an export and a TensorRT-RTX build more).
from test_export_support import (  # noqa: E402, F401
    fp16_bundle,
    plugin_bundle,
    shared_build,
    trained_ckpt,
    xpr_in_process,
)


def _random_tiny_bundle(dest: Path, **options: Any) -> Path:
    from xpr_deploy.export.bundle import ExportOptions, export_bundle, load_source

    with shared_build(dest):
        if not (dest / "manifest.json").is_file():
            model, meta = load_source(None, "tiny", 0)
            export_bundle(model, meta, dest, ExportOptions(engine=False, parity_samples=0, **options))
    return dest


def _bundle_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """XPR_TEST_BUNDLE_CACHE=DIR keeps the random tiny bundles between runs (a developer's loop); else
    they live in this run's temporary folder, the one folder all xdist workers share (built once)."""
    if os.environ.get("XPR_TEST_BUNDLE_CACHE"):
        return Path(os.environ["XPR_TEST_BUNDLE_CACHE"])
    base = tmp_path_factory.getbasetemp()
    return (base.parent if XDIST_WORKER else base) / "tiny-bundles"


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The random tiny model (seed 0) exported static batch 1, name "tiny", no engine, no parity run.
    Shared by every module that needs a bundle but does not test the export: do not modify (copy it)."""
    return _random_tiny_bundle(_bundle_cache(tmp_path_factory) / "serve-static", name="tiny")


@pytest.fixture(scope="session")
def tiny_selection_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same weights with kept-window outputs (heatmaps, regions), static batch 1, name "tiny". Do not modify."""
    return _random_tiny_bundle(_bundle_cache(tmp_path_factory) / "selection-static", name="tiny", with_selection=True)


@pytest.fixture(scope="session")
def tiny_dynamic_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same weights exported with a dynamic batch axis (--max-batch 4), name "tdyn". Do not modify."""
    return _random_tiny_bundle(_bundle_cache(tmp_path_factory) / "serve-dynamic", name="tdyn", max_batch=4)


# --- a tiny checkpoint whose windows do not tie ------------------------------------------------


@pytest.fixture(scope="session")
def untied_tiny_checkpoint(tmp_path_factory):
    """`make(meta, name)`: a checkpoint of the tiny model with its LayerNorms off their init, and
    `meta` merged over tiny's preprocessing. At init every window score ties exactly, so which
    windows are kept would be decided by ties, not by the model."""
    from torch import nn

    from xpr_deploy import build_model
    from xpr_deploy.config import get_config
    from xpr_deploy.data.dicom import PreprocessSettings
    from xpr_deploy.train.checkpoint import save_checkpoint

    cfg = get_config("tiny")

    def make(meta: dict, name: str = "ckpt"):
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        g = torch.Generator().manual_seed(1)
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.data = torch.rand(m.weight.shape, generator=g) + 0.5
                m.bias.data = 0.1 * torch.randn(m.bias.shape, generator=g)
        full = {"preprocess": PreprocessSettings.for_config(cfg).to_dict(), "label_rule": "vindr:birads>=4", **meta}
        return save_checkpoint(tmp_path_factory.mktemp(name) / "best", model, full)

    return make


# --- the C++ runtime and a real bundle for it: built once, shared by test_engines_cpp and test_transfer_syntaxes --

REPO = Path(__file__).resolve().parents[1]
ENGINES = REPO / "engines"
CPP_BUILD = ENGINES / "build"


def _run(cmd: list[Any], timeout: int = 900, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="session")
def xpr_infer() -> Path:
    """Configure + build the C++ example `engines/build/xpr_infer` (incremental; 2 jobs: CI has 2 cores)."""
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed: `make cpp` installs the C++ toolchain and builds engines/")
    steps = [
        [ENGINES / "scripts" / "fetch_onnxruntime.sh"],
        ["cmake", "-S", ENGINES, "-B", CPP_BUILD, "-DCMAKE_BUILD_TYPE=Release", f"-DXPR_PYTHON={sys.executable}"],
        ["cmake", "--build", CPP_BUILD, "-j2", "--target", "xpr_infer"],
    ]
    env = {**os.environ, "XPR_PYTHON": sys.executable}
    CPP_BUILD.mkdir(exist_ok=True)
    with open(CPP_BUILD / ".pytest-build.lock", "w") as lock:  # one build at a time in a shared tree
        fcntl.flock(lock, fcntl.LOCK_EX)
        for cmd in steps:
            res = _run(cmd, env=env)
            assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    exe = CPP_BUILD / "xpr_infer"
    assert exe.is_file()
    return exe


@pytest.fixture(scope="session")
def cpp_bundle(untied_tiny_checkpoint) -> dict[str, Path]:
    """`xpr export CKPT --with-selection` of an untied tiny checkpoint (threshold 0.5): {"ckpt", "bundle"}.
    The real bundle (ONNX + a TensorRT-RTX engine entry when tensorrt-rtx is installed, kept-window
    outputs); parity samples off, `xpr validate` covers those. About two minutes: export it once."""
    ckpt = untied_tiny_checkpoint({"threshold": 0.5}, "cpp")
    bundle = ckpt.parent / "bundle"
    xpr_in_process("export", ckpt, "--with-selection", "--parity-samples", "0", "--out", bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert any(b.get("selection_output") for b in manifest["blocks"]), "bundle has no kept-window outputs"
    return {"ckpt": Path(ckpt), "bundle": bundle}


# --- two workers (pytest-xdist, `make test`): what goes to one worker, and in which order ----------
# A module is one unit of work: its module- and session-scoped fixtures (a Triton start, an INT8
# export, a trained demo) are then built by one worker only. The modules in `_GROUPS` share a costly
# session artefact and go to one worker together. xdist's own `--dist loadgroup` cannot say this
# with pytest 9.2 + xdist 3.8 (it appends the group to `item._nodeid`; pytest 9 reads `item._id`), so
# the scheduler below does it (`pytest_xdist_make_scheduler`).

#: modules that share a costly session artefact, run together by one worker
_GROUPS = {
    "test_export.py": "trained-bundles",  # fp16_bundle, plugin_bundle: exports + TensorRT-RTX builds
    "test_engine.py": "trained-bundles",
    "test_validate.py": "trained-bundles",
    "test_engines_cpp.py": "cpp-bundle",  # cpp_bundle: an export with kept-window outputs
    "test_transfer_syntaxes.py": "cpp-bundle",
}
#: the longest units first (summed from a `--junitxml` run), so that no long unit starts last and
#: leaves the other worker idle at the end; the rest keep their collection order
_LONGEST_FIRST = [
    "trained-bundles", "test_train_learns.py", "cpp-bundle", "test_hostile_outputs.py", "test_serve.py",
    "test_listen.py", "fuzz/test_fuzz_bundle.py", "test_bundle.py", "test_hostile_inputs.py", "test_bench.py",
    "test_dicom_out.py", "test_bench_batch.py", "test_int8.py", "test_listen_options.py", "test_train.py",
    "test_bench_gpu.py",
]  # fmt: skip


def _unit(path: str) -> str:
    """The unit of work a test file belongs to: its group, else the file (relative to tests/)."""
    name = path.rsplit("/", 1)[-1]
    rel = path.split("tests/", 1)[-1]
    return _GROUPS.get(name, rel)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {g: i for i, g in enumerate(_LONGEST_FIRST)}
    # stable, and the same on every worker (xdist checks that the collections agree)
    items.sort(key=lambda item: rank.get(_unit(item.nodeid.split("::", 1)[0]), len(rank)))


@pytest.hookimpl(optionalhook=True)  # an xdist hook, in the controller
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        """xdist's loadscope with `_unit` as the scope, in collection order (longest first)."""

        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid.split("::", 1)[0])

    config.option.loadscopereorder = False  # keep `_LONGEST_FIRST`, not "most tests first"
    return UnitScheduling(config, log)


#: the fuzz campaign's tallies the xdist workers sent back (tests/fuzz/conftest.py prints them added up)
_WORKER_TALLIES: list[dict[str, Any]] = []


@pytest.hookimpl(optionalhook=True)  # an xdist hook: called in the controller as each worker stops
def pytest_testnodedown(node: Any, error: object) -> None:
    tally = getattr(node, "workeroutput", {}).get("fuzz_tally")
    if tally:
        _WORKER_TALLIES.append(tally)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _WORKER_TALLIES:
        from fuzz.conftest import Tally, write_summary

        total = Tally()
        for tally in _WORKER_TALLIES:
            total.add(tally)
        write_summary(terminalreporter, total)


# --- the CI guard (issue 25): in CI a skip is a failure, unless the test needs a GPU ----------------

#: the one reason a test may skip where `CI` is set: hardware CI does not have (or has, for the tests
#: that must not load a real engine). A missing tool, server, browser or package is a failure there.
_HARDWARE = re.compile(r"\bGPU\b")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _skip_reason(rep: pytest.CollectReport | pytest.TestReport) -> str:
    lr = rep.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:
        return str(lr[2]).removeprefix("Skipped: ")
    return str(lr)


def _no_skip_in_ci(rep: pytest.CollectReport | pytest.TestReport) -> None:
    if not in_ci() or not rep.skipped or hasattr(rep, "wasxfail"):
        return
    reason = _skip_reason(rep)
    if _HARDWARE.search(reason):
        return
    rep.outcome = "failed"
    rep.longrepr = f"CI: skipped for a missing dependency, which CI must have: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    outcome = yield
    _no_skip_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> object:
    outcome = yield
    _no_skip_in_ci(outcome.get_result())


@pytest.fixture()
def dest(tmp_path: Path) -> Iterator[Any]:
    """DCMTK's storescp as the node's destination (tests/peers.py), stopped after the test."""
    from peers import StoreSCP

    d = StoreSCP(tmp_path / "dest")
    try:
        yield d
    finally:
        d.stop()
