"""The ONNX graph before and after the graph work of issue 6, timed and profiled side by side.

    .venv/bin/python bench/graph_before_after.py export BEFORE.onnx      # the old form, re-created
    .venv/bin/python bench/graph_before_after.py compare BEFORE.onnx AFTER.onnx [--runs 3] [--json OUT]

`export` rebuilds the paper model (seed 0, keep 0.5) with the pre-change forms patched back in:
roll -> window_partition -> ... -> window_reverse -> roll in the pruned block, unchunked
cross-attention, and the exporter's default GELU spelling. AFTER is a bundle graph from
`xpr export --config paper --seed 0`. `compare` runs both in one ONNX Runtime process,
interleaved, with the profiler on, and prints wall/CPU medians and kernel time per op type.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from xpr_deploy import bench as B  # noqa: E402


def old_forward_pruned(self: Any, x: torch.Tensor, k: int) -> torch.Tensor:
    """The pruned block as first written: roll + partition, gather/scatter on windows, reverse + roll."""
    from timm.models.swin_transformer import window_partition, window_reverse

    from xpr_deploy.model.ptb import select_windows, window_scores

    b, h, w, c = x.shape
    wh, ww = self.window_size
    sh, sw = self.shift_size
    shifted = any(self.shift_size)
    xs = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2)) if shifted else x
    n = (h // wh) * (w // ww)
    windows = window_partition(xs, self.window_size).reshape(b * n, wh * ww, c)
    idx = select_windows(window_scores(windows.reshape(b, n, wh * ww, c)), k)
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


def export_before(path: Path, seed: int = 0, keep: float = 0.5) -> None:
    from torch import nn

    from xpr_deploy.config import get_config
    from xpr_deploy.export.onnx import export_onnx
    from xpr_deploy.model import ctb, export_ops, ptb
    from xpr_deploy.model.xpruning import random_model

    ptb.PrunedSwinBlock._forward_pruned = old_forward_pruned  # type: ignore[method-assign]
    ctb._export_query_chunk = lambda b, h, nq, nk: nq  # type: ignore[assignment]
    export_ops.ExportGELU.forward = nn.GELU.forward  # type: ignore[method-assign, assignment]
    ptb.use_export_gelu = lambda m: 0  # type: ignore[assignment]
    model = random_model(get_config("paper"), seed)
    model.set_keep(keep)
    export_onnx(model, path)
    print(f"wrote {path}")


def compare(before: Path, after: Path, runs: int, threads: int, out: Path | None) -> dict[str, Any]:
    from xpr_deploy.runners.onnxrt import OrtSettings, create_session

    cc, mlo = B.example_views((1, 1, 2688, 896))
    sess = {}
    for name, p in (("before", before), ("after", after)):
        so = OrtSettings(providers=("CPUExecutionProvider",), threads=threads, profile_prefix=f"/tmp/xpr_ba_{name}")
        sess[name] = create_session(p, so, p)
    fns: dict[str, Any] = {n: functools.partial(s.run, ["logits"], {"cc": cc, "mlo": mlo}) for n, s in sess.items()}
    t = B.time_interleaved(fns, runs, 1, progress=lambda m: print(m, file=sys.stderr, flush=True))
    res: dict[str, Any] = {
        "wall_median_ms": {n: float(np.median(v.wall_ms)) for n, v in t.items()},
        "cpu_median_ms": {n: float(np.median(v.cpu_ms)) for n, v in t.items()},
        "after_over_before": B.ratio_stats(t["after"].wall_ms, t["before"].wall_ms),
        "after_over_before_cpu": B.ratio_stats(t["after"].cpu_ms, t["before"].cpu_ms),
        "profile": {n: B.summarize_ort_profile(s.end_profiling(), top=30) for n, s in sess.items()},
        "runs": runs,
        "machine": B.machine_info(),
        "command": B.command_line(),
    }
    if out is not None:
        out.write_text(json.dumps(res, indent=1) + "\n")
    for n, p in res["profile"].items():
        print(n, round(p["kernel_ms_per_run"]), [(o["op"], round(o["ms_per_run"])) for o in p["ops"][:12]])
    print(json.dumps({k: res[k] for k in ("wall_median_ms", "cpu_median_ms", "after_over_before")}, indent=1))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("out", type=Path)
    c = sub.add_parser("compare")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    c.add_argument("--runs", type=int, default=3)
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.cmd == "export":
        export_before(args.out)
    else:
        compare(args.before, args.after, args.runs, args.threads, args.json)


if __name__ == "__main__":
    main()
