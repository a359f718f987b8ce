"""The DICOM fuzz campaign: every mutation of `corpus.dicom_cases` through the reader, the
preprocessing and `data check`, in process and through the real CLI, with the promise of issue 15
asserted per case: success or a typed DicomError whose one line starts with the file's path,
nothing printed, `data check --strict --decode` passes only files that preprocess, the header
check misses only what pixels alone can tell, and the good inputs of the same run still answered.

Unmarked tests are the fast subset (one base file, two CLI runs); `pytest -m fuzz` adds more
seeds, MONOCHROME1/2, RLE and JPEG 2000 bases and Hypothesis byte-level header mutations.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from tests.fuzz.conftest import Tally, budget_left
from tests.fuzz.corpus import Case, dicom_cases, elements
from xpr_deploy.data import PreprocessSettings, check_dataset, preprocess_with_geometry
from xpr_deploy.data.dicom import verify_image
from xpr_deploy.data.errors import DecodeError, DicomError, EmptyBreastMask, TruncatedFile
from xpr_deploy.data.synth import write_synthetic

#: not the size `check --decode` uses, so "check passes => preprocesses" is not the same call twice
S = PreprocessSettings(img_size=(96, 48))
NATIVE = "Explicit VR Little Endian"
#: failures a header cannot predict: the pixel content (native), or the compressed stream itself
PIXEL_ONLY: dict[bool, tuple[type[DicomError], ...]] = {
    False: (EmptyBreastMask,),
    True: (EmptyBreastMask, DecodeError, TruncatedFile),
}


@dataclass
class Outcome:
    """What one case did in process; `problem` is None when it kept every promise."""

    case: Case
    path: Path
    header: str | None  # the header check's error message (None: passed)
    full: str | None  # the preprocessing's error message
    check: str | None  # `data check --decode`'s reject reason for this file
    problem: str | None


def _attempt(run) -> BaseException | None:  # type: ignore[no-untyped-def]
    try:
        run()
    except Exception as exc:  # the campaign wants to see every kind, typed or not
        return exc
    return None


@contextmanager
def printed() -> Iterator[list[str]]:
    """What was written to file descriptors 1 and 2 meanwhile (Python or C code alike)."""
    got: list[str] = []
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        try:
            yield got
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, old in zip((1, 2), saved, strict=True):
                os.dup2(old, fd)
                os.close(old)
            tmp.seek(0)
            got.append(tmp.read().decode("utf-8", "replace"))


def judge(case: Case, path: Path, compressed: bool) -> Outcome:
    """Run one case through the library entry points and say what, if anything, went wrong."""
    summary: dict = {}
    with printed() as noise:
        header = _attempt(lambda: verify_image(path))
        full = _attempt(lambda: preprocess_with_geometry(path, S))
        check = _attempt(lambda: summary.update(check_dataset(path, "folder", decode=True)))
    said = noise[0].strip()
    msgs = {k: None if e is None else str(e) for k, e in (("header", header), ("full", full))}
    reason = next((r["reason"] for r in summary.get("rejects", []) if r["path"] == str(path)), None)
    outcome = Outcome(case, path, msgs["header"], msgs["full"], reason, None)

    def problem() -> str | None:
        for what, exc in (("header", header), ("preprocess", full), ("check", check)):
            if exc is None:
                continue
            text = str(exc).splitlines()[0][:160] if str(exc) else ""
            if not isinstance(exc, DicomError) or what == "check":
                return f"{what}: {type(exc).__name__} escaped: {text}"
            if "\n" in str(exc) or not str(exc).startswith(f"{path}: "):
                return f"{what}: message is not one line starting with the path: {str(exc)[:160]!r}"
            if case.kind == "truncate" and int(case.name.split("@")[1]) >= 132 and not isinstance(exc, TruncatedFile):
                return f"{what}: a cut file is not called truncated: {type(exc).__name__}: {text}"
        if said:
            return f"printed: {said.splitlines()[0][:160]!r}"
        if header is not None and full is None:
            return f"the header check rejects a file that preprocesses: {msgs['header']}"
        if header is None and full is not None and not isinstance(full, PIXEL_ONLY[compressed]):
            return f"the header check passes a file preprocessing rejects: {type(full).__name__}: {msgs['full']}"
        if full is not None and reason is None:
            return f"check --decode passes a file preprocessing rejects: {msgs['full']}"
        if header is not None and reason != msgs["header"]:
            return f"check gives another reason than the reader: {reason!r} vs {msgs['header']!r}"
        if full is None and reason is not None and not ("laterality" in reason.lower() or "view" in reason.lower()):
            return f"check rejects a file that preprocesses: {reason}"
        return None

    outcome.problem = problem()
    return outcome


def run_cases(
    cases: list[Case], folder: Path, compressed: bool, campaign: str, tally: Tally, *, budgeted: bool = False
) -> list[Outcome]:
    folder.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for n, case in enumerate(cases):
        if budgeted and not budget_left(tally):
            break
        path = folder / f"case-{n:04d}-{case.digest}.dcm"
        path.write_bytes(case.data)
        o = judge(case, path, compressed)
        tally.record(campaign, case.name, o.problem)
        outcomes.append(o)
    return outcomes


def _failures(outcomes: list[Outcome]) -> str:
    bad = [f"{o.case.name}: {o.problem}" for o in outcomes if o.problem]
    return f"{len(bad)} of {len(outcomes)} cases broke a promise:\n" + "\n".join(bad[:30])


def _by_syntax(root: Path) -> dict[tuple[str, str], list[Path]]:
    out: dict[tuple[str, str], list[Path]] = {}
    for f in sorted(root.rglob("*.dicom")):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        out.setdefault((ds.file_meta.TransferSyntaxUID.name, str(ds.PhotometricInterpretation)), []).append(f)
    return out


# --------------------------------------------------------------------------- the fast subset


@pytest.fixture(scope="module")
def campaign(synth_vindr: Path, tmp_path_factory: pytest.TempPathFactory, fuzz_tally: Tally) -> list[Outcome]:
    """Every case of one native MONOCHROME2 file, in process (tallied as dicom/read)."""
    base = next(f for (ts, _), fs in _by_syntax(synth_vindr / "images").items() if ts == NATIVE for f in fs)
    folder = tmp_path_factory.mktemp("fuzz-dicom") / "data" / "cases"
    return run_cases(dicom_cases(base.read_bytes(), seed=0), folder, False, "dicom/read", fuzz_tally)


def test_every_case_in_process(campaign: list[Outcome]) -> None:
    assert len(campaign) > 300
    assert not any(o.problem for o in campaign), _failures(campaign)
    assert sum(o.full is None for o in campaign) > 50 and sum(o.full is not None for o in campaign) > 150


def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run(
        [sys.executable, "-m", "xpr_deploy.cli", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_check_cli_over_every_case_and_good_files(campaign: list[Outcome], tmp_path: Path, fuzz_tally: Tally) -> None:
    """One real `xpr data check --strict --decode` over all cases plus a good study: exit 1, no
    traceback, each case rejected exactly when (and why) the library rejects it, the good pairs kept."""
    outcomes = campaign
    root = campaign[0].path.parent.parent
    write_synthetic(tmp_path / "good", 2, "vindr", size=(320, 160), seed=7)
    shutil.copytree(tmp_path / "good" / "images", root / "good")
    res = _cli("data", "check", str(root), "--format", "folder", "--strict", "--decode", "--json")
    assert res.returncode == 1, res.stderr[-2000:]
    assert "Traceback" not in res.stdout + res.stderr, res.stderr[-2000:]
    summary = json.loads(res.stdout)
    rejects = {r["path"]: r["reason"] for r in summary["rejects"]}
    for o in outcomes:
        want = o.check
        got = rejects.get(str(o.path))
        problem = None if got == want else f"CLI reject {got!r}, library {want!r}"
        if got is not None and "\n" in got:
            problem = f"reason is not one line: {got!r}"
        fuzz_tally.record("dicom/check-cli", o.case.name, problem)
        assert problem is None, f"{o.case.name}: {problem}"
    assert summary["pairs"] == 2  # the good study's two breasts, next to ~300 damaged files


# --- predict: several good studies and damaged ones, through the real CLI ---------------------


def _damage(kind: str, data: bytes, compressed: bool) -> bytes:
    els = elements(data)
    if kind == "slope":
        return next(c.data for c in dicom_cases(data) if c.name == "value:RescaleSlope#0=b'ab'")
    if kind == "header-cut":
        return data[: els["PhotometricInterpretation"].start + 3]
    if kind == "pixel-cut":
        return data[: len(data) * 2 // 3]
    if compressed:  # a corrupt compressed stream
        return next(c.data for c in dicom_cases(data) if c.name == "stream:codestream-header")
    return next(c.data for c in dicom_cases(data) if c.name.startswith("insert:NumberOfFrames#8"))


def test_predict_cli_answers_good_studies_and_names_damaged_files(tmp_path: Path, fuzz_tally: Tally) -> None:
    import torch

    from xpr_deploy import build_model
    from xpr_deploy.config import get_config
    from xpr_deploy.train.checkpoint import save_checkpoint

    cfg = get_config("tiny")
    torch.manual_seed(0)
    ckpt = save_checkpoint(
        tmp_path / "ckpt",
        build_model(cfg).eval(),
        {"threshold": 0.5, "preprocess": PreprocessSettings.for_config(cfg).to_dict(), "label_rule": "birads-4-5"},
    )
    write_synthetic(tmp_path / "synth", 8, "vindr", size=(256, 128), seed=11)
    studies = tmp_path / "studies"
    shutil.copytree(tmp_path / "synth" / "images", studies)
    folders = sorted(p for p in studies.iterdir() if p.is_dir())
    assert len(folders) == 4
    # studies 0, 1 good; study 2: both views of L damaged (R answered); study 3: one file of each breast
    plan = [(folders[2], "L", "CC", "slope"), (folders[2], "L", "MLO", "pixel-cut"),
            (folders[3], "L", "CC", "header-cut"), (folders[3], "R", None, "stream")]  # fmt: skip
    damaged: dict[Path, tuple[str, str]] = {}  # file -> (damage, laterality it had)
    for folder, lat, view, kind in plan:
        heads = {f: pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(folder.glob("*.dicom"))}
        mine = [f for f, h in heads.items() if h.ImageLaterality == lat and view in (None, h.ViewPosition)]
        target = next((f for f in mine if heads[f].file_meta.TransferSyntaxUID.is_compressed), mine[0])
        compressed = heads[target].file_meta.TransferSyntaxUID.is_compressed
        target.write_bytes(_damage(kind, target.read_bytes(), compressed))
        damaged[target] = (kind, lat)
    heatmaps = tmp_path / "heatmaps"
    res = _cli("predict", str(ckpt), str(studies), "--backend", "eager", "--heatmaps", str(heatmaps), "--json")
    assert "Traceback" not in res.stdout + res.stderr, res.stderr[-3000:]
    assert res.returncode == 0, res.stderr[-3000:]
    rep = json.loads(res.stdout)
    answered = {(Path(b["cc"]).parent, b["laterality"]): b for b in rep["breasts"]}
    for path, (kind, _) in damaged.items():
        named = [r for r in rep["rejects"] if r["path"] == str(path) or str(path) in r["reason"]]
        problem = None if named else "not named in the rejects"
        if named and any("\n" in r["reason"] for r in named):
            problem = "reason is not one line"
        fuzz_tally.record("dicom/predict-cli", f"damaged:{kind}", problem)
        assert problem is None, f"{kind} {path}: {problem}"
    for folder in folders:
        hit = {lat for (f, lat) in answered if f == folder}
        want = {"L", "R"} - {lat for p, (_, lat) in damaged.items() if p.parent == folder}
        problem = None if hit == want else f"answered {sorted(hit)}, expected {sorted(want)}"
        fuzz_tally.record("dicom/predict-cli", f"study:{folder.name}", problem)
        assert problem is None, f"{folder.name}: {problem}"
    pngs = sorted(heatmaps.iterdir())
    assert pngs == sorted(Path(b["heatmap"]) for b in rep["breasts"]), (
        "heatmaps only for answered breasts, nothing else"
    )
    assert len(rep["breasts"]) == 8 - 3


# --------------------------------------------------------------------------- the long run (-m fuzz)


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, bool]]:
    """One file per (transfer syntax, photometric) that `synth` writes: native, RLE, JPEG 2000 x MONOCHROME1/2."""
    root = tmp_path_factory.mktemp("fuzz-bases")
    write_synthetic(root, 6, "vindr", size=(320, 160), seed=21)
    out = {}
    for (ts, pi), files in _by_syntax(root / "images").items():
        compressed = pydicom.dcmread(files[0], stop_before_pixels=True).file_meta.TransferSyntaxUID.is_compressed
        out[f"{ts}/{pi}"] = (files[0].read_bytes(), bool(compressed))
    assert len(out) >= 5, sorted(out)
    return out


@pytest.mark.fuzz
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_long_corpus_every_base(
    seed: int, bases: dict[str, tuple[bytes, bool]], tmp_path: Path, fuzz_tally: Tally, fuzz_seed: int
) -> None:
    outcomes: list[Outcome] = []
    for n, (name, (data, compressed)) in enumerate(sorted(bases.items())):
        cases = dicom_cases(data, seed=fuzz_seed * 1000 + seed * 100 + n, flips=48, truncations=32)
        outcomes += run_cases(cases, tmp_path / f"base{n}", compressed, f"dicom/long:{name}", fuzz_tally, budgeted=True)
    assert not any(o.problem for o in outcomes), _failures(outcomes)


def _edit(data: bytes, ops: list[tuple[str, int, object]]) -> bytes:
    out = bytearray(data)
    for op, at, arg in ops:
        at = min(at, len(out))
        if op == "set" and at < len(out):
            out[at] = int(arg)  # type: ignore[call-overload]
        elif op == "del":
            del out[at : at + int(arg)]  # type: ignore[call-overload]
        elif op == "ins":
            out[at:at] = bytes(arg)  # type: ignore[call-overload]
    return bytes(out)


@pytest.mark.fuzz
def test_hypothesis_header_bytes(bases: dict[str, tuple[bytes, bool]], tmp_path_factory: pytest.TempPathFactory,
                                 fuzz_tally: Tally, fuzz_seed: int) -> None:  # fmt: skip
    """Random byte edits (set, delete, insert) in the header region of a native file (derandomized
    unless XPR_FUZZ_SEED names a seed)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    data = next(d for k, (d, c) in sorted(bases.items()) if not c)
    end = elements(data)["PixelData"].start
    folder = tmp_path_factory.mktemp("fuzz-hypothesis")
    op = st.one_of(
        st.tuples(st.just("set"), st.integers(132, end - 1), st.integers(0, 255)),
        st.tuples(st.just("del"), st.integers(132, end - 1), st.integers(1, 16)),
        st.tuples(st.just("ins"), st.integers(132, end), st.binary(min_size=1, max_size=16)),
    )

    @hypothesis_seed(fuzz_seed)
    @settings(max_examples=400, deadline=None, database=None, derandomize=not fuzz_seed,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(st.lists(op, min_size=1, max_size=6))
    def one(ops: list[tuple[str, int, object]]) -> None:
        if not budget_left(fuzz_tally):
            return
        mutated = _edit(data, ops)
        case = Case(f"hypothesis:{ops!r}"[:200], "hypothesis", mutated)
        path = folder / f"hyp-{case.digest}.dcm"
        path.write_bytes(mutated)
        o = judge(case, path, False)
        fuzz_tally.record("dicom/hypothesis", case.name, o.problem)
        assert o.problem is None, f"{case.name}: {o.problem}"

    one()
