"""Atomic outputs: all or nothing, with ordinary permissions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xpr_deploy.io import FolderLocked, OutputError, atomic_dir, atomic_path, folder_lock, recover_dir, write_json


def test_atomic_file_and_dir_modes(tmp_path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    write_json(tmp_path / "a.json", {"x": 1})
    with atomic_dir(tmp_path / "bundle") as d:
        (d / "f").write_text("x")
    # mkstemp/mkdtemp would leave 0600/0700: outputs are for other people and programs too
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "bundle").stat().st_mode & 0o777 == 0o777 & ~umask
    assert (tmp_path / "bundle" / "f").read_text() == "x"


def test_failure_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "out.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "bundle") as d:
        (d / "model.onnx").write_bytes(b"half")
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_existing_dir_replaced_only_on_success(tmp_path: Path) -> None:
    dest = tmp_path / "bundle"
    dest.mkdir()
    (dest / "old").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(dest) as d:
        (d / "new").write_text("new")
        raise RuntimeError("boom")
    assert [p.name for p in dest.iterdir()] == ["old"]
    with atomic_dir(dest) as d:
        (d / "new").write_text("new")
    assert [p.name for p in dest.iterdir()] == ["new"]


def test_unwritable_parent(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot write"):
        write_json(blocker / "sub" / "a.json", {})


def test_folder_lock_refuses_a_second_holder_and_leaves_nothing(tmp_path: Path) -> None:
    """flock is per open file: a second holder, even in this process, is refused with the holder's pid."""
    run = tmp_path / "run"
    with folder_lock(run, "another xpr train") as lock:
        assert lock.read_text().strip() == str(os.getpid())
        who = rf"^{run}: in use by another xpr train \(pid {os.getpid()}\)"
        with pytest.raises(FolderLocked, match=who), folder_lock(run, "another xpr train"):
            pass
        assert lock.exists()
    assert not run.exists()  # created for the lock, nothing else written: removed again


def test_folder_swap_refuses_a_file_and_recovers_old(tmp_path: Path) -> None:
    f = tmp_path / "F"
    f.write_text("notes")
    with pytest.raises(OutputError, match="not a folder"), atomic_dir(f):
        pass
    assert f.read_text() == "notes" and sorted(p.name for p in tmp_path.iterdir()) == ["F"]
    # the state a crash between the swap's two renames leaves: only .last.old
    (tmp_path / ".last.old").mkdir()
    (tmp_path / ".last.old" / "meta.json").write_text("{}")
    assert recover_dir(tmp_path / "last") == tmp_path / "last"
    assert (tmp_path / "last" / "meta.json").is_file() and not (tmp_path / ".last.old").exists()
