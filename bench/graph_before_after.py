"""ONNX graph variants exported side by side, then timed, profiled and measured for peak memory.

    .venv/bin/python bench/graph_before_after.py export VARIANT OUT.onnx [--keep 0.5]   # + OUT.onnx.json
    .venv/bin/python bench/graph_before_after.py compare NAME=A.onnx[@SETTINGS] NAME=B.onnx[@SETTINGS] ...
                                                 [--runs 3] [--out OUT] [--peak]

Variants (paper model, random weights seed 0, keep 0.5; eager outputs are the same in all):
  issue6   the export before the graph work of issue 6: roll -> window_partition -> ... ->
           window_reverse -> roll, unchunked cross-attention, the exporter's default GELU spelling
  main     before issue 16: dense [N, 49, 49] attention masks per shifted block, every window
           gathered ([B, N, 49, C]) to be scored, then the kept ones gathered from those
  masks    issue 16 step 1 only: masks as a table of distinct masks + a per-window index
  current  the committed model code (step 1 + step 2: windows scored from per-token norms on
           the map, only the kept windows gathered)
`export` records the export time, the file size and the attention-mask constant bytes.

`compare` runs every graph in one ONNX Runtime process, round-robin (order reversed every other
round, as `xpr bench`), with the profiler on, and prints wall/CPU medians, ratios to the first
graph and kernel time per op type. `@SETTINGS` picks ONNX Runtime session settings from
SETTINGS below (default: `xpr`'s own, `OrtSettings()`), so one graph can be compared with itself
under other options. `--peak` adds the peak RSS of each entry, each in a fresh process with
ONNX Runtime alone (no PyTorch), as `xpr bench --onnx` measures it.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

#: named ONNX Runtime session settings (keyword arguments of `OrtSettings`) for `NAME=PATH@SETTINGS`
SETTINGS: dict[str, dict[str, Any]] = {
    "xpr": {},
    "extended": {"optimization": "extended"},
    "basic": {"optimization": "basic"},
    "mem-pattern": {"low_memory": False},
    "no-arena": {"cpu_arena": False},
    "no-spin": {"spinning": False},
}
PAPER_SHAPE = (1, 1, 2688, 896)


# ---- the pre-change forms, patched back in for `export` ------------------------------------
def _scores_of_windows(windows: Any) -> Any:
    """The window score as first written: norms over gathered windows [B, N, T, C]."""
    import torch

    return torch.linalg.vector_norm(windows.float(), dim=-1).mean(dim=-1)


def issue6_forward_pruned(self: Any, x: Any, k: int) -> Any:
    """The pruned block as first written: roll + partition, gather/scatter on windows, reverse + roll."""
    import torch
    from timm.models.swin_transformer import window_partition, window_reverse

    from xpr_deploy.model.ptb import select_windows

    b, h, w, c = x.shape
    wh, ww = self.window_size
    sh, sw = self.shift_size
    shifted = any(self.shift_size)
    xs = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2)) if shifted else x
    n = (h // wh) * (w // ww)
    windows = window_partition(xs, self.window_size).reshape(b * n, wh * ww, c)
    idx = select_windows(_scores_of_windows(windows.reshape(b, n, wh * ww, c)), k)
    if self.record_selection:
        self.last_selection = idx
    flat = (idx + torch.arange(b, device=x.device).unsqueeze(1) * n).reshape(-1)
    kept = windows.index_select(0, flat)
    mask = self.attn_mask.index_select(0, idx.reshape(-1)) if self.attn_mask is not None else None
    kept = kept + self.drop_path1(self.attn(self.norm1(kept), mask=mask))
    kept = kept + self.drop_path2(self.mlp(self.norm2(kept)))
    windows = windows.index_put((flat,), kept)
    out = window_reverse(windows.view(-1, wh, ww, c), self.window_size, h, w)
    return torch.roll(out, shifts=(sh, sw), dims=(1, 2)) if shifted else out


def _main_forward(self: Any, x: Any, k: int, mask_table: bool) -> Any:
    """The pruned block before issue 16: every window gathered and scored, the kept ones gathered from
    those; the masks of the kept windows from timm's dense [N, T, T] buffer (or, with `mask_table`,
    from the step-1 table)."""
    import torch

    from xpr_deploy.model.ptb import mask_table_tensors, select_windows, token_index_tensor

    b, h, w, c = x.shape
    wh, ww = self.window_size
    n, t = (h // wh) * (w // ww), wh * ww
    tok = token_index_tensor(h, w, self.window_size, tuple(self.shift_size), x.device)
    if b > 1:
        tok = tok.unsqueeze(0) + (torch.arange(b, device=x.device) * (h * w)).view(b, 1, 1)
    tok = tok.reshape(b * n, t)
    x_flat = x.reshape(b * h * w, c)
    windows = x_flat.index_select(0, tok.reshape(-1)).reshape(b * n, t, c)
    idx = select_windows(_scores_of_windows(windows.reshape(b, n, t, c)), k)
    if self.record_selection:
        self.last_selection = idx
    flat = (idx + torch.arange(b, device=x.device).unsqueeze(1) * n).reshape(-1)
    kept = windows.index_select(0, flat)
    mask = None
    if self.attn_mask is not None and mask_table:
        table, mask_index = mask_table_tensors(
            h, w, self.window_size, tuple(self.shift_size), x.device, self.attn_mask.dtype
        )
        mask = table.index_select(0, mask_index.index_select(0, idx.reshape(-1)))
    elif self.attn_mask is not None:
        mask = self.attn_mask.index_select(0, idx.reshape(-1))
    kept = kept + self.drop_path1(self.attn(self.norm1(kept), mask=mask))
    kept = kept + self.drop_path2(self.mlp(self.norm2(kept)))
    out = x_flat.index_put((tok.index_select(0, flat).reshape(-1),), kept.reshape(-1, c))
    return out.view(b, h, w, c)


def patch_variant(variant: str) -> None:
    """Put a variant's forms into the model code (this process only)."""
    from torch import nn

    from xpr_deploy.model import ctb, export_ops, ptb

    blk = cast(Any, ptb.PrunedSwinBlock)
    if variant == "issue6":
        blk._forward_pruned = issue6_forward_pruned
        ctb._export_query_chunk = lambda h, nq, nk: nq  # type: ignore[assignment]
        export_ops.ExportGELU.forward = nn.GELU.forward  # type: ignore[method-assign, assignment]
        ptb.use_export_gelu = lambda m: 0  # type: ignore[assignment]
    elif variant == "main":
        blk._forward_pruned = functools.partialmethod(_main_forward, mask_table=False)
    elif variant == "masks":
        blk._forward_pruned = functools.partialmethod(_main_forward, mask_table=True)
    elif variant != "current":
        raise SystemExit(f"unknown variant {variant!r} (issue6, main, masks, current)")


def mask_constant_bytes(path: Path) -> int:
    """Bytes of float initializers shaped [M, 49, 49] (the attention-mask constants)."""
    import onnx

    proto = onnx.load(str(path))
    return sum(
        int(np.prod(i.dims)) * (4 if i.data_type == onnx.TensorProto.FLOAT else 2)
        for i in proto.graph.initializer
        if len(i.dims) == 3 and i.dims[1] == i.dims[2] == 49 and i.data_type != onnx.TensorProto.INT64
    )


def export_variant(variant: str, path: Path, seed: int = 0, keep: float = 0.5) -> dict[str, Any]:
    import torch

    from xpr_deploy.bench import machine_info
    from xpr_deploy.config import get_config
    from xpr_deploy.export.onnx import export_onnx
    from xpr_deploy.model.xpruning import random_model

    patch_variant(variant)
    model = random_model(get_config("paper"), seed)
    model.set_keep(keep)
    t0, c0 = time.perf_counter(), time.process_time()
    export_onnx(model, path)
    rec = {
        "variant": variant,
        "keep": keep,
        "seed": seed,
        "export_s": round(time.perf_counter() - t0, 1),
        "export_cpu_s": round(time.process_time() - c0, 1),
        "torch_threads": torch.get_num_threads(),
        "size_bytes": path.stat().st_size,
        "size_mb": round(path.stat().st_size / 1e6, 1),
        "mask_constant_bytes": mask_constant_bytes(path),
        "load_average": os.getloadavg(),
        "machine": machine_info(),
    }
    Path(f"{path}.json").write_text(json.dumps(rec, indent=1) + "\n")
    print(json.dumps({k: v for k, v in rec.items() if k != "machine"}))
    return rec


# ---- timing, profiling and peak memory -------------------------------------------------------
def _settings(name: str, threads: int, profile_prefix: str | None = None) -> Any:
    from xpr_deploy.runners.onnxrt import OrtSettings

    if name not in SETTINGS:
        raise SystemExit(f"unknown settings {name!r} (one of {sorted(SETTINGS)})")
    return OrtSettings(providers=("CPUExecutionProvider",), threads=threads, profile_prefix=profile_prefix,
                       **SETTINGS[name])  # fmt: skip


def _parse(entry: str) -> tuple[str, Path, str]:
    name, _, rest = entry.partition("=")
    path, _, setting = rest.partition("@")
    if not name or not path:
        raise SystemExit(f"expected NAME=PATH[@SETTINGS], got {entry!r}")
    return name, Path(path), setting or "xpr"


def peak_child(path: Path, setting: str, threads: int, runs: int) -> None:
    """Fresh process, ONNX Runtime only: max over calls of the per-call VmHWM (reset before each call)."""
    from xpr_deploy.bench.inputs import example_views
    from xpr_deploy.bench.memory import PeakRSS
    from xpr_deploy.runners.onnxrt import create_session

    rss = PeakRSS()
    t0 = time.perf_counter()
    sess = create_session(path, _settings(setting, threads), path)
    load_s = time.perf_counter() - t0
    cc, mlo = example_views(PAPER_SHAPE)
    peaks, walls = [], []
    for _ in range(runs):
        rss.reset()
        t = time.perf_counter()
        sess.run(["logits"], {"cc": cc, "mlo": mlo})
        walls.append((time.perf_counter() - t) * 1e3)
        peaks.append(rss.peak_mb())
    print(json.dumps({"peak_mem_mb": max(p or 0.0 for p in peaks), "per_call_mb": peaks, "wall_ms": walls,
                      "session_load_s": load_s, "torch_loaded": "torch" in sys.modules}))  # fmt: skip


def peak_memory(path: Path, setting: str, threads: int, runs: int = 3) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "_peak", str(path), setting, "--threads", str(threads), "--runs", str(runs)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return cast(dict[str, Any], json.loads(out.strip().splitlines()[-1]))


def compare(entries: list[str], runs: int, threads: int, out: Path | None, peak: bool) -> dict[str, Any]:
    from xpr_deploy import bench as B
    from xpr_deploy.runners.onnxrt import create_session

    parsed = [_parse(e) for e in entries]
    cc, mlo = B.example_views(PAPER_SHAPE)
    sess: dict[str, Any] = {}
    load_s: dict[str, float] = {}
    for name, p, setting in parsed:
        t0 = time.perf_counter()
        sess[name] = create_session(p, _settings(setting, threads, f"/tmp/xpr_gba_{name}"), p)
        load_s[name] = round(time.perf_counter() - t0, 2)
    fns: dict[str, Any] = {n: functools.partial(s.run, ["logits"], {"cc": cc, "mlo": mlo}) for n, s in sess.items()}
    first = parsed[0][0]
    outs = {n: f() for n, f in fns.items()}
    diffs = {n: float(np.abs(o[0] - outs[first][0]).max()) for n, o in outs.items()}
    t = B.time_interleaved(fns, runs, 1, progress=lambda m: print(m, file=sys.stderr, flush=True))
    res: dict[str, Any] = {
        "entries": {n: {"graph": str(p), "settings": s, "ort_settings": SETTINGS[s]} for n, p, s in parsed},
        "wall_median_ms": {n: float(np.median(v.wall_ms)) for n, v in t.items()},
        "cpu_median_ms": {n: float(np.median(v.cpu_ms)) for n, v in t.items()},
        "wall_ms": {n: v.wall_ms for n, v in t.items()},
        f"over_{first}": {n: B.ratio_stats(t[n].wall_ms, t[first].wall_ms) for n in t if n != first},
        f"over_{first}_cpu": {n: B.ratio_stats(t[n].cpu_ms, t[first].cpu_ms) for n in t if n != first},
        f"max_abs_dlogits_vs_{first}": diffs,
        "session_load_s": load_s,
        "profile": {n: B.summarize_ort_profile(s.end_profiling(), top=40) for n, s in sess.items()},
        "runs": runs,
        "threads": threads,
        "load_average_end": os.getloadavg(),
        "machine": B.machine_info(),
        "command": B.command_line(),
    }
    for n, p, _ in parsed:
        meta = Path(f"{p}.json")
        if meta.is_file():
            res["entries"][n]["export"] = {
                k: v for k, v in json.loads(meta.read_text()).items() if k not in ("machine",)
            }
    if peak:
        res["peak_mem"] = {n: peak_memory(p, s, threads) for n, p, s in parsed}
    if out is not None:
        out.write_text(json.dumps(res, indent=1) + "\n")
    for n, p in res["profile"].items():
        print(n, round(p["kernel_ms_per_run"]), [(o["op"], round(o["ms_per_run"])) for o in p["ops"][:14]])
    show = ("wall_median_ms", "cpu_median_ms", f"over_{first}", f"max_abs_dlogits_vs_{first}")
    print(json.dumps({k: res[k] for k in show}, indent=1))
    if peak:
        print(json.dumps({n: round(v["peak_mem_mb"]) for n, v in res["peak_mem"].items()}))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("variant", choices=["issue6", "main", "masks", "current"])
    e.add_argument("out", type=Path)
    e.add_argument("--keep", type=float, default=0.5)
    c = sub.add_parser("compare")
    c.add_argument("entries", nargs="+", help="NAME=GRAPH.onnx[@SETTINGS]; the first is the reference")
    c.add_argument("--runs", type=int, default=3)
    c.add_argument("--threads", type=int, default=2)
    # --out as in every other bench driver; --json is the spelling recorded in results/graph/*.json
    c.add_argument("--out", "--json", dest="out", type=Path, default=None, help="write the results here")
    c.add_argument("--peak", action="store_true", help="peak RSS of each entry in a fresh ONNX Runtime process")
    pk = sub.add_parser("_peak")
    pk.add_argument("graph", type=Path)
    pk.add_argument("setting")
    pk.add_argument("--threads", type=int, default=2)
    pk.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if args.cmd == "export":
        export_variant(args.variant, args.out, keep=args.keep)
    elif args.cmd == "compare":
        compare(args.entries, args.runs, args.threads, args.out, args.peak)
    else:
        peak_child(args.graph, args.setting, args.threads, args.runs)


if __name__ == "__main__":
    main()
