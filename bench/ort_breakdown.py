"""Where ONNX Runtime spends a call, pruned vs dense, by part of the model (issue 16).

    .venv/bin/python bench/ort_breakdown.py [--bundle export/bench-paper-r05] [--runs 2] [--threads 2]

Profiles the bundle's graph and the same weights at keep 1.0 (exported from the bundle, or
`--dense-onnx`) through `xpr bench --onnx ... --dense --profile` (the library call), interleaved, and
groups every kernel's time by the exporter's name scope (`pkg.torch.onnx.name_scopes`): the Swin
blocks of each stage (the only part K shrinks), the cross-view fusion, the patch mergings and the
patch embedding. Nodes ONNX Runtime creates while optimising (fused GELU, layout Transposes) carry
no scope and are shown on their own. Writes bench/results/ort-breakdown.json and a bar chart
(ort-breakdown.png) next to it.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xpr_deploy import bench as B  # noqa: E402
from xpr_deploy.bench.machine import machine_info  # noqa: E402
from xpr_deploy.io import write_figure, write_json  # noqa: E402

_BLOCK = re.compile(r"layers\.(\d+)\.blocks\.\d+")
ORT_CREATED = "created by ONNX Runtime (fused GELU, layout)"


def part_of(scope: str | None) -> str:
    if scope is None:
        return ORT_CREATED
    found = _BLOCK.findall(scope)
    if found:
        return f"Swin blocks, stage {int(found[-1]) + 1}"
    named = {"downsample": "patch merging", "patch_embed": "patch embedding", "fusion": "cross-view fusion"}
    return next((name for key, name in named.items() if key in scope), "head, pooling, other")


def scopes(graph: Path) -> dict[str, str]:
    import onnx

    proto = onnx.load(str(graph), load_external_data=False)
    return {
        n.name: next((p.value for p in n.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")
        for n in proto.graph.node
    }


def kernel_ms_by_part(profile: Path, graph: Path) -> tuple[dict[str, float], int]:
    """Kernel ms per call for each part, averaged over every profiled call (warm-up included)."""
    names = scopes(graph)
    calls, kernels = B.ort_kernel_times(profile)
    ms: Counter[str] = Counter()
    for k in kernels:
        ms[part_of(names.get(k.node))] += k.ms
    return {k: v / calls for k, v in ms.items()}, calls


def plot(parts: list[str], pruned: dict[str, float], dense: dict[str, float], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.55 * len(parts) + 1.8))
    y = range(len(parts))
    ax.barh([i + 0.2 for i in y], [dense.get(p, 0) / 1000 for p in parts], 0.4, label="dense (keep 1.0)")
    ax.barh([i - 0.2 for i in y], [pruned.get(p, 0) / 1000 for p in parts], 0.4, label="pruned (keep 0.5)")
    for i, p in enumerate(parts):
        if dense.get(p):
            ax.text(max(dense[p], pruned.get(p, 0)) / 1000, i, f"  {pruned.get(p, 0) / dense[p]:.2f}", va="center")
    ax.set_yticks(list(y), parts)
    ax.invert_yaxis()
    ax.set_xlabel("ONNX Runtime kernel time per call (s); label: pruned / dense")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right")
    fig.tight_layout()
    write_figure(fig, out, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=ROOT / "export" / "bench-paper-r05")
    ap.add_argument("--dense-onnx", type=Path, default=None, help="the dense graph (else exported from the bundle)")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ort-breakdown.json")
    args = ap.parse_args()
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="xpr-breakdown-") as tmp:
        src = B.open_bundle(args.bundle)
        dense = args.dense_onnx or B.export_variant_graphs(src, [1.0], Path(tmp))[1.0]
        rep = B.bench_onnx(args.bundle, runs=args.runs, warmup=args.warmup, threads=args.threads,
                           dense=True, dense_path=dense, profile_dir=Path(tmp) / "prof")  # fmt: skip
        graphs = {"pruned": Path(rep["settings"]["files"]["pruned"]), "dense": Path(dense)}
        by = {n: kernel_ms_by_part(Path(rep["settings"]["profiles"][n]), g) for n, g in graphs.items()}
    pruned, dense_ms = by["pruned"][0], by["dense"][0]
    parts = sorted(set(pruned) | set(dense_ms), key=lambda p: -dense_ms.get(p, 0.0))
    blocks = [p for p in parts if p.startswith("Swin blocks")]
    fixed = [p for p in parts if p in ("cross-view fusion", "patch merging", "patch embedding")]

    def total(d: dict[str, float], ps: list[str]) -> float:
        return sum(d.get(p, 0.0) for p in ps)

    summary = {
        "kernel_ms_per_call": {"pruned": total(pruned, parts), "dense": total(dense_ms, parts)},
        "swin_blocks_pruned_over_dense": total(pruned, blocks) / total(dense_ms, blocks),
        "k_independent_ms": {"pruned": total(pruned, fixed), "dense": total(dense_ms, fixed)},
        "all_pruned_over_dense": total(pruned, parts) / total(dense_ms, parts),
        "call_pruned_over_dense": rep.get("pruned_over_dense"),
    }
    out = {
        "what": "ONNX Runtime CPU kernel time per call by model part, bundle graph vs the same weights at keep 1.0",
        "bundle": str(args.bundle),
        "parts_ms_per_call": {p: {"pruned": pruned.get(p, 0.0), "dense": dense_ms.get(p, 0.0)} for p in parts},
        "summary": summary,
        "median_ms": {v: rep["variants"][v]["median_ms"] for v in rep["variants"]},
        "command": shlex.join(["python", "bench/ort_breakdown.py", *sys.argv[1:]]),
        "machine": machine_info(),
        "wall_s": round(time.time() - t0, 1),
    }
    write_json(args.out, out)
    title = (
        f"paper 2688x896, FP32, ONNX Runtime CPU, {args.threads} threads\nSwin blocks pruned/dense "
        f"{summary['swin_blocks_pruned_over_dense']:.2f}, whole call {summary['all_pruned_over_dense']:.2f}"
    )
    plot(parts, pruned, dense_ms, args.out.with_suffix(".png"), title)
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
