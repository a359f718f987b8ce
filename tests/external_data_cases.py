"""Hostile ONNX external data (issue 21, class 2): edits of a bundle exported with `--external-data`,
shared by the Python reader's tests (test_bundle.py) and the C++ runtime's (test_engines_cpp.py).

Each case edits a copy of the bundle and re-hashes and re-seals what it changed, so that what is
refused is the graph's reference, not a stale hash: it returns (file the one-line refusal names,
text the line contains)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

Case = Callable[[Path], tuple[str, str]]


def _reseal(b: Path, *changed: str) -> None:
    from xpr_deploy.bundle.seal import seal

    m = json.loads((b / "manifest.json").read_bytes())
    for rel in changed:
        m["files"][rel] = hashlib.sha256((b / rel).read_bytes()).hexdigest()
    (b / "manifest.json").write_bytes(seal(m))


def _first_external(model: Any) -> Any:
    return next(t for t in model.graph.initializer if t.data_location == 1)


def point_at(location: str, graph: str = "model.onnx") -> Case:
    """The graph's first external initializer reads `location` (a copy of the real data is put
    there when it is a path outside the bundle, so only the check stands between it and the read)."""

    def case(b: Path) -> tuple[str, str]:
        import onnx

        model = onnx.load(str(b / graph), load_external_data=False)
        t = _first_external(model)
        for e in t.external_data:
            if e.key == "location":
                e.value = location.replace("{outside}", str(b.parent.resolve()))
                real = e.value
        outside = (b / real) if not real.startswith("/") else Path(real)
        inside = outside.resolve().is_relative_to(b.resolve())
        if not str(outside).startswith("/dev") and "*" not in real and not inside:
            shutil.copyfile(b / f"{graph}.data", outside)
        onnx.save(model, str(b / graph))
        _reseal(b, graph)
        return graph, real

    return case


def unlisted(b: Path) -> tuple[str, str]:
    """A location inside the bundle that the manifest does not list (and is not there)."""
    return point_at("other.bin")(b)


def data_changed(b: Path) -> tuple[str, str]:
    """The listed data file edited after export (its hash in the manifest is the old one)."""
    p = b / "model.onnx.data"
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    p.write_bytes(bytes(raw))
    return "model.onnx.data", "SHA-256"


def past_the_end(b: Path) -> tuple[str, str]:
    """offset + length beyond the listed file."""
    import onnx

    model = onnx.load(str(b / "model.onnx"), load_external_data=False)
    for e in _first_external(model).external_data:
        if e.key == "length":
            e.value = str(1 << 40)
    onnx.save(model, str(b / "model.onnx"))
    _reseal(b, "model.onnx")
    return "model.onnx", "bytes"


def constant_outside(b: Path) -> tuple[str, str]:
    """A tensor in a node attribute (a Constant inside an If's subgraph), not an initializer."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(b / "model.onnx"), load_external_data=False)
    value = helper.make_tensor("c", TensorProto.FLOAT, [4], [0.0] * 4)
    value.ClearField("float_data")
    value.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../x.bin"), ("offset", "0"), ("length", "16")):
        value.external_data.add(key=k, value=v)
    sub = helper.make_graph(
        [helper.make_node("Constant", [], ["c_out"], value=value)], "then",
        [], [helper.make_tensor_value_info("c_out", TensorProto.FLOAT, [4])],
    )  # fmt: skip
    cond = helper.make_tensor("always", TensorProto.BOOL, [], [True])
    model.graph.initializer.append(cond)
    model.graph.node.append(helper.make_node("If", ["always"], ["unused_if"], then_branch=sub, else_branch=sub))
    onnx.save(model, str(b / "model.onnx"))
    (b.parent / "x.bin").write_bytes(b"\0" * 16)
    _reseal(b, "model.onnx")
    return "model.onnx", "../x.bin"


#: case -> edit; every one refused by `xpr verify` (exit 3) and by `xpr_infer`
CASES: dict[str, Case] = {
    "parent": point_at("../x.bin"),
    "absolute": point_at("{outside}/x.bin"),
    "device": point_at("/dev/zero"),
    "ort-memory-tag": point_at("*/_ORT_MEM_ADDR_/*"),
    "unlisted": unlisted,
    "data-changed": data_changed,
    "past-the-end": past_the_end,
    "attribute-in-subgraph": constant_outside,
}
