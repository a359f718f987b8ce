"""`xpr data prepare` throughput: images/s at 1 and 2 workers, uncompressed and JPEG 2000 (issue 16).

    .venv/bin/python bench/data_prepare.py [--images 12] [--rounds 2] [--size 3518x2800] [--work DIR]

Writes two synthetic VinDr-layout datasets of full-field images (`xpr synth --transfer-syntax
uncompressed|jpeg2000`, 3518x2800 stored pixels like VinDr-Mammo's), then runs the real command,
`xpr data prepare DATA --cache FRESH --workers N --json` (paper size, 2688x896), on each. The
machine is shared, so runs are interleaved: every round runs both datasets at 1 and 2 workers
(the worker order reversed every other round) and the 2/1 ratio is taken per round and over the
medians. images/s is prepared images per second of pool time (spawning the workers included,
indexing the dataset not); the wall time of the whole command is recorded too, and the CPU time
the workers spent (`cores_obtained` = CPU s / pool s: how much of the machine a run really got).
In the first round each run is repeated on its now full cache: that run prepares nothing, so its
time is the fixed cost (workers started, every file hashed).

Writes bench/results/data-prepare.json with the exact commands and the load average around each run.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xpr_deploy.bench.machine import machine_info  # noqa: E402
from xpr_deploy.io import write_json  # noqa: E402

XPR = [sys.executable, "-m", "xpr_deploy.cli"]
VARIANTS = ("uncompressed", "jpeg2000")


def run(cmd: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    print("+", shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"{shlex.join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return r, wall


def synth(work: Path, variant: str, images: int, size: str) -> str:
    out = work / variant
    cmd = [*XPR, "synth", str(out), "--breasts", str(images // 2), "--size", size, "--transfer-syntax", variant]
    if out.exists() and len(list(out.rglob("*.dicom"))) == images:
        print(f"reusing {out}", flush=True)
    else:
        run([*cmd, "--force"])
    return shlex.join(["xpr", *cmd[len(XPR) :]])


def prepare(data: Path, cache: Path, workers: int, config: str) -> dict[str, Any]:
    cmd = [*XPR, "data", "prepare", str(data), "--cache", str(cache), "--config", config]
    cmd += ["--workers", str(workers), "--json"]
    load_before = os.getloadavg()[0]
    r, wall = run(cmd)
    rep = json.loads(r.stdout)
    return {
        "command": shlex.join(["xpr", *cmd[len(XPR) :]]),
        "workers": workers,
        "prepared": rep["prepared"],
        "reused": rep["reused"],
        "rejected": len(rep["rejected"]),
        "failed": len(rep["failed"]),
        "images_per_s": rep["images_per_s"],
        "pool_seconds": rep["seconds"],
        "cpu_seconds": rep["cpu_seconds"],
        "cores_obtained": round(rep["cpu_seconds"] / rep["seconds"], 2) if rep["seconds"] else None,
        "index_seconds": rep["index_seconds"],
        "wall_seconds": round(wall, 3),
        "load_avg_1min_before": round(load_before, 2),
        "load_avg_1min_after": round(os.getloadavg()[0], 2),
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for v in VARIANTS:
        mine = [r for r in runs if r["variant"] == v and r["prepared"] > 0]
        rate = {w: [r["images_per_s"] for r in mine if r["workers"] == w] for w in (1, 2)}
        per_round = []
        for rnd in sorted({r["round"] for r in mine}):
            pair = {r["workers"]: r["images_per_s"] for r in mine if r["round"] == rnd}
            if 1 in pair and 2 in pair:
                per_round.append(round(pair[2] / pair[1], 3))
        med = {w: statistics.median(x) for w, x in rate.items() if x}
        fixed = [r for r in runs if r["variant"] == v and r["prepared"] == 0]
        out[v] = {
            "images_per_s_1_worker": rate[1],
            "images_per_s_2_workers": rate[2],
            "median_images_per_s_1_worker": round(med[1], 3),
            "median_images_per_s_2_workers": round(med[2], 3),
            "ratio_2_over_1_of_medians": round(med[2] / med[1], 3),
            "ratio_2_over_1_per_round": per_round,
            "fixed_cost_seconds_all_reused": {str(r["workers"]): r["pool_seconds"] for r in fixed},
            "cores_obtained_1_worker": [r["cores_obtained"] for r in mine if r["workers"] == 1],
            "cores_obtained_2_workers": [r["cores_obtained"] for r in mine if r["workers"] == 2],
            "cpu_seconds_per_image": round(statistics.median(r["cpu_seconds"] / r["prepared"] for r in mine), 3),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=12, help="images per dataset (even)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--size", default="3518x2800", help="stored ROWSxCOLS of the synthetic images")
    ap.add_argument("--config", default="paper", help="model preset whose input size is prepared")
    ap.add_argument("--work", type=Path, default=None, help="keep the datasets here (reused when complete)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "data-prepare.json")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="xpr-bench-prepare-"))
    t_start, load_start, utc_start = (
        time.perf_counter(),
        os.getloadavg(),
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    commands = {"driver": shlex.join(["python", "bench/data_prepare.py", *sys.argv[1:]])}
    for v in VARIANTS:
        commands[f"synth_{v}"] = synth(work, v, args.images, args.size)
    runs: list[dict[str, Any]] = []
    for rnd in range(args.rounds):
        for v in VARIANTS:
            for workers in (1, 2) if rnd % 2 == 0 else (2, 1):
                cache = work / f"cache-{v}-{workers}"
                shutil.rmtree(cache, ignore_errors=True)
                runs.append({"round": rnd, "variant": v, **prepare(work / v, cache, workers, args.config)})
                print(json.dumps(runs[-1]), flush=True)
                if rnd == 0:  # same cache again: nothing to prepare, only the fixed cost
                    runs.append({"round": rnd, "variant": v, **prepare(work / v, cache, workers, args.config)})
                shutil.rmtree(cache, ignore_errors=True)
    result = {
        "what": "xpr data prepare images/s at 1 and 2 workers, synthetic full-field DICOM, paper input size",
        "commands": commands,
        "images_per_variant": args.images,
        "stored_size": args.size,
        "config": args.config,
        "rounds": args.rounds,
        "summary": summarize(runs),
        "runs": runs,
        "load_avg_1_5_15_start": [round(x, 2) for x in load_start],
        "load_avg_1_5_15_end": [round(x, 2) for x in os.getloadavg()],
        "utc_start": utc_start,
        "seconds": round(time.perf_counter() - t_start, 1),
        "machine": machine_info(),
    }
    write_json(args.out, result)
    print(json.dumps(result["summary"], indent=2))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
