"""Steps 1-5 of reading a bundle (see `reader.py`): the manifest file, its seal, its schema, the
paths it names, the folder's files against their hashes, and the files each graph reads as ONNX
external data (`external.py`). Nothing here knows what the fields
mean; `BundleView` checks that they agree (step 6) and answers questions about them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import BundleError
from ..io import sha256_file
from .external import MAX_GRAPH_BYTES, ExternalDataError, external_files, graph_files
from .schema import FORMAT, FORMAT_VERSION, MANIFEST_SCHEMA
from .seal import SealError, digest_of

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20
#: arrays/objects inside each other, the top-level object counting 1; no manifest comes near it (the
#: C++ reader has the same bound: engines/src/manifest.h kMaxJsonDepth)
MAX_JSON_DEPTH = 64


def check_relpath(rel: str, where: str) -> PurePosixPath:
    """A path named by a manifest: relative, '/'-separated, no '.', '..' or empty part, no drive."""
    p = PurePosixPath(rel)
    bad = (
        not rel
        or "\\" in rel
        or ":" in rel
        or "\x00" in rel
        or rel.startswith("/")
        or any(part in ("", ".", "..") for part in rel.split("/"))
    )
    if bad:
        raise BundleError(f"{where}: path {rel!r} is not a plain relative path inside the bundle")
    return p


def _no_link_inside(root: Path, rel: PurePosixPath, where: str) -> Path:
    """root/rel, refusing any symlink on the way (a link could lead out of the folder)."""
    cur = root
    for part in rel.parts:
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            raise BundleError(f"{cur}: missing (listed in {where})") from None
        except OSError as exc:
            raise BundleError(f"{cur}: unreadable ({exc.strerror or exc})") from None
        if stat.S_ISLNK(st.st_mode):
            raise BundleError(f"{cur}: is a symbolic link; a bundle holds plain files only")
    if not stat.S_ISREG(os.lstat(cur).st_mode):
        raise BundleError(f"{cur}: not a regular file (listed in {where})")
    return cur


def _listing(root: Path) -> tuple[set[str], list[Path]]:
    """Every entry under root: (relative paths of files, entries that are neither files nor folders)."""
    files, odd = set(), []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        d = Path(dirpath)
        for name in [*dirnames, *filenames]:
            p = d / name
            mode = os.lstat(p).st_mode
            if stat.S_ISLNK(mode) or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                odd.append(p)
            elif stat.S_ISREG(mode):
                files.add(p.relative_to(root).as_posix())
    return files, odd


@functools.cache
def _validator() -> Any:
    from ..train.meta_schema import strict_validator

    return strict_validator(MANIFEST_SCHEMA)


def _schema_check(manifest: dict[str, Any], where: str) -> None:
    """The schema, with integers that are ints and finite numbers (the checkpoint's rules)."""
    from ..train.meta_schema import first_problem

    problem = first_problem(_validator(), manifest)
    if problem is not None:
        raise BundleError(f"{where}: does not follow the manifest schema {problem}")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def read_verified_manifest(root: Path, hash_files: bool = True) -> tuple[dict[str, Any], str]:
    """Steps 1-5 of `reader.py`'s docstring; returns (manifest, digest)."""
    mpath = root / MANIFEST
    where = str(mpath)
    if not root.is_dir():
        raise BundleError(f"{root}: not a bundle folder")
    try:
        st = os.lstat(mpath)
    except FileNotFoundError:
        raise BundleError(f"{root}: not an export bundle (no {MANIFEST})") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise BundleError(f"{where}: not a regular file")
    if st.st_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{where}: {st.st_size} bytes, larger than any manifest ({MAX_MANIFEST_BYTES})")
    deep = f"{where}: values nested deeper than {MAX_JSON_DEPTH} levels; no manifest is"
    try:
        raw = mpath.read_bytes()
        manifest = json.loads(raw, parse_constant=_no_constant)  # strict JSON, as the C++ reader
    except RecursionError:
        raise BundleError(deep) from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"{where}: unreadable ({exc})") from None
    if _depth(manifest) > MAX_JSON_DEPTH:
        raise BundleError(deep)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{where}: not an xpr bundle manifest (format is not {FORMAT!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{where}: bundle format {manifest.get('format_version')!r}, this xpr reads {FORMAT_VERSION}: "
            "re-export it with this version (`xpr export`)"
        )
    try:
        recorded, computed = digest_of(raw)
    except SealError as exc:
        raise BundleError(f"{where}: {exc}") from None
    if recorded != computed:
        raise BundleError(
            f"{where}: content differs from its seal (manifest_sha256 {recorded[:12]}…, content {computed[:12]}…): "
            "a field was edited after export"
        )
    _schema_check(manifest, where)
    files: dict[str, str] = manifest["files"]
    for rel in files:
        check_relpath(rel, f"{where} files")
    for rel, what in _named_paths(manifest):
        check_relpath(rel, f"{where} {what}")
        if rel not in files:
            raise BundleError(f"{where}: {what} {rel!r} is not among the hashed files")
    present, odd = _listing(root)
    if odd:
        raise BundleError(f"{odd[0]}: is a symbolic link or special file; a bundle holds plain files only")
    present.discard(MANIFEST)
    missing = sorted(set(files) - present)
    if missing:
        raise BundleError(f"{root / missing[0]}: missing (listed in {where})")
    extra = sorted(present - set(files))
    if extra:
        raise BundleError(f"{root / extra[0]}: not listed in {where}; a bundle holds only the files it hashes")
    graphs = set(graph_files(manifest))
    for rel, want in files.items():
        path = _no_link_inside(root, PurePosixPath(rel), where)
        graph = _read_graph(path) if rel in graphs else None  # read once: hashed, then parsed
        if hash_files:
            got = sha256_file(path) if graph is None else hashlib.sha256(graph).hexdigest()
            if got != want:
                raise BundleError(
                    f"{path}: SHA-256 {got[:12]}… differs from the manifest's {want[:12]}…: "
                    "the file changed after export"
                )
        if graph is not None:
            try:
                external_files(rel, str(path), graph, files, lambda r: os.lstat(root / r).st_size)
            except ExternalDataError as exc:
                raise BundleError(str(exc)) from None
            del graph
    return manifest, recorded


def _read_graph(path: Path) -> bytes:
    size = os.lstat(path).st_size
    if size > MAX_GRAPH_BYTES:
        raise BundleError(f"{path}: {size} bytes, more than an ONNX graph can be (such weights are external data)")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: unreadable ({exc.strerror or exc})") from None


def _depth(value: Any) -> int:
    """How deeply arrays/objects nest in a parsed JSON value (iteratively: the value may be deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            if d <= MAX_JSON_DEPTH:
                stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def _named_paths(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    out = [(manifest["model"], "model"), *((p, f"graphs.{k}") for k, p in manifest["graphs"].items())]
    if manifest.get("parity"):
        out.append((manifest["parity"], "parity"))
    for i, e in enumerate(manifest["engines"]):
        out += [(e["path"], f"engines[{i}].path"), (e["onnx"], f"engines[{i}].onnx")]
        if e.get("timing_cache"):
            out.append((e["timing_cache"], f"engines[{i}].timing_cache"))
    return out
