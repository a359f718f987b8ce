"""The fuzz campaign's bookkeeping: every case a test tries is tallied, and the total is printed at
the end of the run (CI output and the issue note quote it).

Tests marked `fuzz` are the long campaign: they run only when asked for (`pytest -m fuzz`) and are
deselected otherwise (a skip would fail CI's guard, tests/conftest.py); the unmarked tests in this
folder are the fast subset that every `make test` runs.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

#: `.ci/run`'s time-boxed slice of the long campaign: XPR_FUZZ_SEED varies the generated cases (0, the
#: default, is the fixed campaign; the seed is printed at the end so a failure replays), XPR_FUZZ_BUDGET
#: (seconds, whole session) stops generating cases once spent; the cases run up to then are all judged.
FUZZ_SEED = int(os.environ.get("XPR_FUZZ_SEED", "0") or 0)
FUZZ_BUDGET = float(os.environ.get("XPR_FUZZ_BUDGET", "0") or 0)
_START = time.monotonic()


@dataclass
class Tally:
    """Cases tried and passed per campaign (e.g. "dicom/predict", "bundle/verify")."""

    tried: Counter[str] = field(default_factory=Counter)
    passed: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    budget_spent: bool = False  # XPR_FUZZ_BUDGET ran out before every case was generated

    def record(self, campaign: str, case: str, problem: str | None) -> None:
        self.tried[campaign] += 1
        if problem is None:
            self.passed[campaign] += 1
        else:
            self.failures.append(f"{campaign}: {case}: {problem}")

    def as_dict(self) -> dict:
        """What an xdist worker sends its controller (`workeroutput` takes plain data)."""
        return {
            "tried": dict(self.tried),
            "passed": dict(self.passed),
            "failures": self.failures,
            "budget_spent": self.budget_spent,
        }

    def add(self, other: dict) -> None:
        self.tried.update(other["tried"])
        self.passed.update(other["passed"])
        self.failures.extend(other["failures"])
        self.budget_spent |= other["budget_spent"]


_TALLY = Tally()


@pytest.fixture(scope="session")
def fuzz_tally() -> Tally:
    return _TALLY


@pytest.fixture(scope="session")
def fuzz_seed() -> int:
    return FUZZ_SEED


def budget_left(tally: Tally) -> bool:
    """False once XPR_FUZZ_BUDGET seconds have passed since the session started (never without one);
    `tally` (the `fuzz_tally` fixture) records it for the summary."""
    if FUZZ_BUDGET and time.monotonic() - _START > FUZZ_BUDGET:
        tally.budget_spent = True
        return False
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "fuzz" in (config.option.markexpr or ""):
        return
    # deselected, not skipped: the long campaign is a run of its own (`pytest -m fuzz`, .ci/run's slice)
    long = [item for item in items if item.get_closest_marker("fuzz")]
    if long:
        items[:] = [item for item in items if not item.get_closest_marker("fuzz")]
        config.hook.pytest_deselected(items=long)


def pytest_sessionfinish(session: pytest.Session) -> None:
    out = getattr(session.config, "workeroutput", None)  # set in an xdist worker
    if out is not None and _TALLY.tried:
        out["fuzz_tally"] = _TALLY.as_dict()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    write_summary(terminalreporter, _TALLY)


def write_summary(tr, tally: Tally) -> None:
    """The campaign's section of the run's summary: in a plain run from this process's tally, under
    xdist from the workers' tallies added up by the controller (tests/conftest.py)."""
    if not tally.tried:
        return
    tr.section("fuzz campaign")
    replay = f"XPR_FUZZ_SEED={FUZZ_SEED}" + (f" XPR_FUZZ_BUDGET={FUZZ_BUDGET:g}" if FUZZ_BUDGET else "")
    tr.write_line(f"seed {FUZZ_SEED} (replay: {replay} pytest -m fuzz tests/fuzz)")
    if tally.budget_spent:
        tr.write_line(f"time budget of {FUZZ_BUDGET:g} s spent: the cases generated until then were all run")
    for campaign in sorted(tally.tried):
        tr.write_line(f"{campaign}: {tally.tried[campaign]} cases tried, {tally.passed[campaign]} passed")
    total, ok = sum(tally.tried.values()), sum(tally.passed.values())
    tr.write_line(f"total: {total} cases tried, {ok} passed, {total - ok} failed")
    for line in tally.failures[:50]:
        tr.write_line(f"  FAILED {line}")
