"""`xpr listen` under load: studies per minute with concurrent C-STORE senders, and the seconds from
a study's last instance received to its results stored at the destination.

    .venv/bin/python bench/listen_load.py [--bundle DIR] [--studies 16] [--senders 4] [--quiet 2]

Exports the tiny preset (random weights, seed 0, kept-window outputs, so heatmaps are made) unless
--bundle is given, writes synthetic four-view studies (320x160, mixed transfer syntaxes), starts
DCMTK's storescp as the destination and `xpr listen` as a subprocess on 127.0.0.1, and sends the
studies from `--senders` threads (pynetdicom SCUs, one association per study). Per-study times come
from the node's own queue (`received` of the last instance, `predicted`, `sent`), read after the
run. The latency includes the quiet period (`--quiet`), reported apart. Writes
bench/results/listen-load.json with the command that produced it. A shared 2-core CPU machine:
the node runs one study at a time, so throughput is inference-bound.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from xpr_deploy.io import write_json  # noqa: E402
from xpr_deploy.node.launch import listen_command, listen_env, storescp_command  # noqa: E402
from xpr_deploy.serve import free_port  # noqa: E402


def _wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"error: {what} within {timeout:g} s")
        time.sleep(0.2)


def _send(study_files: list[list[Path]], port: int, errors: list[str]) -> None:
    """One sender: each study in its own association (as a modality or a PACS router does)."""
    import pydicom
    from pynetdicom import AE

    for files in study_files:
        dss = [pydicom.dcmread(f) for f in files]
        ae = AE(ae_title="LOAD")
        for cx in sorted({(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in dss}):
            ae.add_requested_context(*cx)
        assoc = ae.associate("127.0.0.1", port, ae_title="XPR")
        if not assoc.is_established:
            errors.append(f"association refused for {files[0].parent.name}")
            continue
        for d in dss:
            st = assoc.send_c_store(d)
            if st is None or int(st.get("Status", -1)) != 0:
                errors.append(f"C-STORE failed: {d.SOPInstanceUID}")
        assoc.release()


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3) if values else float("nan")


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, help="an export bundle (default: export tiny with --with-selection)")
    ap.add_argument("--studies", type=int, default=16)
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--quiet", type=float, default=2.0, help="the node's --quiet-seconds")
    ap.add_argument("--timeout", type=float, default=1200.0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "listen-load.json")
    return ap.parse_args()


def _tiny_bundle(work: Path) -> Path:
    from xpr_deploy.export.bundle import ExportOptions, export_bundle, load_source

    model, meta = load_source(None, "tiny", 0)
    opts = ExportOptions(with_selection=True, engine=False, parity_samples=0, name="tiny")
    return export_bundle(model, meta, work / "bundle", opts).path


def _load(a: argparse.Namespace, storescp: str, bundle: Path, studies: list[list[Path]], work: Path) -> dict[str, Any]:
    """storescp as the destination, `xpr listen` in front of it, `--senders` threads sending every study;
    returns the send errors and the wall-clock marks (start, all sent, all answered)."""
    dest_port, node_port, http_port = free_port(), free_port(), free_port()
    (work / "dest").mkdir()
    dest = subprocess.Popen(
        storescp_command(storescp, work / "dest", dest_port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    log = work / "listen.log"
    cmd = listen_command(
        bundle, work / "spool", node_port, http_port,
        "--send-to", f"DEST@127.0.0.1:{dest_port}", "--allow", "LOAD", "--quiet-seconds", str(a.quiet),
    )  # fmt: skip
    with open(log, "wb") as lf:
        node = subprocess.Popen(cmd, stdout=lf, stderr=lf, env=listen_env())
    try:
        _wait(lambda: "listening as" in log.read_text(), 120, "xpr listen did not start")
        errors: list[str] = []
        t0 = time.time()
        threads = [
            threading.Thread(target=_send, args=(studies[i :: a.senders], node_port, errors)) for i in range(a.senders)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        t_sent = time.time()
        _wait(
            lambda: log.read_text().count(" after the last instance") >= len(studies),
            a.timeout,
            "not every study was answered",
        )
        return {"errors": errors, "t0": t0, "t_sent": t_sent, "t_done": time.time()}
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=60)
        dest.terminate()
        dest.wait(timeout=30)


def _report(a: argparse.Namespace, work: Path, n_studies: int, run: dict[str, Any]) -> dict[str, Any]:
    """The node's own queue times (last instance received, predicted, sent) as throughput and latency."""
    db = sqlite3.connect(work / "spool" / "queue.sqlite")
    rows = db.execute("SELECT last_at, predicted_at, done_at, summary FROM studies WHERE state = 'sent'").fetchall()
    db.close()
    latency = [done - last for last, _, done, _ in rows]
    infer = [float(json.loads(s)["infer_seconds"]) for *_, s in rows]
    t0, t_sent, t_done = run["t0"], run["t_sent"], run["t_done"]
    return {
        "what": "xpr listen: C-STORE in from concurrent senders, SR + heatmap SEG out by C-STORE (storescp)",
        "command": "PYTHONPATH=. .venv/bin/python bench/listen_load.py " + shlex.join(sys.argv[1:]),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_average": os.getloadavg(),
            "python": platform.python_version(),
        },
        "bundle": "tiny preset, random weights (seed 0), --with-selection" if a.bundle is None else str(a.bundle),
        "studies": n_studies,
        "instances": 4 * n_studies,
        "senders": a.senders,
        "quiet_seconds": a.quiet,
        "errors": run["errors"],
        "results_received_by_destination": len([p for p in (work / "dest").iterdir() if p.is_file()]),
        "send_seconds": round(t_sent - t0, 2),
        "wall_seconds": round(t_done - t0, 2),
        "studies_per_minute": round(60 * len(rows) / (t_done - t0), 2),
        "latency_last_instance_to_results_stored_s": {
            "p50": _pct(latency, 50),
            "p99": _pct(latency, 99),
            "max": _pct(latency, 100),
        },
        "latency_minus_quiet_period_s": {
            "p50": _pct([x - a.quiet for x in latency], 50),
            "p99": _pct([x - a.quiet for x in latency], 99),
        },
        "inference_per_study_s": {"p50": _pct(infer, 50), "p99": _pct(infer, 99)},
        "note": "one study at a time in the node, through one StudyPipeline that keeps the model open across "
        "studies; measured on a 2-core machine shared with other agents' builds and tests (see load_average)",
    }


def main() -> None:
    a = _args()
    storescp = shutil.which("storescp")
    if storescp is None:
        raise SystemExit("error: DCMTK's storescp is needed as the destination (apt-get install dcmtk)")
    from xpr_deploy.data.synth import write_synthetic

    with tempfile.TemporaryDirectory(prefix="xpr-listen-bench-") as tmp:
        work = Path(tmp)
        bundle = a.bundle or _tiny_bundle(work)
        write_synthetic(work / "synth", 2 * a.studies, "vindr", size=(320, 160), seed=7)
        studies = [sorted(d.iterdir()) for d in sorted((work / "synth" / "images").iterdir())]
        run = _load(a, storescp, bundle, studies, work)
        res = _report(a, work, len(studies), run)
    write_json(a.out, res)
    print(
        f"{res['studies']} studies, {a.senders} senders: {res['studies_per_minute']} studies/min, latency p50 "
        f"{res['latency_last_instance_to_results_stored_s']['p50']} s, p99 "
        f"{res['latency_last_instance_to_results_stored_s']['p99']} s (quiet period {a.quiet} s) -> {a.out}"
    )


if __name__ == "__main__":
    main()
