"""The Triton environment's cache folders (numpy 1.x for the stub, the assembled Python backend) are
published whole through `io.atomic_dir`: a failed or killed build leaves nothing a later run would
take for finished, and its temporary is swept by the next run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from xpr_deploy.io import _HOST
from xpr_deploy.serve import ServeError, env


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_failed_numpy_install_leaves_nothing_and_sweeps_a_killed_runs_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XPR_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("XPR_TRITON_NUMPY1", raising=False)
    for key, value in {"PIP_CONFIG_FILE": "/dev/null", "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": ""}.items():
        monkeypatch.setenv(key, value)  # pip cannot find numpy: the install fails, quickly and for real
    dest = env.numpy1_dir(create=False)
    stale = dest.with_name(f".{dest.name}.xpr-{_dead_pid()}-{_HOST}-abcdefgh.tmp")
    (stale / "numpy").mkdir(parents=True)  # what a run killed mid-install left
    with pytest.raises(ServeError, match=r"cannot install numpy==.* into .*numpy-"):
        env.numpy1_dir()
    assert list(dest.parent.iterdir()) == []  # neither a half-installed folder nor any temporary


def test_a_cache_folder_is_built_once_and_the_first_published_copy_stays(tmp_path: Path) -> None:
    dest = tmp_path / "triton" / "backends-abc"

    def other_process_first(tmp: Path) -> None:
        (tmp / "mine").write_text("late")
        dest.mkdir()  # another process renamed its copy into place while this one was building
        (dest / "theirs").write_text("first")

    assert env._publish(dest, other_process_first) == dest
    assert [p.name for p in dest.iterdir()] == ["theirs"]  # a running server may be using it
    assert [p.name for p in dest.parent.iterdir()] == ["backends-abc"]  # our copy dropped
    env._publish(dest, lambda tmp: pytest.fail("rebuilt a published folder"))
