"""CPU benchmark at paper size (2688x896, batch 1): eager FP32 vs ONNX Runtime FP32, pruned vs dense.

    .venv/bin/python bench/cpu_paper.py [--runs 5] [--warmup 1] [--threads 2] [--bundle DIR]

Why one process and interleaving: this machine's cores are shared, so absolute times drift by
2-3x within minutes. The four variants (eager pruned, eager dense, ORT pruned, ORT dense; same
random weights, seed 0) run round-robin in one process with the order reversed every other round,
so every ratio in the result comes from the same minutes of machine time. Peak memory of ONNX
Runtime is also measured alone, in a fresh `xpr bench --onnx` process, since a deployment runs it
without PyTorch beside it. The keep sweeps (eager and ORT) are separate interleaved runs.

Writes bench/results/cpu-paper.json (+ cpu-paper-sweep.png) with the commands that produced it.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xpr_deploy import bench as B  # noqa: E402
from xpr_deploy.config import get_config  # noqa: E402
from xpr_deploy.io import write_json  # noqa: E402
from xpr_deploy.model.xpruning import random_model  # noqa: E402

XPR = str(Path(sys.executable).with_name("xpr"))
#: issue 16's targets: ratios of medians from the one interleaved run, ONNX Runtime's peak RSS alone
#: (MiB, 2 GiB), the FP32 graph file (decimal MB)
TARGETS = {
    "pruned_over_dense_eager": 0.50,
    "pruned_over_dense_onnx": 0.50,
    "onnx_over_eager": 0.70,
    "onnx_peak_mem_mb": 2048,
    "fp32_graph_mb": 300,
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def display_path(p: Path) -> str:
    """A path for the record: relative to the repository when inside it, else as given (`--bundle` may lie anywhere)."""
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def sh(cmd: list[str]) -> str:
    """Run a command (echoed), fail loudly; returns it shell-quoted for the record."""
    log("$ " + shlex.join(cmd))
    subprocess.run(cmd, check=True, cwd=ROOT)
    return shlex.join(["xpr" if c == XPR else c for c in cmd])


def export_bundle(dest: Path, seed: int) -> str:
    return sh([XPR, "export", "--config", "paper", "--seed", str(seed), "--no-engine", "--parity-samples", "0",
               "--out", str(dest)])  # fmt: skip


def main_comparison(model: Any, bundle: Path, dense_onnx: Path, runs: int, warmup: int, threads: int) -> dict[str, Any]:
    """Eager pruned / dense and ORT pruned / dense, interleaved in one process."""
    from xpr_deploy.runners.onnxrt import OnnxRuntimeRunner, OrtSettings

    src = B.open_bundle(bundle)
    graph = src.bundle.graph()
    cc, mlo = B.example_views((1, 1, *model.cfg.img_size))
    tcc, tmlo = torch.from_numpy(cc), torch.from_numpy(mlo)
    own = list(model.keep_ratios)

    def eager(keep: list[float]) -> Any:
        def run() -> None:
            model.set_keep(keep)
            with torch.inference_mode():
                model(tcc, tmlo)

        return run

    def onnx(path: Path) -> Any:
        r = OnnxRuntimeRunner(path, OrtSettings(providers=("CPUExecutionProvider",), threads=threads), io=src.io)
        r.activate()  # the process ends after the comparison
        feed = {src.io.cc: cc, src.io.mlo: mlo}
        return lambda: r.infer(feed, check_inputs=False)

    fns = {
        "eager_pruned": eager(own),
        "eager_dense": eager([1.0] * len(own)),
        "onnx_pruned": onnx(graph),
        "onnx_dense": onnx(dense_onnx),
    }
    times = B.time_interleaved(fns, runs, warmup, memory=B.rss_hooks, progress=log)
    model.set_keep(own)
    variants = {n: B.variant_report(t, 1) for n, t in times.items()}

    def r(a: str, b: str) -> dict[str, float]:
        return B.ratio_stats(times[a].wall_ms, times[b].wall_ms)

    return {
        "variants": variants,
        "ratios": {
            "pruned_over_dense_eager": r("eager_pruned", "eager_dense"),
            "pruned_over_dense_onnx": r("onnx_pruned", "onnx_dense"),
            "onnx_over_eager": r("onnx_pruned", "eager_pruned"),
            "onnx_over_eager_dense": r("onnx_dense", "eager_dense"),
        },
        "cpu_time_ratios": {
            "pruned_over_dense_eager": B.ratio_stats(times["eager_pruned"].cpu_ms, times["eager_dense"].cpu_ms),
            "pruned_over_dense_onnx": B.ratio_stats(times["onnx_pruned"].cpu_ms, times["onnx_dense"].cpu_ms),
            "onnx_over_eager": B.ratio_stats(times["onnx_pruned"].cpu_ms, times["eager_pruned"].cpu_ms),
        },
        "files": {"onnx_pruned": display_path(graph), "onnx_dense": display_path(dense_onnx)},
    }


def plot_sweeps(sweeps: dict[str, dict[str, Any]], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=120)
    macs_drawn = False
    for name, rep in sweeps.items():
        sw = rep.get("keep_sweep") or []
        if not sw:
            continue
        ks = [s["keep"] for s in sw]
        ax.plot(ks, [s["latency_ratio"] for s in sw], "o-", label=f"latency / dense, {name}")
        if not macs_drawn and all(s.get("macs_ratio") is not None for s in sw):
            ax.plot(ks, [s["macs_ratio"] for s in sw], "s--", color="black", label="multiply-adds / dense (xpr info)")
            macs_drawn = True
    ax.plot([0.25, 1.0], [0.25, 1.0], ":", color="grey", label="proportional to keep")
    ax.set_xlabel("keep ratio (1 - r), all stages")
    ax.set_ylabel("relative to dense (keep 1.0)")
    ax.set_ylim(0, 1.1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("paper 2688x896, CPU, batch 1: keep sweep", fontsize=10)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def summarize(
    args: Any,
    main_rep: dict[str, Any],
    iso: dict[str, Any],
    sweeps: dict[str, Any],
    commands: dict[str, str],
    t_start: float,
) -> dict[str, Any]:
    """The result file: the four headline figures at top level, everything else below them."""
    ratios = main_rep["ratios"]
    result = {
        "what": "paper config 2688x896, batch 1, CPU, FP32, random weights (seed 0); keep 0.5 (r = 0.5) vs dense",
        "pruned_over_dense_eager": ratios["pruned_over_dense_eager"]["ratio_of_medians"],
        "pruned_over_dense_onnx": ratios["pruned_over_dense_onnx"]["ratio_of_medians"],
        "onnx_over_eager": ratios["onnx_over_eager"]["ratio_of_medians"],
        "onnx_over_eager_dense": ratios["onnx_over_eager_dense"]["ratio_of_medians"],
        "onnx_peak_mem_mb": iso["peak_mem_mb"],
        "onnx_peak_mem_delta_mb": iso["peak_mem_delta_mb"],
        "onnx_peak_mem_in_process_mb": main_rep["variants"]["onnx_pruned"]["peak_mem_mb"],
        "eager_peak_mem_mb": main_rep["variants"]["eager_pruned"]["peak_mem_mb"],
        "fp32_graph_mb": round(B.open_bundle(args.bundle).bundle.graph().stat().st_size / 1e6, 1),
        "targets": dict(TARGETS),
        "median_ms": {n: v["median_ms"] for n, v in main_rep["variants"].items()},
        "main_comparison": main_rep,
        "onnx_isolated": {k: iso[k] for k in ("median_ms", "p90_ms", "p99_ms", "peak_mem_mb", "peak_mem_delta_mb")},
        "keep_sweep": {n: r.get("keep_sweep") for n, r in sweeps.items()},
        "commands": commands,
        "gpu": "no GPU was lent to this session: GPU results are absent (bench/gpu.py has not been run)",
        "machine": B.machine_info(),
        "wall_s": round(time.time() - t_start, 1),
    }
    result["passes"] = {k: (result[k] if result[k] is not None else np.inf) <= t for k, t in TARGETS.items()}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bundle", type=Path, default=ROOT / "export" / "bench-paper-r05", help="reused if present")
    ap.add_argument("--sweep", default="1.0,0.75,0.5,0.25", help="keep ratios ('' to skip the sweeps)")
    ap.add_argument("--onnx-sweep", default="1.0,0.5,0.25", help="keep ratios for ONNX Runtime (one export each)")
    ap.add_argument("--sweep-runs", type=int, default=3)
    ap.add_argument("--graphs", type=Path, default=None, help="folder with keep<k>.onnx from an earlier run")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cpu-paper.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.time()
    commands = {"driver": shlex.join(["python", "bench/cpu_paper.py", *sys.argv[1:]])}

    if not (args.bundle / "manifest.json").is_file():
        commands["export"] = export_bundle(args.bundle, args.seed)
    else:
        commands["export"] = (
            f"xpr export --config paper --seed {args.seed} --no-engine --parity-samples 0 --out {args.bundle}"
        )
    model = random_model(get_config("paper"), args.seed)  # the bundle's weights (same seed)
    src = B.open_bundle(args.bundle)
    keeps = [float(k) for k in args.sweep.split(",") if k.strip()]
    onnx_keeps = [float(k) for k in args.onnx_sweep.split(",") if k.strip()]
    tmpdir = tempfile.TemporaryDirectory(prefix="xpr-bench-")
    tmp = Path(tmpdir.name)
    log("exporting the dense graph and the ONNX sweep graphs (same weights)")
    need = sorted({1.0, *[k for k in onnx_keeps if k != 0.5]}, reverse=True)
    graphs = {
        k: args.graphs / f"keep{k:g}.onnx" for k in need if args.graphs and (args.graphs / f"keep{k:g}.onnx").is_file()
    }
    if graphs:
        log(f"reusing graphs exported earlier from the same bundle: {sorted(graphs)}")
    graphs.update(B.export_variant_graphs(src, [k for k in need if k not in graphs], tmp, log))
    dense = graphs[1.0]
    log("main comparison: eager vs ONNX Runtime, pruned vs dense, interleaved")
    main_rep = main_comparison(model, args.bundle, dense, args.runs, args.warmup, args.threads)
    commands["main_comparison"] = (
        "in-process (bench/cpu_paper.py main_comparison): eager and ONNX Runtime, keep 0.5 and 1.0, "
        f"{args.runs} interleaved runs after {args.warmup} warm-up, {args.threads} threads"
    )

    log("ONNX Runtime alone in a fresh process (peak memory of inference)")
    iso_args = ["--onnx", str(args.bundle), "--runs", "3", "--warmup", "1", "--threads", str(args.threads)]
    iso = B.run_isolated(iso_args)
    commands["onnx_isolated"] = iso["isolated_command"]

    sweeps: dict[str, dict[str, Any]] = {}
    write_json(args.out, summarize(args, main_rep, iso, sweeps, commands, t_start))  # sweeps pending
    if keeps:
        log("keep sweep, eager")
        sweeps["eager"] = B.bench_eager(model, runs=args.sweep_runs, warmup=1, threads=args.threads, keep_sweep=keeps,
                                        progress=log)  # fmt: skip
        commands["sweep_eager"] = (
            f"xpr bench --config paper --keep-sweep {args.sweep} --runs {args.sweep_runs} --threads {args.threads}"
        )
        log("keep sweep, ONNX Runtime")
        sweeps["onnx"] = B.bench_onnx(args.bundle, runs=args.sweep_runs, warmup=1, threads=args.threads,
                                      keep_sweep=onnx_keeps, sweep_paths=graphs, progress=log)  # fmt: skip
        commands["sweep_onnx"] = (
            f"xpr bench --onnx {args.bundle} --keep-sweep {args.onnx_sweep} "
            f"--runs {args.sweep_runs} --threads {args.threads}"
        )
        plot_sweeps(sweeps, args.out.with_name(args.out.stem + "-sweep.png"))
    tmpdir.cleanup()

    result = summarize(args, main_rep, iso, sweeps, commands, t_start)
    write_json(args.out, result)
    for k in TARGETS:
        print(f"{k:26s} {result[k]:10.3f}  {'ok' if result['passes'][k] else 'MISSED'}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
