"""The files an ONNX graph of a bundle reads besides itself (external data), confined to the bundle.

A tensor whose `data_location` is EXTERNAL keeps its bytes in another file, named by the `location`
entry of its `external_data` (with `offset` and `length`), which ONNX Runtime and TensorRT resolve
against the graph's folder. A hostile graph could name `../x.bin`, `/etc/shadow`, `/dev/zero`, or
ONNX Runtime's in-memory tag `*/_ORT_MEM_ADDR_/*` (its offset is then read as a pointer). So the
reader parses every graph of the bundle (the protobuf only: no tensor data is loaded) and refuses
the bundle unless each location of each tensor (initializers, sparse initializers, attribute
tensors, in subgraphs and local functions too) is a plain relative path of letters, digits, `.`,
`_` and `-`, naming a file of the bundle's `files` (so it was hashed like every other file), with
offset + length inside that file. `engines/src/onnx_refs.cpp` applies the same rule in C++.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import PurePosixPath
from typing import Any

from ..errors import BundleError


class ExternalDataError(BundleError, ValueError):
    """A graph reads a file it may not (the verified reader turns it into its BundleError)."""


#: protobuf's limit on one message: larger weights must be external data, so no graph file is bigger
MAX_GRAPH_BYTES = (2 << 30) - 1
#: one part of a location: no `*` (ONNX Runtime's memory tag), no leading `.`, nothing a shell or a
#: Windows path would read otherwise
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
EXTERNAL = 1  # TensorProto.EXTERNAL


def graph_files(manifest: dict[str, Any]) -> list[str]:
    """Every graph a reader may load: the named ones (model, graphs, engines' sources) and any listed .onnx."""
    named = {manifest["model"], *manifest["graphs"].values(), *(e["onnx"] for e in manifest["engines"])}
    named |= {rel for rel in manifest["files"] if rel.endswith(".onnx")}
    return sorted(named)


def _tensors(model: Any) -> Iterator[tuple[str, Any]]:
    """(what, TensorProto) for every tensor of the model: graphs, subgraphs, functions, training info."""
    stack: list[Any] = [model.graph, *model.functions]
    for info in model.training_info:
        stack += [info.initialization, info.algorithm]
    while stack:
        g = stack.pop()
        attrs = [a for n in g.node for a in n.attribute]
        if hasattr(g, "initializer"):  # a GraphProto (a FunctionProto has none)
            yield from ((f"initializer {t.name!r}", t) for t in g.initializer)
            for s in g.sparse_initializer:
                yield from ((f"sparse initializer {s.values.name!r}", t) for t in (s.values, s.indices))
        else:
            attrs += list(g.attribute_proto)  # a function's attribute defaults
        for a in attrs:
            what = f"attribute {a.name!r}"
            if a.HasField("t"):
                yield what, a.t
            yield from ((what, t) for t in a.tensors)
            for s in [*([a.sparse_tensor] if a.HasField("sparse_tensor") else []), *a.sparse_tensors]:
                yield from ((what, t) for t in (s.values, s.indices))
            if a.HasField("g"):
                stack.append(a.g)
            stack.extend(a.graphs)


def _why_not_plain(loc: str) -> str | None:
    if not loc:
        return "an empty location"
    if loc.startswith("/") or loc.startswith("\\") or re.match(r"[A-Za-z]:", loc):
        return "an absolute path"
    parts = loc.split("/")
    if ".." in parts:
        return "a path with '..'"
    if not all(_PART.fullmatch(p) for p in parts):
        return "not a plain relative path (letters, digits, '.', '_', '-' between '/')"
    return None


def _int_entry(value: str) -> int | None:
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 19 else None


def external_files(
    graph: str, where: str, raw: bytes, files: dict[str, str], size_of: Callable[[str], int]
) -> list[str]:
    """The bundle files (manifest paths) the graph `graph` (bytes `raw`, named `where` in messages)
    reads as external data; ExternalDataError unless every one is confined as the module docstring says."""
    import onnx
    from google.protobuf.message import DecodeError

    model = onnx.ModelProto()
    try:
        model.ParseFromString(raw)
    except (DecodeError, RuntimeError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ExternalDataError(f"{where}: not a readable ONNX graph ({first})") from None
    folder = PurePosixPath(graph).parent
    found: set[str] = set()
    for what, t in _tensors(model):
        if t.data_location != EXTERNAL and not len(t.external_data):
            continue
        entries = [(e.key, e.value) for e in t.external_data]
        locations = [v for k, v in entries if k == "location"]
        if not locations:
            raise ExternalDataError(f"{where}: {what} is stored externally without a location")
        for loc in locations:
            why = _why_not_plain(loc)
            rel = (folder / loc).as_posix() if why is None else ""
            if why is None and rel not in files:
                why = f"not a file listed in the manifest ({rel!r})"
            if why is not None:
                raise ExternalDataError(
                    f"{where}: {what} keeps its data in {loc!r}: {why}; a graph reads only files of its bundle"
                )
            values = {k: _int_entry(v) for k, v in entries if k in ("offset", "length")}
            if any(v is None for v in values.values()):
                raise ExternalDataError(f"{where}: {what} has a malformed external data offset/length {entries!r}")
            offset, length, size = values.get("offset") or 0, values.get("length"), size_of(rel)
            if offset > size or (length is not None and offset + length > size):
                raise ExternalDataError(
                    f"{where}: {what} reads bytes {offset}..{offset + (length or 0)} of {loc!r}, which has {size} bytes"
                )
            found.add(rel)
    return sorted(found)
