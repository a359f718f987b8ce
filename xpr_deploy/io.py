"""Atomic file output: write to a temporary sibling, then rename, so nothing is ever half-written.

Also the one place where a failed write (disk full, quota, file too large, read-only or unwritable
folder) becomes a one-line `OutputError` naming the output, where temporaries get a recognisable
name (`.NAME.xpr-<pid>-<host>-<rand>.tmp`, so those left by a killed run are removed by the next
writer into the same folder), and where a folder swap cut between its two renames is recovered.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import XprError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: mkstemp/mkdtemp create private (0600/0700) entries; outputs get the usual umask-based modes
_UMASK = _umask()

#: errors of a write itself, whatever path the library reports (np.save, pydicom name none)
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})

#: the host in temporary names: a dead pid only means a stale temporary when it is this machine's
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
_TMP_RE = re.compile(r"^\..*\.xpr-(\d+)-([0-9a-f]{6})-[^/]*\.tmp$")
_cleaned: set[str] = set()  # folders already swept by this process (once each: folders can be large)

#: `xpr train` holds this file (fcntl.flock) in its run folder while it writes there
LOCK_NAME = ".xpr.lock"


class OutputError(XprError):
    """An output path cannot be written (permissions, a file in the way, disk full)."""

    def __init__(self, message: str, path: Path | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.path, self.reason = path, reason


#: `OutputError.reason` when `atomic_dir(..., overwrite=False)` finds its destination taken
ALREADY_EXISTS = "already exists"


class FolderLocked(XprError):
    """Another process writes this folder (e.g. a second `xpr train --out RUN`)."""


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def write_error(dest: str | Path, exc: OSError) -> OutputError:
    """The one-line error for a failed write of `dest`."""
    return OutputError(f"{dest}: cannot write ({_reason(exc)})", Path(dest), _reason(exc))


def _under(name: object, root: Path) -> Path | None:
    """`name` relative to `root` when it is `root` or inside it (library errors report the temporary)."""
    if not isinstance(name, (str, os.PathLike)):
        return None
    p = Path(os.path.abspath(os.fsdecode(name)))
    try:
        return p.relative_to(os.path.abspath(root))
    except ValueError:
        return None


def _as_output_error(exc: OSError, dest: Path, tmp: Path) -> OutputError | None:
    """A write failure of `dest` (written as `tmp`), or None for an error of something else (an input)."""
    for name in (exc.filename, exc.filename2):
        rel = _under(name, tmp)
        if rel is not None:
            return write_error(dest / rel if rel.parts else dest, exc)
    return write_error(dest, exc) if exc.errno in _WRITE_ERRNOS else None


def _remap(exc: OutputError, dest: Path, tmp: Path) -> OutputError:
    """An OutputError of a file inside the temporary folder `tmp`, named by its final place under `dest`."""
    rel = _under(exc.path, tmp) if exc.path is not None else None
    if rel is None:
        return exc
    target = dest / rel if rel.parts else dest
    return OutputError(f"{target}: cannot write ({exc.reason})", target, exc.reason)


# ---- temporaries ------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: another user's live process
        return True
    return True


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            p.unlink()


def clean_stale(folder: str | Path, *, again: bool = False) -> list[Path]:
    """Remove the temporaries that dead xpr processes of this machine left in `folder` (once per
    process, unless `again`: after stopping workers of our own that were writing there)."""
    folder = Path(folder)
    key = os.path.abspath(folder)
    if key in _cleaned and not again:
        return []
    _cleaned.add(key)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for e in entries:
        m = _TMP_RE.match(e.name)
        if m and m.group(2) == _HOST and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            _remove(Path(e.path))
            removed.append(Path(e.path))
    return removed


def _tmp_prefix(dest: Path) -> str:
    return f".{dest.name[:120]}.xpr-{os.getpid()}-{_HOST}-"


def _prepare_parent(dest: Path) -> None:
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(dest, exc) from None
    clean_stale(dest.parent)


# ---- files ------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(dest: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `dest`; it replaces `dest` only if the block succeeds.

    A failed write in the block (disk full, ...) becomes an OutputError naming `dest`; an existing
    device or pipe (`/dev/stdout`, `/dev/full`) is written in place, never replaced by a file."""
    dest = Path(dest)
    try:
        st = dest.stat()
    except OSError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{dest}: is a folder, not a file", dest, "is a folder")
    if st is not None and not stat.S_ISREG(st.st_mode):
        try:
            yield dest
        except OSError as exc:
            raise write_error(dest, exc) from None
        return
    _prepare_parent(dest)
    tmp_path: Path | None = None
    try:
        # SIGTERM (a pool stopping its workers) between creating the temporary and knowing its name
        # would leave it behind: it waits until the name is held, then raises inside this `try`
        with _signals_deferred():
            try:
                fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(dest), suffix=suffix + ".tmp", dir=dest.parent)
            except OSError as exc:
                raise write_error(dest, exc) from None
            os.close(fd)
            tmp_path = Path(tmp)
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, dest)
    except OSError as exc:
        if tmp_path is None:
            raise
        mapped = _as_output_error(exc, dest, tmp_path)
        if mapped is None:
            raise
        raise mapped from None
    finally:
        if tmp_path is not None:
            with _signals_deferred(), contextlib.suppress(OSError):
                tmp_path.unlink()


def write_bytes(dest: str | Path, data: bytes | memoryview) -> None:
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text(dest: str | Path, text: str) -> None:
    write_bytes(dest, text.encode())


def write_json(dest: str | Path, obj: Any) -> None:
    write_text(dest, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_buffer(dest: str | Path, fill: Any) -> None:
    """`fill(f)` writes into a memory buffer, then the bytes go to `dest` atomically.

    For writers that turn an I/O error into their own exception types (torch.save: RuntimeError;
    safetensors: SafetensorError; pydicom: an OSError without errno): the disk only sees our write."""
    buf = io.BytesIO()
    fill(buf)
    write_bytes(dest, buf.getbuffer())


def write_figure(fig: Any, dest: str | Path, **savefig_kw: Any) -> Path:
    """Save a matplotlib figure as PNG atomically and close it (no matplotlib import needed here)."""
    import matplotlib.pyplot as plt

    dest = Path(dest)
    try:
        with atomic_path(dest, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", **savefig_kw)
    finally:
        plt.close(fig)
    return dest


# ---- folders ----------------------------------------------------------------------------------


def _old(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.old")


def recover_dir(dest: str | Path) -> Path:
    """`dest`, put back from `.dest.old` when a folder swap was cut between its two renames.

    `.dest.old` is the complete previous state then (the new one may be incomplete): readers and
    `--resume` call this first. On a read-only place the old folder is returned to be read as it is."""
    dest = Path(dest)
    old = _old(dest)
    if os.path.lexists(dest) or not old.is_dir():
        return dest
    try:
        os.replace(old, dest)
    except OSError:
        return dest if dest.is_dir() else old  # another reader was first / cannot rename here
    return dest


def _fault(point: str) -> None:
    """Test hook: `XPR_FAULT_KILL=<point>` kills this process there (SIGKILL: no cleanup at all)."""
    if os.environ.get("XPR_FAULT_KILL") == point:
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT/SIGTERM wait until the block is done (the two renames of a swap belong together)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _swap(tmp: Path, dest: Path, overwrite: bool) -> None:
    old = _old(dest)
    for _ in range(3):
        if os.path.lexists(old):
            _remove(old)  # dest exists (recover_dir ran first): a finished swap's leftover
        with _signals_deferred():
            if not dest.exists():
                os.replace(tmp, dest)
                return
            if not overwrite:
                raise OutputError(f"{dest}: {ALREADY_EXISTS}", dest, ALREADY_EXISTS)
            os.replace(dest, old)
            _fault(f"swap:{dest.name}")
            try:
                os.replace(tmp, dest)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    os.replace(old, dest)
                    raise
                continue  # a reader recovered `old` into `dest` between the renames: swap again
        _remove(old)
        return
    raise OutputError(f"{dest}: replaced by another process while writing", dest, "replaced concurrently")


@contextlib.contextmanager
def atomic_dir(dest: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside `dest`; it becomes `dest` only if the block succeeds.

    An existing file at `dest` is refused (a folder never replaces a file)."""
    dest = Path(dest)
    if os.path.lexists(dest) and not dest.is_dir():
        raise OutputError(f"{dest}: exists and is not a folder (refusing to replace a file)", dest, "not a folder")
    recover_dir(dest)
    if dest.exists() and not overwrite:
        raise OutputError(f"{dest}: {ALREADY_EXISTS}", dest, ALREADY_EXISTS)
    _prepare_parent(dest)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(dest), suffix=".tmp", dir=dest.parent))
    except OSError as exc:
        raise write_error(dest, exc) from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        _swap(tmp, dest, overwrite)
    except OutputError as exc:
        raise _remap(exc, dest, tmp) from None
    except OSError as exc:
        mapped = _as_output_error(exc, dest, tmp)
        if mapped is None:
            raise
        raise mapped from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_folder_target(dest: str | Path, marker: str, what: str) -> None:
    """`dest` may be new, empty or an earlier `what` (holding `marker`), which `atomic_dir` replaces
    whole; a file, or a folder of something else, is refused: never swap away what is not ours."""
    dest = Path(dest)
    if os.path.lexists(dest) and not dest.is_dir():
        raise OutputError(f"{dest}: exists and is not a folder (refusing to replace a file with {what})")
    if dest.is_dir() and not (dest / marker).is_file() and any(dest.iterdir()):
        raise OutputError(f"{dest}: a folder that is not {what} (no {marker}); refusing to replace it")


# ---- locks ------------------------------------------------------------------------------------


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str = "another xpr process") -> Iterator[Path]:
    """Hold `folder/.xpr.lock` (fcntl.flock) for the block; a second holder is refused at once.

    The kernel drops a flock with its process, so a lock left by a killed run never blocks. A folder
    this call created is removed again if the block left nothing in it (a refused run leaves no trace)."""
    import fcntl

    folder = Path(folder)
    if os.path.lexists(folder) and not folder.is_dir():
        raise OutputError(f"{folder}: exists and is not a folder", folder, "not a folder")
    created = not folder.exists()
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
                os.close(fd)
                if created:
                    with contextlib.suppress(OSError):
                        folder.rmdir()
                raise FolderLocked(
                    f"{folder}: in use by {what} (pid {holder}); wait for it to finish or choose another folder"
                ) from None
            try:  # its previous holder may have removed the file between our open and flock
                here, ours = os.stat(path), os.fstat(fd)
                if (here.st_dev, here.st_ino) == (ours.st_dev, ours.st_ino):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()


#: PS3.5 9.1: a UID is digits in dot-separated components, no leading zero in a component, at most 64 chars
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def is_uid(value: object) -> bool:
    """True when `value` is a valid DICOM UID (the only header text ever used as a name as it is)."""
    return isinstance(value, str) and len(value) <= 64 and _UID_RE.match(value) is not None


def uid_name(value: object) -> str:
    """A file or folder name for a UID read from untrusted input: the UID itself when it is valid,
    else `x` + 32 hex digits of its SHA-256 (stable, so reruns still land on the same name)."""
    if is_uid(value):
        return str(value)
    return "x" + hashlib.sha256(str(value).encode("utf-8", "surrogatepass")).hexdigest()[:32]


def child_path(root: str | Path, *parts: str) -> Path:
    """`root/parts...`, proven to stay inside `root` (no absolute part, no `..`, no separator in a
    part, no link that leads out); else an OutputError naming root and the offending part."""
    base = Path(os.path.abspath(root))
    for part in parts:
        if not part or part in (".", "..") or "/" in part or "\\" in part or "\x00" in part:
            raise OutputError(f"{base}: refused output name {part!r} (not a plain name)", base, "unsafe name")
    dest = base.joinpath(*parts)
    real_root = Path(os.path.realpath(base))
    real = Path(os.path.realpath(dest))
    if real != real_root and real_root not in real.parents:
        raise OutputError(f"{dest}: refused, it resolves outside {base}", dest, "outside the output folder")
    return dest


def input_tag(*parts: str | Path) -> str:
    """8 hex digits naming an input in output names: two inputs holding the same study never share a file."""
    return hashlib.sha256("\x00".join(str(p) for p in parts).encode()).hexdigest()[:8]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
