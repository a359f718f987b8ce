"""`--plugin` mode: each block's window selection becomes one custom node with an ONNX function body.

    XprWindowSelect(windows [B, N, 49, C], any float) -> indices [B, K] int64
        attributes: k (int), window (int), plugin_version (str), plugin_namespace (str)
        body:       Cast(FP32) -> ReduceL2(axis -1) -> ReduceMean(axis -1) -> TopK(K = k, sorted)

ONNX Runtime runs the function body. TensorRT's ONNX parser looks a plugin up by op type
(+ `plugin_version`, `plugin_namespace`); when none is registered the TensorRT-RTX 1.7 parser
expands the local function instead (checked: it builds the sm_86 engine), so a viewer needs the
plugin library only when it wants the custom kernel; the manifest says which.
"""

from __future__ import annotations

from collections import Counter

import onnx
from onnx import helper

from .onnx import BLOCK_KEY

PLUGIN_OP = "XprWindowSelect"
PLUGIN_DOMAIN = "xpr"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = "xpr"


def window_select_function() -> onnx.FunctionProto:
    """The local function body: the same FP32 scoring + TopK as `ptb.window_scores/select_windows`."""
    k_attr = helper.make_attribute_ref("value_int", onnx.AttributeProto.INT)
    k_attr.ref_attr_name = "k"
    nodes = [
        helper.make_node("Constant", [], ["k_scalar"], name="k_const"),
        helper.make_node("Constant", [], ["axes_last"], value_ints=[-1]),
        helper.make_node("Constant", [], ["axes_zero"], value_ints=[0]),
        helper.make_node("Unsqueeze", ["k_scalar", "axes_zero"], ["k_vec"]),
        helper.make_node("Cast", ["windows"], ["windows_f32"], to=onnx.TensorProto.FLOAT),
        helper.make_node("ReduceL2", ["windows_f32", "axes_last"], ["token_norm"], keepdims=0),
        helper.make_node("ReduceMean", ["token_norm", "axes_last"], ["scores"], keepdims=0),
        helper.make_node("TopK", ["scores", "k_vec"], ["values", "indices"], axis=-1, largest=1, sorted=1),
    ]
    nodes[0].attribute.append(k_attr)
    return helper.make_function(
        PLUGIN_DOMAIN,
        PLUGIN_OP,
        inputs=["windows"],
        outputs=["indices"],
        nodes=nodes,
        opset_imports=[helper.make_opsetid("", 18)],
        attributes=["k", "window", "plugin_version", "plugin_namespace"],
    )


def fuse_window_select(proto: onnx.ModelProto, window: int) -> int:
    """Replace every scoring chain (Cast?) -> ReduceL2 -> ReduceMean -> TopK by one XprWindowSelect.

    Returns the number of nodes fused; the model gets the function and the `xpr` opset import.
    """
    g = proto.graph
    producer = {o: n for n in g.node for o in n.output}
    uses = Counter(i for n in g.node for i in n.input)
    uses.update(o.name for o in g.output)
    inits = {i.name: i for i in g.initializer}
    drop: set[int] = set()
    replace: dict[int, onnx.NodeProto] = {}
    fused = 0
    for n in g.node:
        if n.op_type != "TopK":
            continue
        mean = producer.get(n.input[0])
        l2 = producer.get(mean.input[0]) if mean is not None and mean.op_type == "ReduceMean" else None
        if (
            mean is None
            or l2 is None
            or l2.op_type != "ReduceL2"
            or uses[mean.output[0]] != 1
            or uses[l2.output[0]] != 1
        ):
            raise ValueError(f"TopK {n.name}: not fed by the window-score chain ReduceL2 -> ReduceMean")
        if len(n.output) > 1 and n.output[0] and uses[n.output[0]]:
            raise ValueError(f"TopK {n.name}: its values are used; the plugin returns indices only")
        src = l2.input[0]
        chain = [mean, l2]
        cast = producer.get(src)
        if cast is not None and cast.op_type == "Cast" and uses[cast.output[0]] == 1:
            src = cast.input[0]
            chain.append(cast)
        k = int(onnx.numpy_helper.to_array(inits[n.input[1]]).reshape(-1)[0])
        node = helper.make_node(
            PLUGIN_OP,
            [src],
            [n.output[1]],
            name=f"{n.name}_{PLUGIN_OP}",
            domain=PLUGIN_DOMAIN,
            k=k,
            window=window,
            plugin_version=PLUGIN_VERSION,
            plugin_namespace=PLUGIN_NAMESPACE,
        )
        node.metadata_props.extend(p for p in n.metadata_props if p.key == BLOCK_KEY)
        replace[id(n)] = node
        drop.update(id(c) for c in chain)
        fused += 1
    nodes = [replace.get(id(n), n) for n in g.node if id(n) not in drop]
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    for init in [i for i in g.initializer if i.name not in used]:
        g.initializer.remove(init)
    if fused:
        proto.functions.append(window_select_function())
        if not any(o.domain == PLUGIN_DOMAIN for o in proto.opset_import):
            proto.opset_import.append(helper.make_opsetid(PLUGIN_DOMAIN, 1))
    return fused


def plugin_manifest_entry(count: int) -> dict[str, object]:
    """What a viewer must know (and load) for a `--plugin` graph."""
    return {
        "op_type": PLUGIN_OP,
        "domain": PLUGIN_DOMAIN,
        "plugin_version": PLUGIN_VERSION,
        "plugin_namespace": PLUGIN_NAMESPACE,
        "nodes": count,
        "has_function_body": True,
        "required_at_runtime": False,
        "note": (
            "Each node carries an ONNX local-function body. ONNX Runtime runs the body; TensorRT-RTX 1.7 "
            "inlines the body when no plugin named XprWindowSelect (version 1, namespace xpr) is registered, "
            "so the engine in this bundle needs no plugin library. Register an IPluginV3 creator of that "
            "name/version/namespace before parsing to get the custom kernel instead; an engine built that way "
            "needs the same plugin library loaded (IPluginRegistry::loadLibrary) before deserialising."
        ),
    }
