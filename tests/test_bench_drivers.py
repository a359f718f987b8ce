"""The bench/ driver scripts' own logic (they are scripts, not package modules: loaded by path)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_driver(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_cpu_paper_records_paths_outside_the_repository(tmp_path: Path) -> None:
    """`--bundle` outside the repository used to crash the end of the run (`relative_to(ROOT)`)."""
    cpu_paper = load_driver("cpu_paper")
    outside = tmp_path / "bundle" / "model.onnx"
    assert cpu_paper.display_path(outside) == str(outside)
    assert cpu_paper.display_path(ROOT / "export" / "b" / "model.onnx") == "export/b/model.onnx"


def test_ort_breakdown_groups_kernels_by_exporter_scope(tmp_path: Path) -> None:
    """Kernel time goes to the part named by the exporter's innermost block scope; nodes ONNX Runtime
    created (no scope in the graph) are kept apart, fused names keep their original node's part."""
    import json

    import onnx
    from onnx import TensorProto, helper

    bd = load_driver("ort_breakdown")
    scope = "pkg.torch.onnx.name_scopes"
    nodes = []
    for name, sc in [("mm", "['', 'model.cc.layers.2.blocks.3.attn']"), ("fu", "['', 'model.fusion.cc_from_mlo']"),
                     ("pm", "['', 'model.mlo.layers.1.downsample']")]:  # fmt: skip
        n = helper.make_node("Relu", ["x"], [name], name=name)
        n.metadata_props.add(key=scope, value=sc)
        nodes.append(n)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in ("mm", "fu", "pm")]
    graph = tmp_path / "g.onnx"
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], outs)), str(graph))
    events = [{"cat": "Session", "name": "model_run", "dur": 1}] * 2 + [
        {"cat": "Node", "name": f"{n}_kernel_time", "dur": d, "args": {"op_name": "X"}}
        for n, d in [("mm/MatMulAddFusion", 4000), ("fu", 2000), ("pm", 1000), ("Gelu_token_7", 600)]
    ]
    prof = tmp_path / "p.json"
    prof.write_text(json.dumps(events))
    ms, calls = bd.kernel_ms_by_part(prof, graph)
    assert calls == 2
    assert ms == {"Swin blocks, stage 3": 2.0, "cross-view fusion": 1.0, "patch merging": 0.5, bd.ORT_CREATED: 0.3}


def test_ort_memory_measures_a_fresh_session(tmp_path: Path) -> None:
    """The driver's child creates the session through the runner layer and reports a peak per setting."""
    import json
    import subprocess

    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    graph = tmp_path / "g.onnx"
    m = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    m.ir_version = 10
    m.opset_import[0].version = 18
    onnx.save(m, str(graph))
    out = tmp_path / "mem.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "ort_memory.py"), "--graph", str(graph), "--runs", "1",
                    "--threads", "1", "--out", str(out)], check=True, capture_output=True, text=True)  # fmt: skip
    rep = json.loads(out.read_text())
    assert set(rep["results"]) == {"xpr", "reuse-on", "ort-default"}
    for r in rep["results"].values():
        assert r["peak_mb"] > 0 and len(r["calls"]) == 1 and r["torch_loaded"] is False
