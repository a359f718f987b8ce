"""The hostile-input corpus (tests/fuzz/corpus.py) through `xpr_infer`, built with AddressSanitizer +
UBSan (ctest `fuzz_infer`, registered in sanitizer builds; `make cpp` runs it).

    python fuzz_infer.py XPR_INFER FIXTURES WORK [--jobs 2] [--timeout 60] [--stride 1]
                         [--seed S] [--budget SECONDS]

FIXTURES is make_fixture.py's folder (bundle/, dicom/). Cases:
  dicom:  every mutation of dicom_cases() of the good fixture files (explicit LE, RLE, JPEG 2000,
          signed), the damaged file as CC or MLO (alternating), a good file as the other view;
  manifest: every json_cases() mutation of the bundle's manifest.json re-sealed with the seal rule
          (xpr_deploy/bundle/seal.py), the same mutations of its seal field not re-sealed, and
          byte flips of the sealed bytes (re-sealed and not).
Every case must give exit 0 (with a result line) or 2 (the documented refusal) with one stderr line
`xpr_infer: <message naming the damaged file>` and a JSON error line on stdout; no sanitizer report
(halt_on_error, leaks on), no hang (per-case timeout). Prints `cpp/xpr_infer: N cases tried, M passed`
(also written to WORK/tally.txt) and exits 1 when any case failed.

Seed 0 (the default) is the fixed campaign in a fixed order. Another seed draws other byte flips and
runs the cases in its own order; with --budget, no case starts after that many seconds, so a run
under a budget covers a different part of the campaign each time (`make cpp` passes a new seed per
run, printed with the tally for a replay: `--seed S --budget B`, or `--seed S` for all its cases).
Both default from XPR_FUZZ_INFER_SEED and XPR_FUZZ_INFER_BUDGET (ctest passes the environment on).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.fuzz.corpus import byte_flips, dicom_cases, json_cases  # noqa: E402

#: the fixture files the DICOM cases mutate (all explicit VR little endian, as the corpus needs)
DICOM_SOURCES = ("good_m2.dcm", "good_j2k.dcm", "good_m1_rle.dcm", "good_signed_odd.dcm")
SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer", "runtime error:")
_SEAL = re.compile(rb'"manifest_sha256": "([0-9a-f]{64})"')
SAN_ENV = {
    "ASAN_OPTIONS": "halt_on_error=1:detect_leaks=1:abort_on_error=0:exitcode=86",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1:exitcode=87",
}


@dataclass(frozen=True)
class Job:
    campaign: str  # "dicom" / "manifest"
    name: str  # what was done (reproducible from the name)
    data: bytes  # the damaged file's bytes
    source: str  # the valid file it came from
    damaged_as: str = "cc"  # dicom: which view gets the damaged file


def reseal(raw: bytes) -> bytes:
    """raw with its one seal field set to the digest of its content (unchanged without exactly one)."""
    found = list(_SEAL.finditer(raw))
    if len(found) != 1:
        return raw
    zeros = raw[: found[0].start(1)] + b"0" * 64 + raw[found[0].end(1) :]
    return raw[: found[0].start(1)] + hashlib.sha256(zeros).hexdigest().encode() + raw[found[0].end(1) :]


def sealed(doc: object) -> bytes:
    """The manifest bytes as `xpr export` writes them (json.dumps(indent=2) + newline), sealed."""
    if isinstance(doc, dict):
        body = {k: v for k, v in doc.items() if k != "manifest_sha256"}
        body["manifest_sha256"] = "0" * 64
    else:
        body = doc
    return reseal((json.dumps(body, indent=2, ensure_ascii=False) + "\n").encode())


def manifest_jobs(bundle: Path, seed: int = 0) -> list[Job]:
    raw = (bundle / "manifest.json").read_bytes()
    doc = json.loads(raw)
    jobs = []
    for name, mutated in json_cases(doc):
        if name.startswith("json:manifest_sha256#"):  # the seal itself: written as mutated, not re-sealed
            data = (json.dumps(mutated, indent=2) + "\n").encode()
        else:
            data = sealed(mutated)
        jobs.append(Job("manifest", name, data, "manifest.json"))
    for case in byte_flips(raw, seed=1 + 1000 * seed, count=24):
        jobs.append(Job("manifest", f"bytes:{case.name}", case.data, "manifest.json"))
        jobs.append(Job("manifest", f"bytes:{case.name}+resealed", reseal(case.data), "manifest.json"))
    for cut in (0, 1, len(raw) // 2, len(raw) - 2):
        jobs.append(Job("manifest", f"bytes:truncate@{cut}", raw[:cut], "manifest.json"))
    return jobs


def dicom_jobs(dicom: Path, seed: int = 0) -> list[Job]:
    jobs = []
    for i, src in enumerate(DICOM_SOURCES):
        for j, case in enumerate(dicom_cases((dicom / src).read_bytes(), seed=i + 1000 * seed)):
            jobs.append(Job("dicom", f"{src}:{case.name}", case.data, src, "cc" if j % 2 == 0 else "mlo"))
    return jobs


#: a case the time budget left out
NOT_RUN = "not run: the time budget was spent"


class Runner:
    def __init__(self, xpr_infer: Path, fixtures: Path, work: Path, timeout: float, deadline: float) -> None:
        self.xpr_infer, self.fixtures, self.work, self.timeout = xpr_infer, fixtures, work, timeout
        self.deadline = deadline  # time.monotonic() after which no case starts (inf: none)
        self.env = {**os.environ, **SAN_ENV}
        self.local = threading.local()
        self.lock = threading.Lock()
        self.count = 0

    def _slot(self) -> Path:
        """A private folder per worker thread: its own bundle copy and case files."""
        if not hasattr(self.local, "dir"):
            with self.lock:
                self.count += 1
                d = self.work / f"w{self.count}"
            shutil.rmtree(d, ignore_errors=True)
            shutil.copytree(self.fixtures / "bundle", d / "bundle")
            self.local.dir = d
        return self.local.dir

    def run(self, job: Job) -> str | None:
        """None when the case behaved, NOT_RUN past the deadline, else what went wrong (one line)."""
        if time.monotonic() > self.deadline:
            return NOT_RUN
        d = self._slot()
        bundle = d / "bundle"
        good = self.fixtures / "dicom" / "good_m2.dcm"
        if job.campaign == "manifest":
            (bundle / "manifest.json").write_bytes(job.data)
            cc = mlo = good
            named = str(bundle)
        else:
            case = d / f"case_{job.source.split('.')[0]}.dcm"
            case.write_bytes(job.data)
            cc, mlo = (case, good) if job.damaged_as == "cc" else (good, case)
            named = str(case)
        cmd = [str(self.xpr_infer), str(bundle), str(cc), str(mlo), "--device", "cpu", "--threads", "1"]
        try:
            res = subprocess.run(
                cmd, capture_output=True, text=True, errors="replace", timeout=self.timeout, env=self.env
            )
        except subprocess.TimeoutExpired:
            return f"no answer within {self.timeout:g} s"
        finally:
            if job.campaign == "manifest":
                shutil.copyfile(self.fixtures / "bundle" / "manifest.json", bundle / "manifest.json")
        err = res.stderr
        if any(m in err for m in SANITIZER_MARKS):
            lines = [ln for ln in err.splitlines() if any(m in ln for m in SANITIZER_MARKS) or "#" in ln[:6]]
            return f"sanitizer report (exit {res.returncode}): {' | '.join(lines[:8])}"
        out_lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
        err_lines = [ln for ln in err.splitlines() if ln.strip()]
        if res.returncode == 0:
            if err_lines:
                return f"exit 0 but stderr: {err_lines[0][:200]}"
            try:
                result = json.loads(out_lines[-1])
            except (IndexError, ValueError):
                return f"exit 0 without a JSON result line: {res.stdout[-200:]!r}"
            return None if "prob" in result else f"exit 0, result without prob: {out_lines[-1][:200]}"
        if res.returncode != 2:
            return f"exit {res.returncode} (want 0 or 2): {err[-300:]!r}"
        if len(err_lines) != 1:
            return f"{len(err_lines)} stderr lines, want one: {err[-300:]!r}"
        if not err_lines[0].startswith("xpr_infer: ") or named not in err_lines[0]:
            return f"error line does not name {named}: {err_lines[0][:300]}"
        try:
            line = json.loads(out_lines[-1])
        except (IndexError, ValueError):
            return f"no JSON error line on stdout: {res.stdout[-200:]!r}"
        if named not in str(line.get("error", "")) or not line.get("status"):
            return f"JSON error line without the file or a status: {out_lines[-1][:300]}"
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("xpr_infer", type=Path)
    ap.add_argument("fixtures", type=Path)
    ap.add_argument("work", type=Path)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=60.0, help="per case, seconds")
    ap.add_argument("--stride", type=int, default=1, help="run every N-th case only (quick local runs)")
    ap.add_argument("--only", default="", help="run only cases whose name contains this")
    env = os.environ.get
    ap.add_argument("--seed", type=int, default=int(env("XPR_FUZZ_INFER_SEED") or 0), help="0: the fixed campaign")
    ap.add_argument("--budget", type=float, default=float(env("XPR_FUZZ_INFER_BUDGET") or 0), help="seconds; 0: none")
    args = ap.parse_args(argv)

    args.work.mkdir(parents=True, exist_ok=True)
    jobs = dicom_jobs(args.fixtures / "dicom", args.seed) + manifest_jobs(args.fixtures / "bundle", args.seed)
    jobs = [j for j in jobs[:: args.stride] if args.only in j.name]
    if args.seed:
        random.Random(args.seed).shuffle(jobs)
    t0 = time.monotonic()
    deadline = t0 + args.budget if args.budget > 0 else float("inf")
    runner = Runner(args.xpr_infer.resolve(), args.fixtures.resolve(), args.work.resolve(), args.timeout, deadline)
    problems: list[str | None] = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for problem in pool.map(runner.run, jobs):
            problems.append(problem)
            if len(problems) % 200 == 0 and problem != NOT_RUN:
                bad = sum(p not in (None, NOT_RUN) for p in problems)
                print(f"  {len(problems)}/{len(jobs)} cases, {bad} failed, {time.monotonic() - t0:.0f} s", flush=True)
    elapsed = time.monotonic() - t0

    tried, passed, failures = Counter(), Counter(), []
    for job, problem in zip(jobs, problems, strict=True):
        if problem == NOT_RUN:
            continue
        tried[job.campaign] += 1
        if problem is None:
            passed[job.campaign] += 1
        else:
            failures.append(
                f"{job.campaign}: {job.name} ({job.damaged_as if job.campaign == 'dicom' else 'bundle'}): {problem}"
            )
            if job.campaign == "dicom":  # keep the failing file for a rerun by hand
                keep = args.work / "failed"
                keep.mkdir(exist_ok=True)
                (keep / f"{len(failures):03d}-{job.source}").write_bytes(job.data)
    lines = [f"cpp/xpr_infer/{c}: {tried[c]} cases tried, {passed[c]} passed" for c in sorted(tried)]
    total, ok = sum(tried.values()), sum(passed.values())
    lines.append(f"cpp/xpr_infer: {total} cases tried, {ok} passed ({elapsed:.0f} s, {args.jobs} jobs, ASan+UBSan)")
    replay = f"--seed {args.seed}" + (f" --budget {args.budget:g}" if args.budget > 0 else "")
    left = len(jobs) - total
    spent = f"; the {args.budget:g} s budget left {left} of {len(jobs)} cases out" if left else ""
    lines.append(f"seed {args.seed} (replay: fuzz_infer.py XPR_INFER FIXTURES WORK {replay}){spent}")
    lines += [f"  FAILED {f}" for f in failures[:60]]
    text = "\n".join(lines)
    print(text)
    (args.work / "tally.txt").write_text(text + "\n")
    return 0 if ok == total and total > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
