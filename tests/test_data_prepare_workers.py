"""`xpr data prepare --workers N`: same bytes as one worker, bad files and dead workers cost only
themselves, a SIGKILLed run resumes, SIGINT/SIGTERM stop the pool without leftovers (issue 16)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
from test_export_support import xpr_here

from xpr_deploy.data import PreprocessSettings, load_dataset, prepare_files, write_synthetic
from xpr_deploy.data.prepare import PrepareProgress, default_workers

XPR = [sys.executable, "-m", "xpr_deploy.cli"]
SIZE = "224x112"
SETTINGS = PreprocessSettings(img_size=(224, 112))
#: a complete cache holds only these names (no temporaries, whatever io.py calls them)
ENTRY = re.compile(r"^([0-9a-f]{64}\.(npy|json)|settings\.json)$")


def xpr(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*XPR, *args], capture_output=True, text=True, timeout=timeout)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def complete_entries(cache: Path) -> int:
    return sum(1 for p in cache.rglob("*.npy") if ENTRY.match(p.name) and p.with_suffix(".json").exists())


@pytest.fixture(scope="module")
def slow_enough(tmp_path_factory):
    """24 uncompressed images big enough (768x384) that a run can be stopped half-way; plus its
    one-worker cache as the reference."""
    root = tmp_path_factory.mktemp("prep") / "v"
    write_synthetic(root, 12, "vindr", size=(768, 384), seed=7, transfer_syntax="uncompressed")
    ref = root.parent / "ref"
    paths = [p for pair in load_dataset(root).pairs for p in (pair.cc, pair.mlo)]
    rep = prepare_files(paths, ref, SETTINGS, workers=1)
    assert rep.prepared == 24 and rep.workers == 1
    return root, ref


def test_two_workers_write_the_bytes_of_one_then_reuse_them(synth_vindr, tmp_path):
    paths = [p for pair in load_dataset(synth_vindr).pairs for p in (pair.cc, pair.mlo)]
    one = prepare_files(paths, tmp_path / "one", SETTINGS, workers=1)
    two = prepare_files(paths, tmp_path / "two", SETTINGS, workers=2)
    assert (one.prepared, two.prepared, two.workers, two.rejected, two.failed) == (16, 16, 2, [], [])
    a, b = tree(tmp_path / "one"), tree(tmp_path / "two")
    assert len(a) == 2 * 16 + 1 and a == b  # byte for byte, names included
    again = prepare_files(paths, tmp_path / "two", SETTINGS)  # default: the cores available
    assert (again.prepared, again.reused) == (0, 16)
    assert again.workers == min(default_workers(), 16) == min(len(os.sched_getaffinity(0)), 16)
    assert tree(tmp_path / "two") == a


def test_synth_writes_one_transfer_syntax_when_asked(tmp_path, capfd, monkeypatch):
    s = write_synthetic(tmp_path / "j", 1, size=(128, 64), transfer_syntax="jpeg2000")
    assert {str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID) for f in s.files} == {
        "1.2.840.10008.1.2.4.90"
    }
    r = xpr_here(capfd, monkeypatch, "synth", str(tmp_path / "x"), "--breasts", "1", "--transfer-syntax", "lzw")
    assert r.returncode == 2 and "lzw" in r.stderr and "Traceback" not in r.stderr


def test_damaged_files_cost_only_themselves(synth_vindr, tmp_path, capfd, monkeypatch):
    import shutil

    root = tmp_path / "v"
    shutil.copytree(synth_vindr, root)
    files = sorted(root.rglob("*.dicom"))
    syntax = {f: str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID) for f in files}
    raw = next(f for f in files if syntax[f] == "1.2.840.10008.1.2.1")
    j2k = next(f for f in files if syntax[f] == "1.2.840.10008.1.2.4.90")
    raw.write_bytes(raw.read_bytes()[:-5000])  # header intact, pixel data short: the index measures it
    data = bytearray(j2k.read_bytes())
    soc = data.index(b"\xff\x4f\xff\x51")  # SOC + SIZ: the codestream header destroyed, the DICOM intact
    data[soc + 2 : soc + 40] = b"\x00" * 38
    j2k.write_bytes(bytes(data))
    cache = tmp_path / "c"
    r = xpr("data", "prepare", str(root), "--cache", str(cache), "--size", SIZE, "--workers", "2", "--json")
    assert r.returncode == 0, r.stderr  # like `data check`: rejects are reported, not fatal
    rep = json.loads(r.stdout)
    # the short file is refused while indexing (its partner then has no pair); the broken stream in a worker
    assert [x["path"] for x in rep["index_rejects"] if x["path"].endswith(".dicom")] == [str(raw)]
    assert rep["prepared"] == 13 and rep["failed"] == [] and rep["pairs"] == 7 and rep["pairs_ready"] == 6
    assert [x["path"] for x in rep["rejected"]] == [str(j2k)]
    for x in rep["rejected"] + rep["index_rejects"]:
        assert "\n" not in x["reason"]
    assert rep["rejected"][0]["reason"].startswith(str(j2k) + ": cannot decode")
    assert "Traceback" not in r.stderr
    r = xpr_here(capfd, monkeypatch, "data", "prepare", str(root), "--cache", str(cache), "--size", SIZE,
                 "--workers", "2", "--strict")  # fmt: skip
    assert r.returncode == 1 and "13 reused, 1 rejected" in r.stdout and str(j2k) in r.stdout
    r = xpr_here(capfd, monkeypatch, "data", "prepare", str(root), "--cache", str(cache), "--workers", "0")
    assert r.returncode == 2 and "--workers 0" in r.stderr and "Traceback" not in r.stderr


def test_a_killed_worker_costs_only_its_file(synth_vindr, tmp_path):
    """A FIFO blocks the worker that opens it; that worker is then SIGKILLed. The pool reports the
    file as failed with the reason, starts another worker, and finishes the rest (no hang)."""
    fifo = tmp_path / "stuck.dicom"
    os.mkfifo(fifo)
    good = [p for pair in load_dataset(synth_vindr).pairs for p in (pair.cc, pair.mlo)][:6]
    killed: list[int] = []

    def kill_the_stuck_one(ev: PrepareProgress) -> None:
        for pid, path in ev.in_flight.items():
            if path == str(fifo) and not killed:
                killed.append(pid)
                os.kill(pid, signal.SIGKILL)

    def hung(signum, frame):
        raise TimeoutError("the pool hung after a worker died")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    try:
        rep = prepare_files(
            [good[0], fifo, *good[1:]], tmp_path / "c", SETTINGS, workers=2, progress=kill_the_stuck_one
        )
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert len(killed) == 1
    assert rep.prepared == 6 and rep.rejected == [] and len(rep.failed) == 1
    assert rep.failed[0]["path"] == str(fifo)
    assert "worker process died" in rep.failed[0]["reason"] and "SIGKILL" in rep.failed[0]["reason"]


def _start(root: Path, cache: Path) -> subprocess.Popen:
    cmd = [*XPR, "data", "prepare", str(root), "--cache", str(cache), "--size", SIZE, "--workers", "2", "--json"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for_entries(proc: subprocess.Popen, cache: Path, n: int) -> None:
    deadline = time.monotonic() + 120
    while complete_entries(cache) < n:
        assert proc.poll() is None, f"finished before it could be stopped: {proc.communicate()}"
        assert time.monotonic() < deadline, "no cache entry appeared"
        time.sleep(0.01)


def _group_gone(pgid: int) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_sigkill_mid_run_then_resume(slow_enough, tmp_path, capfd, monkeypatch):
    root, ref = slow_enough
    cache = tmp_path / "c"
    proc = _start(root, cache)
    _wait_for_entries(proc, cache, 1)
    os.killpg(proc.pid, signal.SIGKILL)  # the parent and both workers, mid-write or not
    proc.communicate(timeout=60)
    assert _group_gone(proc.pid)
    finished = complete_entries(cache)
    assert 1 <= finished < 24
    # the resume, in this process: the claim is what it makes of the killed run's cache
    r = xpr_here(capfd, monkeypatch, "data", "prepare", str(root), "--cache", str(cache), "--size", SIZE,
                 "--workers", "2", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert (rep["reused"], rep["prepared"], rep["rejected"], rep["failed"]) == (finished, 24 - finished, [], [])
    done = {k: v for k, v in tree(cache).items() if ENTRY.match(Path(k).name)}
    assert done == tree(ref)  # every reused entry is whole, and all equal the one-worker run


@pytest.mark.parametrize(
    ("signum", "whole_group", "code"),
    [(signal.SIGTERM, False, 143), (signal.SIGINT, True, 130)],
    ids=["term", "ctrl-c"],
)
def test_sigterm_and_ctrl_c_stop_cleanly(slow_enough, tmp_path, signum, whole_group, code):
    root, _ = slow_enough
    cache = tmp_path / "c"
    proc = _start(root, cache)
    _wait_for_entries(proc, cache, 1)
    (os.killpg if whole_group else os.kill)(proc.pid, signum)  # Ctrl-C reaches the whole group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "interrupted by" in err and "run the same command again to resume" in err and "Traceback" not in err
    assert _group_gone(proc.pid), "a worker outlived the run"
    left = [p for p in cache.rglob("*") if p.is_file() and not ENTRY.match(p.name)]
    assert left == []  # no temporaries
    assert 1 <= complete_entries(cache) < 24
