"""`--plugin` mode: each block's window selection becomes one custom node with an ONNX function body.

    XprWindowSelect(x [B, H, W, C] any float, token_index [N, T] int64) -> indices [B, K] int64
        attributes: k (int), window (int), plugin_version (str), plugin_namespace (str)
        body:       Cast(FP32) -> ReduceL2(axis -1) -> Flatten(1) -> Gather(axis 1, token_index)
                    -> ReduceMean(axis -1) -> TopK(K = k, sorted)

x is the block input (NHWC token map), token_index the block's window -> token table
(`ptb.window_token_index`, shift included): token norms are taken on the map and only they are
gathered into windows (version 2; version 1 took the gathered windows [B, N, T, C]).

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
PLUGIN_VERSION = "2"
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
        helper.make_node("Cast", ["x"], ["x_f32"], to=onnx.TensorProto.FLOAT),
        helper.make_node("ReduceL2", ["x_f32", "axes_last"], ["token_norm_map"], keepdims=0),
        helper.make_node("Flatten", ["token_norm_map"], ["token_norm"], axis=1),
        helper.make_node("Gather", ["token_norm", "token_index"], ["window_norms"], axis=1),
        helper.make_node("ReduceMean", ["window_norms", "axes_last"], ["scores"], keepdims=0),
        helper.make_node("TopK", ["scores", "k_vec"], ["values", "indices"], axis=-1, largest=1, sorted=1),
    ]
    nodes[0].attribute.append(k_attr)
    return helper.make_function(
        PLUGIN_DOMAIN,
        PLUGIN_OP,
        inputs=["x", "token_index"],
        outputs=["indices"],
        nodes=nodes,
        opset_imports=[helper.make_opsetid("", 18)],
        attributes=["k", "window", "plugin_version", "plugin_namespace"],
    )


_SCORE_CHAIN = "ReduceL2 -> Reshape -> Gather -> Reshape -> ReduceMean"


def fuse_window_select(proto: onnx.ModelProto, window: int) -> int:
    """Replace every scoring chain (Cast?) -> ReduceL2 -> Reshape -> Gather -> Reshape -> ReduceMean -> TopK
    (`ptb.window_scores` as exported) by one XprWindowSelect.

    Returns the number of nodes fused; the model gets the function and the `xpr` opset import.
    """
    g = proto.graph
    producer = {o: n for n in g.node for o in n.output}
    uses = Counter(i for n in g.node for i in n.input)
    uses.update(o.name for o in g.output)
    inits = {i.name: i for i in g.initializer}
    drop: set[int] = set()
    replace: dict[int, onnx.NodeProto] = {}
    new_inits: dict[str, onnx.TensorProto] = {}
    fused = 0

    def single(name: str, op: str) -> onnx.NodeProto | None:
        node = producer.get(name)
        return node if node is not None and node.op_type == op and uses[node.output[0]] == 1 else None

    for n in g.node:
        if n.op_type != "TopK":
            continue
        mean = single(n.input[0], "ReduceMean")
        shape_w = single(mean.input[0], "Reshape") if mean is not None else None
        gather = single(shape_w.input[0], "Gather") if shape_w is not None else None
        shape_t = single(gather.input[0], "Reshape") if gather is not None else None
        l2 = single(shape_t.input[0], "ReduceL2") if shape_t is not None else None
        if mean is None or shape_w is None or gather is None or shape_t is None or l2 is None:
            raise ValueError(f"TopK {n.name}: not fed by the window-score chain {_SCORE_CHAIN}")
        if gather.input[1] not in inits or helper.get_node_attr_value(gather, "axis") != 1:
            raise ValueError(f"TopK {n.name}: the window-score Gather is not over tokens with a constant index")
        if len(n.output) > 1 and n.output[0] and uses[n.output[0]]:
            raise ValueError(f"TopK {n.name}: its values are used; the plugin returns indices only")
        src = l2.input[0]
        chain = [mean, shape_w, gather, shape_t, l2]
        cast = producer.get(src)
        if cast is not None and cast.op_type == "Cast" and uses[cast.output[0]] == 1:
            src = cast.input[0]
            chain.append(cast)
        flat = onnx.numpy_helper.to_array(inits[gather.input[1]])
        index_name = f"{gather.input[1]}_windows"
        if index_name not in new_inits:
            new_inits[index_name] = onnx.numpy_helper.from_array(flat.reshape(-1, window * window), index_name)
        k = int(onnx.numpy_helper.to_array(inits[n.input[1]]).reshape(-1)[0])
        node = helper.make_node(
            PLUGIN_OP,
            [src, index_name],
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
    g.initializer.extend(new_inits.values())
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
            f"inlines the body when no plugin named XprWindowSelect (version {PLUGIN_VERSION}, namespace xpr) "
            "is registered, so the engine in this bundle needs no plugin library. Register an IPluginV3 creator "
            "of that name/version/namespace before parsing to get the custom kernel instead; an engine built that way "
            "needs the same plugin library loaded (IPluginRegistry::loadLibrary) before deserialising."
        ),
    }
