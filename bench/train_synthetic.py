"""Does training learn? Held-out AUC of the demo recipe over several seeds (tiny config, CPU).

    .venv/bin/python bench/train_synthetic.py [--seeds 0,1,2,3] [--breasts 320] [--epochs 6]

Each seed draws its own synthetic studies (`xpr synth` with that seed) and trains with that seed
(random init, the demo's settings: batch 4, lr 3e-4, prune warm-up 2, patient-level hold-out 25 %,
validation 15 % of the rest), then scores the held-out breasts with `xpr eval`'s library call.
The must-show of issue 4 is one such run (`tests/test_train_learns.py`, seed 0); this driver shows
how much the figure moves with the seed.

Writes bench/results/train-synthetic.json with the command that produced it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xpr_deploy.data.synth import LESION_RADIUS  # noqa: E402
from xpr_deploy.demo import DEMO_BREASTS, DEMO_EPOCHS, demo_train_settings, run_demo  # noqa: E402
from xpr_deploy.io import write_json  # noqa: E402
from xpr_deploy.train.evaluate import evaluate_checkpoint  # noqa: E402


def one_seed(work: Path, seed: int, breasts: int, epochs: int) -> dict[str, Any]:
    """The demo's synth + train steps with this seed, then the held-out breasts scored."""
    out = work / f"seed{seed}"
    train = run_demo(out, only=["synth", "train"], breasts=breasts, epochs=epochs, seed=seed, quiet=True).steps[-1]
    history = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines() if line]
    m = evaluate_checkpoint(out / "run", out / "data", "test", device="cpu", cache=out / "cache").metrics
    return {
        "seed": seed,
        "test_auc": m.auc,
        "test_auc_ci": list(m.auc_ci),
        "n_test": m.n,
        "n_test_pos": m.n_pos,
        "best_epoch": train["best_epoch"],
        "train_seconds": train["train_seconds"],
        "history": [
            {"epoch": h["epoch"], "train_loss": round(h["train_loss"], 4), "val_auc": (h.get("val") or {}).get("auc")}
            for h in history
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3")
    ap.add_argument("--breasts", type=int, default=DEMO_BREASTS)
    ap.add_argument("--epochs", type=int, default=DEMO_EPOCHS)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train-synthetic.json")
    args = ap.parse_args()
    runs = []
    with tempfile.TemporaryDirectory(prefix="xpr-train-synth-") as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            r = one_seed(Path(tmp), seed, args.breasts, args.epochs)
            print(f"seed {seed}: held-out AUC {r['test_auc']:.3f} (n={r['n_test']}), "
                  f"best epoch {r['best_epoch']}, training {r['train_seconds']} s", flush=True)  # fmt: skip
            runs.append(r)
    aucs = [r["test_auc"] for r in runs]
    write_json(args.out, {
        "command": shlex.join([".venv/bin/python", "bench/train_synthetic.py", *sys.argv[1:]]),
        "config": "tiny", "device": "cpu", "breasts": args.breasts, "lesion_radius": list(LESION_RADIUS),
        "settings": demo_train_settings(args.epochs),
        "test_auc_min": min(aucs), "test_auc_mean": sum(aucs) / len(aucs), "runs": runs,
    })  # fmt: skip
    print(f"held-out AUC min {min(aucs):.3f} mean {sum(aucs) / len(aucs):.3f} -> {args.out}")


if __name__ == "__main__":
    main()
