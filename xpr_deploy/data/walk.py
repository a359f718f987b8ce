"""Listing the files of a study folder: iterative, bounded, and without opening anything.

A folder that reaches xpr (a PACS export, a DICOMweb download, the DICOM node's spool) may hold
what no reader should touch: a FIFO named `x.dcm` (opening it blocks forever), a link to
`/dev/zero` (reading it never ends), a dangling link, a socket, a link loop, a tree nested a
thousand deep (a recursive walk dies of RecursionError), millions of entries. Here every entry
is only stat'ed: regular files (and links to them) are listed, anything else is a named reject,
and the walk stops at the budget's depth and file count (`budget.Budget.max_depth`, `max_files`),
saying where. Links to folders are followed once each (a loop is named, not walked forever).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .budget import ENV, Budget, default_budget
from .pairs import Reject

__all__ = ["kind_of", "walk_files"]


def kind_of(mode: int) -> str:
    """What a non-regular file is, for its reason."""
    for test, what in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return what
    return "a special file"


def _reason(path: Path, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError) and os.path.islink(path):
        return f"{path}: dangling symbolic link (its target does not exist): skipped"
    if exc.errno == errno.ELOOP:  # a link that points to itself, or a cycle of links
        return f"{path}: symbolic link loop: skipped"
    return f"{path}: cannot read ({exc.strerror or type(exc).__name__}): skipped"


def walk_files(
    root: str | Path,
    *,
    max_depth: int | None = None,
    max_files: int | None = None,
    budget: Budget | None = None,
) -> tuple[list[Path], list[Reject]]:
    """(sorted regular files under `root`, rejects naming each entry left out and why).

    `root` itself may be a file. Nothing is opened: FIFOs, sockets, devices and dangling links are
    rejects; a folder deeper than `max_depth` below `root`, and every file past `max_files`, is
    left out with one reject saying so (defaults: the budget's, i.e. XPR_MAX_DEPTH/XPR_MAX_FILES).
    """
    b = budget or default_budget()
    depth_limit = b.max_depth if max_depth is None else max_depth
    file_limit = b.max_files if max_files is None else max_files
    root = Path(root)
    files: list[Path] = []
    rejects: list[Reject] = []
    try:
        st = os.stat(root)
    except OSError as exc:
        return [], [Reject(str(root), _reason(root, exc))]
    if stat.S_ISREG(st.st_mode):
        return [root], []
    if not stat.S_ISDIR(st.st_mode):
        return [], [Reject(str(root), f"{root}: not a file ({kind_of(st.st_mode)}): skipped")]
    seen = {(st.st_dev, st.st_ino)}
    stack: list[tuple[Path, int]] = [(root, 0)]
    full = False
    while stack and not full:
        folder, depth = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            rejects.append(Reject(str(folder), _reason(folder, exc)))
            continue
        subdirs: list[Path] = []
        for entry in entries:
            path = Path(entry.path)
            try:
                est = os.stat(path)  # follows links: a link is what it points to
            except OSError as exc:
                rejects.append(Reject(str(path), _reason(path, exc)))
                continue
            if stat.S_ISREG(est.st_mode):
                if len(files) >= file_limit:
                    rejects.append(Reject(str(root), f"{root}: more than {file_limit} files ({ENV['max_files']}): "
                                                     f"the rest, from {path}, not listed"))  # fmt: skip
                    full = True
                    break
                files.append(path)
            elif stat.S_ISDIR(est.st_mode):
                key = (est.st_dev, est.st_ino)
                if key in seen:
                    rejects.append(Reject(str(path), f"{path}: a folder already walked (a symbolic link loop or a "
                                                     "second link to it): skipped"))  # fmt: skip
                    continue
                seen.add(key)
                if depth + 1 > depth_limit:
                    rejects.append(Reject(str(path), f"{path}: nested more than {depth_limit} folders deep "
                                                     f"({ENV['max_depth']}): not walked"))  # fmt: skip
                    continue
                subdirs.append(path)
            else:
                rejects.append(Reject(str(path), f"{path}: not a file ({kind_of(est.st_mode)}): skipped, not opened"))
        stack.extend((d, depth + 1) for d in reversed(subdirs))
    return sorted(files), rejects
