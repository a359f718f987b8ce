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
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xpr_deploy.data.synth import LESION_RADIUS, write_synthetic  # noqa: E402
from xpr_deploy.demo import DEMO_BREASTS, DEMO_EPOCHS, DEMO_STORED_SIZE, demo_train_settings  # noqa: E402
from xpr_deploy.io import write_json  # noqa: E402
from xpr_deploy.train.evaluate import evaluate_checkpoint  # noqa: E402
from xpr_deploy.train.loop import TrainConfig, train  # noqa: E402


def one_seed(work: Path, seed: int, breasts: int, epochs: int) -> dict[str, Any]:
    data, run, cache = work / f"data{seed}", work / f"run{seed}", work / f"cache{seed}"
    write_synthetic(data, breasts, "vindr", size=DEMO_STORED_SIZE, seed=seed)
    settings = demo_train_settings(epochs)
    t0 = time.perf_counter()
    res = train(TrainConfig(data=str(data), out=str(run), config="tiny", device="cpu", seed=seed,
                            cache=str(cache), progress=False, **settings))  # fmt: skip
    wall = time.perf_counter() - t0
    m = evaluate_checkpoint(run, data, "test", device="cpu", cache=cache).metrics
    return {
        "seed": seed,
        "test_auc": m.auc,
        "test_auc_ci": list(m.auc_ci),
        "n_test": m.n,
        "n_test_pos": m.n_pos,
        "best_epoch": res.best_epoch,
        "train_seconds": round(wall, 1),
        "history": [
            {"epoch": h.epoch, "train_loss": round(h.train_loss, 4), "val_auc": (h.val or {}).get("auc")}
            for h in res.history
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
