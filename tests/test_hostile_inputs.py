"""Issue 21, classes 3, 4 (markup) and 6, through the real `xpr` entry point: files over the resource
budget, special files, hostile folder trees and file names, rich markup in paths and reasons, a full
stdout, and `xpr serve` stopped with Ctrl-C.

Every case asserts what the project promises: the documented exit code, one line naming the file,
no traceback, and the rest of the batch answered. The memory check runs `xpr predict` under
RLIMIT_AS at its peak on clean studies plus 1 GiB (each bomb alone would take 2 GB or more), and
its peak must not grow by more than 256 MB: a file over the budget costs no more than its header.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from test_export_support import xpr_here, xpr_main

from tests.test_dicom_hostile import (
    _finishes,
    declared_huge_rle,
    deflate_bomb,
    j2k_size_bomb,
    many_frames,
    sparse_native,
)

REPO = Path(__file__).resolve().parents[1]
XPR = [sys.executable, "-c", "from xpr_deploy.cli import main; main()"]
#: the child reports its peak address space (VmPeak, kB) into the file named by argv[1]
PEAK = """
import atexit, sys
out = sys.argv.pop(1)
def peak():
    with open("/proc/self/status") as f:
        kb = next(ln for ln in f if ln.startswith("VmPeak")).split()[1]
    with open(out, "w") as f:
        f.write(kb)
atexit.register(peak)
from xpr_deploy.cli import main
main()
"""


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def _xpr(*args: object, timeout: float = 300, **kw: Any) -> subprocess.CompletedProcess[str]:
    kw.setdefault("env", _env())
    if "stdout" not in kw:
        kw["capture_output"] = True
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [*XPR, *map(str, args)], cwd=REPO, text=True, timeout=timeout, **kw
    )


def _xpr_here(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: object, **env: str
) -> subprocess.CompletedProcess[str]:
    """`xpr ARGS` in this process (test_export_support.xpr_main) with `env` set for the call, from the
    repository root like `_xpr`, as a CompletedProcess: for the cases whose claim is the outcome, not a
    resource limit, a full stdout, a signal or a call that may block (those keep `_xpr`)."""
    return xpr_here(capfd, monkeypatch, *args, cwd=REPO, env=env)


def _clean(p: subprocess.CompletedProcess[str], rc: int) -> None:
    assert p.returncode == rc, (p.returncode, p.stdout[-3000:], p.stderr[-3000:])
    assert "Traceback" not in p.stderr and "Exception ignored" not in p.stderr, p.stderr[-3000:]


def _line(text: str, *needles: str) -> str:
    """The one line of `text` that holds every needle (exactly one must)."""
    lines = [ln for ln in text.splitlines() if all(n in ln for n in needles)]
    assert len(lines) == 1, (needles, text[-4000:])
    return lines[0]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two good studies (4 breasts), native 320x160, and one JPEG 2000 file to spoil. Read-only."""
    from xpr_deploy.data.synth import write_synthetic

    root = tmp_path_factory.mktemp("hostile") / "synth"
    write_synthetic(root, 4, "vindr", size=(320, 160), seed=21, transfer_syntax="uncompressed")
    j2k = tmp_path_factory.mktemp("j2k")
    write_synthetic(j2k, 1, "vindr", size=(320, 160), seed=22, transfer_syntax="jpeg2000")
    shutil.copy(sorted(j2k.rglob("*.dicom"))[0], root / "j2k.dicom")
    return root


@pytest.fixture(scope="module")
def good(synth: Path) -> Path:
    """The folder of the good studies (`xpr predict CKPT good` answers 4 breasts)."""
    return synth / "images"


@pytest.fixture(scope="module")
def ckpt(untied_tiny_checkpoint: Callable[..., Path]) -> Path:
    return untied_tiny_checkpoint({}, "hostile-inputs")


def _by_view(good: Path) -> dict[tuple[str, str], Path]:
    """(laterality, view) -> one good file of the first study."""
    study = sorted(p for p in good.iterdir() if p.is_dir())[0]
    out = {}
    for f in sorted(study.iterdir()):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        out[str(ds.ImageLaterality), str(ds.ViewPosition)] = f
    return out


def _breast(dst: Path, good: Path, lat: str, spoil: str, make: Callable[[Path, Path, str], Path]) -> Path:
    """A study of its own in `dst`: a good copy of one view, and the other (`spoil`) made by `make`."""
    views = _by_view(good)
    uid = pydicom.uid.generate_uid()
    dst.mkdir(parents=True)
    keep = "MLO" if spoil == "CC" else "CC"
    ds = pydicom.dcmread(views[lat, keep])
    ds.StudyInstanceUID, ds.SOPInstanceUID = uid, pydicom.uid.generate_uid()
    ds.save_as(dst / f"{lat}_{keep}.dcm", enforce_file_format=True)
    return make(views[lat, spoil], dst / f"{lat}_{spoil}_bad.dcm", uid)


# --------------------------------------------------------------------------- class 3: the resource budget


def test_predict_peak_memory_stays_within_the_budget_on_bombs(tmp_path: Path, good: Path, ckpt: Path) -> None:
    """A clean run's peak address space is measured, then the same run plus a declared-huge RLE
    file, a sparse 2 GB native file and a deflate bomb of 1.5 GB runs under RLIMIT_AS = that
    peak + 1 GiB: each file is one budget line, every good breast is answered."""
    hostile = tmp_path / "hostile"
    bad = [
        _breast(hostile / "rle", good, "L", "CC", lambda s, d, u: declared_huge_rle(s, d, study=u)),
        _breast(hostile / "sparse", good, "R", "MLO", lambda s, d, u: sparse_native(s, d, study=u)),
        deflate_bomb(hostile / "deflate.dcm", 1536 << 20),
    ]
    peak_file = tmp_path / "peak"
    base = subprocess.run([sys.executable, "-c", PEAK, str(peak_file), "predict", str(ckpt), str(good), "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=600, env=_env())  # fmt: skip
    _clean(base, 0)
    clean_kb = int(peak_file.read_text())
    limit = clean_kb * 1024 + (1 << 30)

    def rlimit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    run = subprocess.run(
        [sys.executable, "-c", PEAK, str(peak_file), "predict", str(ckpt), str(good), str(hostile)],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=_env(), preexec_fn=rlimit,
    )  # fmt: skip
    _clean(run, 0)
    assert len(re.findall(r"\b[LR]\b", run.stdout)) >= 4, run.stdout  # the four good breasts
    for path in bad:
        _line(run.stderr, str(path), "over the budget")
    grew_mb = (int(peak_file.read_text()) - clean_kb) // 1024
    assert grew_mb < 256, grew_mb  # refused from the header: before, each ran into the limit (MemoryError)


def test_data_check_and_prepare_name_every_file_over_the_budget(
    tmp_path: Path, synth: Path, good: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "study"
    shutil.copytree(good, root)
    src = _by_view(good)["L", "CC"]
    cases = {
        declared_huge_rle(src, root / "rle.dcm"): "pixels is over the budget of 40000000 pixels per file",
        sparse_native(src, root / "sparse.dcm"): "bytes is over the budget of 134217728 bytes per file",
        many_frames(src, root / "frames.dcm"): "100000 frames are over the budget of 1000 frames per file",
        deflate_bomb(root / "deflate.dcm", 300 << 20): "the deflated dataset inflates to more than 134217728 bytes",
        j2k_size_bomb(synth / "j2k.dicom", root / "j2k.dcm"): "the JPEG 2000 stream declares 20000x10000 pixels",
    }
    check = _xpr_here(capfd, monkeypatch, "data", "check", root, "--format", "folder")
    _clean(check, 0)
    prepare = _xpr_here(capfd, monkeypatch, "data", "prepare", root, "--format", "folder",
                        "--cache", tmp_path / "cache", "--size", "64x32", "--workers", "1")  # fmt: skip
    _clean(prepare, 0)
    assert "8 prepared" in prepare.stdout, prepare.stdout
    for path, needle in cases.items():
        _line(check.stdout, f"rejected {path}: ", needle)
        _line(prepare.stdout, f"rejected {path}: ", needle)


# --------------------------------------------------------------------------- class 6: special files and trees


@pytest.fixture
def special(tmp_path: Path, good: Path) -> Iterator[tuple[Path, dict[Path, str]]]:
    """A copy of the good studies plus every kind of entry that must not be opened."""
    root = tmp_path / "study"
    shutil.copytree(good, root)
    fifo = root / "x.dcm"
    os.mkfifo(fifo)
    (root / "zero.dcm").symlink_to("/dev/zero")
    (root / "gone.dcm").symlink_to(tmp_path / "nowhere.dcm")
    (root / "self.dcm").symlink_to("self.dcm")
    (root / "loop").symlink_to(".")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "s.dcm"))
    yield (
        root,
        {
            fifo: "not a file (a FIFO): skipped, not opened",
            root / "zero.dcm": "not a file (a character device): skipped, not opened",
            root / "gone.dcm": "dangling symbolic link",
            root / "self.dcm": "symbolic link loop",
            root / "loop": "a folder already walked",
            root / "s.dcm": "not a file (a socket): skipped, not opened",
        },
    )
    sock.close()


def test_special_files_are_named_and_skipped_without_opening(special: tuple[Path, dict[Path, str]], ckpt: Path) -> None:
    root, cases = special
    check = _xpr("data", "check", root, "--format", "folder", timeout=120)  # a FIFO opened for reading never returns
    _clean(check, 0)
    assert "4 breasts, 4 pairs" in check.stdout, check.stdout
    pred = _xpr("predict", ckpt, root, timeout=300)
    _clean(pred, 0)
    for path, needle in cases.items():
        _line(check.stdout, f"rejected {path}: ", needle)
        _line(pred.stderr, f"skipped {path}: ", needle)
    assert len(re.findall(r"\b[LR]\b", pred.stdout)) >= 4, pred.stdout


def test_prepare_files_refuses_special_files_before_hashing_them(tmp_path: Path) -> None:
    """`prepare_files` on paths given by a caller (not from an index): the cache hashes a file first,
    and hashing a FIFO blocks forever, /dev/zero never ends."""
    from xpr_deploy.data.dicom import PreprocessSettings
    from xpr_deploy.data.prepare import prepare_files

    os.mkfifo(tmp_path / "x.dcm")
    (tmp_path / "zero.dcm").symlink_to("/dev/zero")
    paths = [tmp_path / "x.dcm", tmp_path / "zero.dcm"]
    reps: list[Any] = []
    exc = _finishes(lambda: reps.append(prepare_files(paths, tmp_path / "cache", PreprocessSettings(img_size=(64, 32)),
                                                      workers=1)))  # fmt: skip
    assert exc is None and [r["reason"] for r in reps[0].rejected] == [
        f"{tmp_path}/x.dcm: not a file (a FIFO): not opened",
        f"{tmp_path}/zero.dcm: not a file (a character device): not opened",
    ]


@pytest.fixture
def deep(tmp_path: Path) -> Iterator[Callable[[Path, int], Path]]:
    """make(root, depth): root/d/d/.../d, made and removed one level at a time (os.makedirs and
    shutil.rmtree recurse, and die of RecursionError at this depth themselves)."""
    made: list[tuple[Path, int]] = []

    def make(root: Path, depth: int) -> Path:
        root.mkdir(parents=True)
        fd = os.open(root, os.O_RDONLY)
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            fd, old = os.open("d", os.O_RDONLY, dir_fd=fd), fd
            os.close(old)
        os.close(fd)
        made.append((root, depth))
        return root / "/".join(["d"] * depth)

    yield make
    for root, depth in made:
        for level in range(depth, 0, -1):
            here = root / "/".join(["d"] * level)
            for f in here.iterdir():
                if not f.is_dir():
                    f.unlink()
            here.rmdir()


def test_a_thousand_deep_tree_and_too_many_files_are_bounded(
    tmp_path: Path,
    good: Path,
    ckpt: Path,
    deep: Callable[[Path, int], Path],
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "study"
    shutil.copytree(good, root)
    bottom = deep(root / "deep", 1000)
    shutil.copy(_by_view(good)["L", "CC"], bottom / "lost.dcm")
    check = _xpr_here(capfd, monkeypatch, "data", "check", root, "--format", "folder")
    _clean(check, 0)  # was RecursionError
    cut = str(root / "deep") + "/d" * 32
    _line(check.stdout, f"rejected {cut}: ", "nested more than 32 folders deep (XPR_MAX_DEPTH): not walked")
    pred = _xpr_here(capfd, monkeypatch, "predict", ckpt, root)
    _clean(pred, 0)
    _line(pred.stderr, "nested more than 32 folders deep")
    assert len(re.findall(r"\b[LR]\b", pred.stdout)) >= 4, pred.stdout

    few = _xpr_here(capfd, monkeypatch, "data", "check", root, "--format", "folder", XPR_MAX_FILES="5")
    _clean(few, 0)
    _line(few.stdout, f"rejected {root}: more than 5 files (XPR_MAX_FILES): the rest, from ", "not listed")
    shallow = _xpr_here(capfd, monkeypatch, "data", "check", root, "--format", "folder", XPR_MAX_DEPTH="3")
    _clean(shallow, 0)
    _line(shallow.stdout, f"rejected {root}/deep/d/d/d: nested more than 3 folders deep (XPR_MAX_DEPTH)")


def test_control_characters_in_file_names_stay_on_one_line(
    tmp_path: Path, good: Path, ckpt: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "study"
    shutil.copytree(good, root)
    (root / "bad\nname.dcm").write_bytes(b"not dicom")
    (root / "red\x1b[31mname.dcm").write_bytes(b"not dicom either")
    check = _xpr_here(capfd, monkeypatch, "data", "check", root, "--format", "folder")
    _clean(check, 0)
    pred = _xpr_here(capfd, monkeypatch, "predict", ckpt, root)
    _clean(pred, 0)
    for out in (check.stdout, pred.stderr):
        assert "\x1b" not in out, out
        _line(out, "bad\\nname.dcm: not a DICOM file")
        _line(out, "red\\x1b[31mname.dcm: not a DICOM file")


# --------------------------------------------------------------------------- class 4: no markup from untrusted text


def _main(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: object) -> tuple[int, str, str]:
    """`xpr ARGS` in this process (test_export_support.xpr_main), 400 columns wide: (exit code, stdout, stderr)."""
    from xpr_deploy.cli import common

    monkeypatch.setenv("COLUMNS", "400")
    for console in (common.console, common.err_console):  # whatever width they took from COLUMNS when imported
        monkeypatch.setattr(console, "_width", 400)
    return xpr_main(capsys, monkeypatch, *args)


def test_markup_in_paths_and_reasons_prints_literally(
    tmp_path: Path, good: Path, ckpt: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "[/b]x"
    shutil.copytree(good, root)
    ds = pydicom.dcmread(_by_view(good)["L", "CC"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not a valid CS: that is the point
        ds.Modality = "[/RED]"
    ds.save_as(root / "[bold]odd.dcm", enforce_file_format=True)
    code, out, err = _main(capsys, monkeypatch, "data", "check", root, "--format", "folder")
    assert code == 0, (out, err)
    _line(out, str(root), "4 breasts")
    _line(out, f"rejected {root}/[bold]odd.dcm: ", "modality [/RED], not MG")

    heat = tmp_path / "[/b]heat"
    code, out, err = _main(capsys, monkeypatch, "predict", ckpt, root, "--heatmaps", heat)
    assert code == 0, (out, err)
    _line(err, f"skipped {root}/[bold]odd.dcm: ", "modality [/RED], not MG")
    assert out.count(str(heat)) == 4, out  # the heatmap column, literally

    code, out, err = _main(capsys, monkeypatch, "predict", tmp_path / "[/red]model", root)
    assert code == 2 and err.startswith(f"error: {tmp_path}/[/red]model") and err.count("\n") == 1, err
    code, out, err = _main(capsys, monkeypatch, "data", "check", tmp_path / ":cd:[/b]")
    assert code == 2 and f"{tmp_path}/:cd:[/b]" in err and err.count("\n") == 1, err  # no emoji either


# --------------------------------------------------------------------------- class 6: stdout, serve


def test_json_into_a_full_stdout_is_one_line_and_exit_2(good: Path, ckpt: Path) -> None:
    with open("/dev/full", "w") as full:
        for args in (("predict", ckpt, good, "--json"), ("data", "check", good, "--json"), ("data", "check", good)):
            p = _xpr(*args, stdout=full, stderr=subprocess.PIPE)
            _clean(p, 2)
            assert p.stderr == "error: stdout: cannot write the output (No space left on device)\n", p.stderr


@pytest.fixture(scope="module")
def bundle(tiny_bundle: Path) -> Path:
    """conftest's session tiny bundle (name "tiny"; XPR_TEST_BUNDLE_CACHE=DIR keeps it between runs)."""
    return tiny_bundle


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_stopped_exits_128_plus_signal_and_leaves_nothing_in_tmp(
    tmp_path: Path, bundle: Path, sig: signal.Signals
) -> None:
    """A real tritonserver: `xpr serve` with its temporary repository and log, stopped when ready."""
    from xpr_deploy.serve import ServeError, find_server

    try:
        find_server()
    except ServeError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"no tritonserver in CI: {exc}")
        pytest.skip(str(exc))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    args = [*XPR, "serve", str(bundle), "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"]
    with subprocess.Popen(args, cwd=REPO, env=_env(TMPDIR=str(tmp)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        deadline = time.monotonic() + 240
        lines = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "Ctrl-C stops the server" in line or not line:
                break
        assert any("Ctrl-C" in ln for ln in lines), ("".join(lines), proc.poll())
        assert {p.name.split("-")[0] for p in tmp.iterdir() if not p.name.startswith(".")} == {"xpr", "tritonserver"}
        proc.send_signal(sig)
        rc = proc.wait(60)
        err = proc.stderr.read()
    name = signal.Signals(sig).name
    assert rc == 128 + sig and "Traceback" not in err, (rc, err)
    assert f"({name}): stopped, temporary files removed" in err.splitlines()[-1], err
    left = [p.name for p in tmp.iterdir() if not p.name.startswith(".")]  # tritonserver keeps a .ses id file
    assert left == [], left  # the 53 MB repository and the server log were left before
