"""The bundle / checkpoint / CLI-usage fuzz campaign (issue 15): tampered bundles and checkpoints,
and malformed command lines, each either accepted (and then it really works) or refused with the
documented error type / exit code and one line naming the damaged file; never another exception,
never a traceback. Every case is tallied (campaigns bundle/open, bundle/cli, checkpoint/load,
checkpoint/cli, cli/usage).

Fast subset (unmarked): in-process through the library (`BundleView.open`, `read_meta` /
`load_checkpoint`, `make_runner`, `cli.main`) plus a few real `xpr` subprocesses. Long run
(`pytest -m fuzz`): every mutation through the CLI, and Hypothesis' random JSON edits.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from tests.fuzz.corpus import byte_flips, json_cases

if TYPE_CHECKING:
    from tests.fuzz.conftest import Tally

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("XPR_TEST_CACHE", REPO / ".cache" / "xpr-tests"))
#: the code the cached bundle is made by: any change there builds it again
_MADE_BY = ("xpr_deploy/export", "xpr_deploy/bundle", "xpr_deploy/model", "xpr_deploy/validate", "xpr_deploy/train")
#: a smoke run of the long campaign: at most this many cases per test (0: all)
LIMIT = int(os.environ.get("XPR_FUZZ_LIMIT", "0"))


# ---- the valid inputs every case starts from ----------------------------------------------------
def _code_key() -> str:
    import onnx
    import torch

    h = hashlib.sha256(f"{torch.__version__} {onnx.__version__}".encode())
    files = [REPO / "xpr_deploy" / "config.py", REPO / "xpr_deploy" / "data" / "preproc.py"]
    files += sorted(p for d in _MADE_BY for p in (REPO / d).rglob("*.py"))
    for p in files:
        h.update(p.relative_to(REPO).as_posix().encode() + p.read_bytes())
    return h.hexdigest()[:16]


def _build(dest: Path) -> None:
    """A random-weight tiny checkpoint with operating points, and its FP32 bundle (selection outputs)."""
    import torch

    from xpr_deploy.config import get_config
    from xpr_deploy.data.preproc import PreprocessSettings
    from xpr_deploy.export.bundle import ExportOptions, load_source
    from xpr_deploy.model.xpruning import build_model
    from xpr_deploy.train.checkpoint import save_checkpoint
    from xpr_deploy.validate import export_and_validate

    cfg = get_config("tiny")
    torch.manual_seed(0)
    point = {"threshold": 0.4, "sensitivity": 0.9, "specificity": 0.8, "n": 10}
    meta = {
        "label_rule": "synthetic:lesion", "preprocess": PreprocessSettings.for_config(cfg).to_dict(),
        "threshold": 0.4, "threshold_method": "youden-validation", "operating_points": {"youden": point},
        "operating_point": "youden", "class_names": ["benign", "malignant"], "epoch": 2, "split": {"fold": 0},
        "train_config": {"data": "d", "out": "o", "epochs": 3, "prune_rates": None},
    }  # fmt: skip
    save_checkpoint(dest / "ckpt", build_model(cfg), meta)
    model, meta = load_source(dest / "ckpt")
    res = export_and_validate(
        model, meta, dest / "bundle", ExportOptions(with_selection=True, engine=False, parity_samples=1)
    )
    assert res.ok


@pytest.fixture(scope="module")
def world() -> Path:
    """Cached by the code that makes it (an export takes minutes on a busy CI core). Do not modify."""
    dest = CACHE / f"fuzz-bundle-{_code_key()}"
    if not (dest / "done").is_file():
        tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        _build(tmp)
        (tmp / "done").write_text("ok\n")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        # the manifest names its source checkpoint where it was made: point it at the final place
        _reseal_source(dest)
    return dest


def _reseal_source(dest: Path) -> None:
    from xpr_deploy.bundle import write_sealed

    m = json.loads((dest / "bundle" / "manifest.json").read_text())
    m["source_checkpoint"]["path"] = str(dest / "ckpt")
    write_sealed(dest / "bundle", m)


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from xpr_deploy.data.synth import write_synthetic

    root = tmp_path_factory.mktemp("studies") / "s"
    write_synthetic(root, 1, "vindr", size=(448, 224), seed=3)
    return root


@pytest.fixture()
def bundle(world: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "b"
    shutil.copytree(world / "bundle", dst)
    return dst


@pytest.fixture()
def ckpt(world: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ck"
    shutil.copytree(world / "ckpt", dst)
    return dst


# ---- judging one case ------------------------------------------------------------------------------
def judge(fn: Callable[[], object], refused: type[BaseException], names: tuple[str, ...]) -> tuple[str, str | None]:
    """("accepted" | "refused" | "crashed", problem or None): a refusal is one line naming one of `names`."""
    try:
        fn()
    except refused as exc:
        msg = str(exc)
        if "\n" in msg:
            return "refused", f"message of several lines: {msg[:300]!r}"
        if not any(n in msg for n in names):
            return "refused", f"message names none of {names}: {msg[:300]}"
        return "refused", None
    except Exception as exc:  # the campaign's finding: anything else escaped
        return "crashed", f"{type(exc).__name__}: {str(exc)[:300]}"
    return "accepted", None


def record(tally: Tally, campaign: str, case: str, problem: str | None) -> None:
    tally.record(campaign, case, problem)


def limited(cases: list[Any]) -> list[Any]:
    return cases[:LIMIT] if LIMIT else cases


# ---- bundle: what "accepted" must mean -------------------------------------------------------------
def bundle_works(b: Path) -> None:
    """An accepted bundle answers every question and runs: one CC/MLO pair through ONNX Runtime."""
    from xpr_deploy.bundle import BundleView
    from xpr_deploy.runners import make_runner
    from xpr_deploy.runners.factory import open_source
    from xpr_deploy.validate import synthetic_inputs

    view = BundleView.open(b)
    view.describe(), view.operating_point(), view.selection_outputs(), view.preprocess_settings()
    src = open_source(b)
    cc, mlo, _ = synthetic_inputs(tuple(src.cfg.img_size), 1, seed=0)  # type: ignore[arg-type]
    with make_runner(src, "onnx") as r:
        out = r.infer({src.io.cc: cc, src.io.mlo: mlo})  # type: ignore[attr-defined]
    prob = np.asarray(out[src.io.prob], dtype=np.float64)
    assert np.isfinite(prob).all() and ((prob >= 0) & (prob <= 1)).all(), prob


@functools.cache
def _session(sha256: str, graph: str) -> Any:
    """One ONNX Runtime session per graph content: manifest edits do not change the graph."""
    from xpr_deploy.runners.onnxrt import OrtSettings, create_session

    return create_session(Path(graph), OrtSettings(threads=1), graph)


def bundle_runs(b: Path) -> None:
    """`bundle_works` at the cost of one inference: the runner's own graph check (`check_graph_io`)
    on a session made once, then the manifest's I/O names and sizes fed to it."""
    from xpr_deploy.bundle import BundleView
    from xpr_deploy.runners.factory import open_source
    from xpr_deploy.runners.onnxrt import check_graph_io
    from xpr_deploy.validate import synthetic_inputs

    view = BundleView.open(b)
    view.describe(), view.operating_point(), view.selection_outputs(), view.preprocess_settings()
    src = open_source(b)
    graph = view.graph()
    sess = _session(view.manifest["files"][graph.relative_to(b).as_posix()], str(graph))
    check_graph_io(sess, view.inputs, view.outputs, where=graph)
    cc, mlo, _ = synthetic_inputs(tuple(src.cfg.img_size), 1, seed=0)  # type: ignore[arg-type]
    (prob,) = sess.run([src.io.prob], {src.io.cc: cc, src.io.mlo: mlo})
    prob = np.asarray(prob, dtype=np.float64)
    assert np.isfinite(prob).all() and ((prob >= 0) & (prob <= 1)).all(), prob


def bundle_answers(b: Path) -> None:
    """An accepted bundle whose edit cannot change inference still answers every question."""
    from xpr_deploy.bundle import BundleView

    view = BundleView.open(b)
    view.describe(), view.operating_point(), view.selection_outputs(), view.preprocess_settings()
    view.model_config(), view.graph(), [e.flavour for e in view.engines]


#: manifest keys whose edit can change what a runner does: accepted edits there run the model
_RUNS = ("model", "graphs", "batch", "max_batch", "inputs", "outputs", "io", "model_config", "preprocessing", "blocks")
#: keys of pure record (lint, timings): the fast subset keeps one case of each mutation kind there
_RECORD = ("lint", "timings", "fp32_islands")


def _top(case: str) -> str:
    return case.split(":", 1)[1].split("/", 1)[0].split("#", 1)[0]


def manifest_cases(doc: dict[str, Any], fast: bool) -> list[tuple[str, Any]]:
    cases, seen = [], set()
    for name, m in json_cases(doc):
        if m == doc:  # the "mutation" is the value itself ([] for an empty list): nothing to test
            continue
        if fast:
            key = (_top(name), name.rsplit("#", 1)[1]) if _top(name) in _RECORD else None
            blocks_beyond_first = name.startswith("json:blocks/") and not name.startswith("json:blocks/0")
            if blocks_beyond_first or (key is not None and key in seen):
                continue
            seen.add(key)
        cases.append((name, m))
    return cases


def _write_manifest(b: Path, m: Any, sealed: bool, raw: bytes) -> None:
    from xpr_deploy.bundle import seal

    if sealed:
        (b / "manifest.json").write_bytes(seal(m))
    else:  # an edit by hand: the old seal stays
        (b / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")


def run_manifest_case(b: Path, m: Any, sealed: bool, raw: bytes, name: str) -> str | None:
    from xpr_deploy.bundle import BundleError

    _write_manifest(b, m, sealed, raw)
    check = bundle_runs if sealed and _top(name) in _RUNS else bundle_answers
    outcome, problem = judge(lambda: check(b), BundleError, (str(b),))
    if outcome == "accepted" and not sealed:
        problem = "an edit under the old seal was accepted"
    return problem


@pytest.mark.parametrize("sealed", [False, True], ids=["unsealed", "resealed"])
def test_manifest_mutations(bundle: Path, fuzz_tally: Tally, sealed: bool) -> None:
    """Unsealed, the seal refuses every edit; re-sealed, the schema and consistency checks decide."""
    raw = (bundle / "manifest.json").read_bytes()
    doc = json.loads(raw)
    problems = []
    for name, m in manifest_cases(doc, fast=True):
        problem = run_manifest_case(bundle, m, sealed, raw, name)
        record(fuzz_tally, "bundle/open", f"{'sealed' if sealed else 'unsealed'} {name}", problem)
        if problem:
            problems.append(f"{name}: {problem}")
    assert not problems, "\n".join(problems[:20])


def test_byte_flips_in_every_file(bundle: Path, fuzz_tally: Tally) -> None:
    from xpr_deploy.bundle import BundleError

    problems = []
    for f in sorted(p for p in bundle.rglob("*") if p.is_file()):
        data = f.read_bytes()
        for case in byte_flips(data, seed=len(f.name), count=6 if f.stat().st_size > 1 << 20 else 10):
            f.write_bytes(case.data)
            outcome, problem = judge(lambda: bundle_answers(bundle), BundleError, (f.name,))
            if outcome == "accepted":
                problem = "a flipped byte was accepted"
            record(fuzz_tally, "bundle/open", f"{f.name} {case.name}", problem)
            if problem:
                problems.append(f"{f.name} {case.name}: {problem}")
        f.write_bytes(data)
    assert not problems, "\n".join(problems)


# ---- bundle: paths, links, files, the raw manifest -------------------------------------------------
def _edit(b: Path, change: Callable[[dict[str, Any]], object], named: str = "manifest.json") -> str:
    from xpr_deploy.bundle import write_sealed

    m = json.loads((b / "manifest.json").read_text())
    change(m)
    write_sealed(b, m)
    return named


def _set_size(m: dict[str, Any], rows: int, cols: int) -> None:
    m["model_config"]["img_size"] = m["preprocessing"]["img_size"] = [rows, cols]
    for t in m["inputs"]:
        t["shape"] = [1, 1, rows, cols]


def _raw(text: bytes) -> Callable[[Path], str]:
    def tamper(b: Path) -> str:
        (b / "manifest.json").write_bytes(text)
        return "manifest.json"

    return tamper


def _symlink_graph_out(b: Path) -> str:
    shutil.copyfile(b / "model.onnx", b.parent / "outside.onnx")
    (b / "model.onnx").unlink()
    os.symlink(b.parent / "outside.onnx", b / "model.onnx")
    return "model.onnx"


def _symlink_dir(b: Path) -> str:
    (b.parent / "elsewhere").mkdir()
    os.symlink(b.parent / "elsewhere", b / "engines")
    return "engines"


def _manifest_symlink(b: Path) -> str:
    shutil.move(b / "manifest.json", b.parent / "m.json")
    os.symlink(b.parent / "m.json", b / "manifest.json")
    return "manifest.json"


def _fifo(b: Path) -> str:
    os.mkfifo(b / "pipe")
    return "pipe"


def _replace_dir(name: str) -> Callable[[Path], str]:
    def tamper(b: Path) -> str:
        (b / name).unlink()
        (b / name).mkdir()
        return name

    return tamper


#: name -> tamper(bundle) returning the file the refusal must name
PATH_CASES: dict[str, Callable[[Path], str]] = {
    "model ../": lambda b: _edit(b, lambda m: m.update(model="../model.onnx")),
    "graph absolute": lambda b: _edit(b, lambda m: m["graphs"].update(fp32=str(b / "model.onnx"))),
    "files key ../": lambda b: _edit(b, lambda m: m["files"].update({"../x": "0" * 64})),
    "files key absolute": lambda b: _edit(b, lambda m: m["files"].update({"/etc/passwd": "0" * 64})),
    "parity backslash": lambda b: _edit(b, lambda m: m.update(parity="..\\parity.json")),
    "graph symlinked out": _symlink_graph_out,
    "folder symlinked out": _symlink_dir,
    "manifest a symlink": _manifest_symlink,
    "fifo inside": _fifo,
    "extra file": lambda b: ((b / "notes.txt").write_text("later\n"), "notes.txt")[1],
    "extra file in a subfolder": lambda b: ((b / "sub").mkdir(), (b / "sub" / "x.onnx").write_bytes(b"x"), "x.onnx")[2],
    "missing graph": lambda b: ((b / "model.onnx").unlink(), "model.onnx")[1],
    "missing parity": lambda b: ((b / "parity.json").unlink(), "parity.json")[1],
    "missing manifest": lambda b: ((b / "manifest.json").unlink(), "manifest.json")[1],
    "graph is a folder": _replace_dir("model.onnx"),
    "manifest is a folder": _replace_dir("manifest.json"),
    "manifest empty": _raw(b""),
    "manifest not utf-8": _raw(b"\xff\xfe{}"),
    "manifest a list": _raw(b"[1, 2]"),
    "manifest deeply nested": _raw(b"[" * 100_000 + b"]" * 100_000),
    "manifest NaN threshold (resealed)": lambda b: _edit(b, lambda m: m.update(threshold=float("nan"))),
    "manifest 3.0 as batch (resealed)": lambda b: _edit(b, lambda m: m.update(batch=1.0)),
    "manifest embed_dim 'high' (resealed)": lambda b: (
        _edit(b, lambda m: m["model_config"].update(embed_dim="high")), "manifest.json")[1],
    "in_chans 3 (resealed)": lambda b: _edit(b, lambda m: m["model_config"].update(in_chans=3)),
    "two channels in (resealed)": lambda b: (
        _edit(b, lambda m: [t.update(shape=[1, 2, *t["shape"][2:]]) for t in m["inputs"]]), "manifest.json")[1],
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(PATH_CASES))
def test_paths_links_and_files(bundle: Path, fuzz_tally: Tally, case: str) -> None:
    from xpr_deploy.bundle import BundleError

    named = PATH_CASES[case](bundle)
    outcome, problem = judge(lambda: bundle_answers(bundle), BundleError, (named,))
    if outcome == "accepted":
        problem = "accepted"
    record(fuzz_tally, "bundle/open", case, problem)
    assert problem is None, problem


def test_image_size_disagreeing_with_the_graph_is_refused_before_inference(bundle: Path, fuzz_tally: Tally) -> None:
    """The issue's example: a manifest consistent with itself, re-sealed, but not with model.onnx:
    refused as a bundle (exit 3) when the session is made, naming the graph, before anything runs."""
    from xpr_deploy.bundle import BundleError, BundleView
    from xpr_deploy.runners import make_runner

    _edit(bundle, lambda m: _set_size(m, 672, 224))
    BundleView.open(bundle)  # the manifest itself is consistent: the reader lets it through
    outcome, problem = judge(lambda: make_runner(bundle, "onnx").activate(), BundleError, ("model.onnx",))
    if outcome == "accepted":
        problem = "accepted"
    record(fuzz_tally, "bundle/open", "image size 672x224 resealed", problem)
    assert problem is None, problem
    with pytest.raises(BundleError) as ei:
        make_runner(bundle, "onnx").activate()
    assert ei.value.exit_code == 3
    assert "model.onnx: input 'cc' is [1, 1, 448, 224] in the graph, [1, 1, 672, 224] in the manifest" in str(ei.value)


# ---- checkpoints ------------------------------------------------------------------------------------
def ckpt_works(ck: Path) -> None:
    """An accepted checkpoint loads and scores a pair."""
    import torch

    from xpr_deploy.train.checkpoint import load_checkpoint
    from xpr_deploy.validate import synthetic_inputs

    model, _ = load_checkpoint(ck)
    cc, mlo, _ = synthetic_inputs(tuple(model.cfg.img_size), 1, seed=0)
    with torch.no_grad():
        logits = model(torch.from_numpy(cc), torch.from_numpy(mlo))
    assert torch.isfinite(logits).all()


def ckpt_answers(ck: Path) -> None:
    from xpr_deploy.runners.factory import open_source
    from xpr_deploy.train.checkpoint import model_config_of, read_meta

    model_config_of(read_meta(ck))
    src = open_source(ck)
    src.operating_point()


def test_meta_mutations(ckpt: Path, fuzz_tally: Tally) -> None:
    """Every field of meta.json of the wrong type, extreme, removed: a one-line WeightsError naming
    meta.json, or accepted; accepted model_config edits must still load and run."""
    from xpr_deploy.errors import WeightsError
    from xpr_deploy.runners.factory import PredictError

    raw = (ckpt / "meta.json").read_text()
    doc = json.loads(raw)
    problems, loaded = [], set()
    for name, m in json_cases(doc):
        if m == doc:
            continue
        (ckpt / "meta.json").write_text(json.dumps(m, indent=2))
        outcome, problem = judge(functools.partial(ckpt_answers, ckpt), (WeightsError, PredictError), ("meta.json",))
        leaf = name.rsplit("#", 1)[0]
        if outcome == "accepted" and _top(name) == "model_config" and leaf not in loaded:  # one load per field
            loaded.add(leaf)
            _, problem = judge(functools.partial(ckpt_works, ckpt), (WeightsError, PredictError), ("meta.json",))
        record(fuzz_tally, "checkpoint/load", name, problem)
        if problem:
            problems.append(f"{name}: {problem}")
    (ckpt / "meta.json").write_text(raw)
    assert not problems, "\n".join(problems[:20])


def _rehash(ck: Path) -> None:
    """meta.json's weights hash made to agree with the (damaged) weights: the parser must refuse."""
    meta = json.loads((ck / "meta.json").read_text())
    meta["weights_sha256"] = hashlib.sha256((ck / "model.safetensors").read_bytes()).hexdigest()
    (ck / "meta.json").write_text(json.dumps(meta, indent=2))


def weight_cases(data: bytes) -> Iterator[tuple[str, bytes, bool]]:
    """(name, weights bytes, hash made to agree): flips in the header and the tensors, truncations."""
    header = 8 + int.from_bytes(data[:8], "little")
    for case in byte_flips(data[:header], seed=1, count=6):
        yield f"header {case.name}", case.data + data[header:], False
        yield f"header {case.name} rehashed", case.data + data[header:], True
    for case in byte_flips(data, seed=2, count=2):
        yield f"{case.name} rehashed", case.data, True
    for cut in (0, 4, 8, header // 2, header, header + 1, len(data) // 2, len(data) - 1):
        yield f"truncated@{cut}", data[:cut], False
        yield f"truncated@{cut} rehashed", data[:cut], True
    yield "8-byte header length of 2**63", (2**63).to_bytes(8, "little") + data[8:], True
    yield "empty", b"", True


def test_weights_damaged(ckpt: Path, fuzz_tally: Tally) -> None:
    from xpr_deploy.errors import WeightsError

    wpath, mpath = ckpt / "model.safetensors", ckpt / "meta.json"
    data, meta = wpath.read_bytes(), mpath.read_text()
    problems = []
    for name, blob, rehash in weight_cases(data):
        wpath.write_bytes(blob)
        mpath.write_text(meta)
        if rehash:
            _rehash(ckpt)
        outcome, problem = judge(lambda: ckpt_works(ckpt), WeightsError, ("model.safetensors",))
        if outcome == "accepted" and not rehash:
            problem = "damaged weights under the old hash were accepted"
        record(fuzz_tally, "checkpoint/load", f"weights {name}", problem)
        if problem:
            problems.append(f"{name}: {problem}")
    assert not problems, "\n".join(problems)


def _paper_meta(ck: Path) -> str:
    from xpr_deploy.config import get_config

    meta = json.loads((ck / "meta.json").read_text())
    meta["model_config"] = get_config("paper").to_dict()
    meta["preprocess"]["img_size"] = list(get_config("paper").img_size)
    (ck / "meta.json").write_text(json.dumps(meta))
    return "model.safetensors"


CKPT_FILE_CASES: dict[str, Callable[[Path], str]] = {
    "weights missing": lambda c: ((c / "model.safetensors").unlink(), "model.safetensors")[1],
    "meta missing": lambda c: ((c / "meta.json").unlink(), str(c))[1],
    "weights a folder": _replace_dir("model.safetensors"),
    "meta a folder": _replace_dir("meta.json"),
    "meta deeply nested": lambda c: ((c / "meta.json").write_text("[" * 100_000), "meta.json")[1],
    "meta not utf-8": lambda c: ((c / "meta.json").write_bytes(b"\xff\xfe"), "meta.json")[1],
    "weights of another config (paper meta)": _paper_meta,
}


@pytest.mark.parametrize("case", sorted(CKPT_FILE_CASES))
def test_checkpoint_files(ckpt: Path, fuzz_tally: Tally, case: str) -> None:
    from xpr_deploy.errors import WeightsError
    from xpr_deploy.runners.factory import PredictError

    named = CKPT_FILE_CASES[case](ckpt)
    outcome, problem = judge(lambda: ckpt_works(ckpt), (WeightsError, PredictError), (named,))
    if outcome == "accepted":
        problem = "accepted"
    record(fuzz_tally, "checkpoint/load", case, problem)
    assert problem is None, problem


# ---- real CLI subprocesses ------------------------------------------------------------------------------
def xpr(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xpr_deploy.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def cli_problem(res: subprocess.CompletedProcess[str], code: int, named: str) -> str | None:
    """Exit `code` with one stderr line naming `named` (0: success), never a traceback."""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    if "Traceback" in res.stderr:
        return f"traceback: {res.stderr[-600:]}"
    if res.returncode != code:
        return f"exit {res.returncode}, not {code}: {res.stderr[-400:]}"
    if code and (len(lines) != 1 or named not in lines[0]):
        return f"not one line naming {named}: {lines[:3]}"
    return None


CLI_CASES: dict[str, tuple[str, Callable[[Path], str], int]] = {
    # name: (command, tamper -> named file, exit code)
    "verify: flipped graph": ("verify", lambda b: (byte_flip(b / "model.onnx"), "model.onnx")[1], 3),
    "predict: image size disagrees with the graph": (
        "predict", lambda b: (_edit(b, lambda m: _set_size(m, 672, 224)), "model.onnx")[1], 3),
    "predict: truncated weights": ("predict-ckpt", lambda c: _truncate(c / "model.safetensors"), 2),
}  # fmt: skip


def byte_flip(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 3] ^= 0xFF
    p.write_bytes(bytes(data))


def _truncate(p: Path) -> str:
    p.write_bytes(p.read_bytes()[:5000])
    return p.name


def _cli_args(command: str, target: Path, studies: Path, out: Path) -> list[str]:
    if command == "verify":
        return ["verify", str(target)]
    args = ["predict", str(target), str(studies), "--json"]
    return [*args, "--backend", "onnx"] if command == "predict" else args


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_on_damaged_models(
    bundle: Path, ckpt: Path, studies: Path, tmp_path: Path, fuzz_tally: Tally, case: str
) -> None:
    command, tamper, code = CLI_CASES[case]
    target = ckpt if command == "predict-ckpt" else bundle
    named = tamper(target)
    res = xpr(*_cli_args(command, target, studies, tmp_path / "out"), cwd=tmp_path)
    problem = cli_problem(res, code, named)
    if problem is None and res.stdout.strip():
        problem = f"printed results for a refused model: {res.stdout[:200]}"
    record(fuzz_tally, "bundle/cli" if target == bundle else "checkpoint/cli", case, problem)
    assert problem is None, problem


def test_cli_accepts_the_intact_bundle(bundle: Path, studies: Path, tmp_path: Path, fuzz_tally: Tally) -> None:
    """The control: the same commands on the undamaged bundle succeed."""
    res = xpr("predict", str(bundle), str(studies), "--backend", "onnx", "--json", cwd=tmp_path)
    problem = cli_problem(res, 0, "")
    record(fuzz_tally, "bundle/cli", "intact bundle predicts", problem)
    assert problem is None, problem
    assert json.loads(res.stdout)


# ---- CLI usage errors, generated from the command tree --------------------------------------------------
def _commands() -> Iterator[tuple[list[str], Any]]:
    import typer

    from xpr_deploy.cli import app

    def walk(cmd: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
        if hasattr(cmd, "commands"):
            for n, c in sorted(cmd.commands.items()):
                yield from walk(c, [*path, n])
        else:
            yield path, cmd

    yield from walk(typer.main.get_command(app), [])


def usage_cases(fast: bool = False) -> list[tuple[str, list[str], str]]:
    """(name, argv, the words the Error: line has) for every command: no argument at all (when one is
    required), an unknown option, every option that takes a value given none, numbers given words,
    choices given a wrong one. `fast`: per command, the first option of each kind only."""
    from typing import get_args

    cases = [("unknown command", ["no-such-command"], "No such command")]
    for path, cmd in _commands():
        kinds: set[str] = set()
        label = " ".join(path)
        required = [p for p in cmd.params if p.param_type_name == "argument" and p.required]
        if required:
            cases.append((f"{label}: no argument", path, "Missing argument"))
        cases.append((f"{label}: unknown option", [*path, "--no-such-option"], "No such option"))
        for p in cmd.params:
            if p.param_type_name != "option" or p.is_flag:
                continue
            opt, ann = p.opts[0], p.type_descriptor.annotation
            mine = [(f"{label} {opt}: no value", [*path, opt], "requires an argument", "value")]
            if ann in (int, float):
                mine.append((f"{label} {opt} abc", [*path, opt, "abc"], "Invalid value", ann.__name__))
            if get_args(ann) and all(isinstance(a, str) for a in get_args(ann)):
                mine.append((f"{label} {opt} bad choice", [*path, opt, "no-such-choice"], "", "choice"))
            for name, argv, says, kind in mine:
                if not (fast and kind in kinds):
                    cases.append((name, argv, says))
                    kinds.add(kind)
    return cases


def usage_problem(code: int | None, err: str, says: str) -> str | None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if "Traceback" in err:
        return f"traceback: {err[-400:]}"
    if code != 2:
        return f"exit {code}, not 2: {err[-300:]}"
    if len(lines) != 3 or not lines[0].startswith("Usage: ") or not lines[1].startswith("Try '"):
        return f"not usage + hint + error: {lines[:4]}"
    if not lines[2].startswith("Error: ") or says not in lines[2]:
        return f"error line {lines[2]!r} does not say {says!r}"
    return None


def test_usage_errors_in_process(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fuzz_tally: Tally
) -> None:
    """`cli.main` as the entry point runs it (argv, SystemExit), for every generated usage error."""
    from xpr_deploy.cli import main

    monkeypatch.chdir(tmp_path)
    problems = []
    for name, argv, says in usage_cases(fast=True):
        monkeypatch.setattr(sys, "argv", ["xpr", *argv])
        with pytest.raises(SystemExit) as ei:
            main()
        err = capsys.readouterr().err
        problem = usage_problem(ei.value.code if isinstance(ei.value.code, int) else None, err, says)
        record(fuzz_tally, "cli/usage", name, problem)
        if problem:
            problems.append(f"{name}: {problem}")
    assert not problems, "\n".join(problems[:20])
    assert list(tmp_path.iterdir()) == []  # no command ran


# ---- the long run: every mutation through the CLI, Hypothesis for random edits ----------------------------
@pytest.mark.fuzz
def test_long_every_manifest_mutation_through_verify(bundle: Path, tmp_path: Path, fuzz_tally: Tally) -> None:
    raw = (bundle / "manifest.json").read_bytes()
    doc = json.loads(raw)
    problems = []
    for sealed in (False, True):
        for name, m in limited(manifest_cases(doc, fast=False)):
            _write_manifest(bundle, m, sealed, raw)
            from xpr_deploy.bundle import BundleError, BundleView

            outcome, _ = judge(lambda: BundleView.open(bundle), BundleError, (str(bundle),))
            res = xpr("verify", str(bundle), cwd=tmp_path)
            problem = cli_problem(res, 0 if outcome == "accepted" else 3, str(bundle))
            if outcome == "accepted" and not sealed:
                problem = "an edit under the old seal was accepted"
            record(fuzz_tally, "bundle/cli", f"verify {'sealed' if sealed else 'unsealed'} {name}", problem)
            if problem:
                problems.append(f"{name}: {problem}")
    assert not problems, "\n".join(problems[:20])


@pytest.mark.fuzz
def test_long_every_accepted_resealed_mutation_predicts(
    bundle: Path, studies: Path, tmp_path: Path, fuzz_tally: Tally
) -> None:
    """Re-sealed edits the reader accepts: `xpr predict` runs on them (exit 0) or refuses (exit 3)."""
    from xpr_deploy.bundle import BundleError, BundleView

    raw = (bundle / "manifest.json").read_bytes()
    doc = json.loads(raw)
    problems = []
    for name, m in limited(manifest_cases(doc, fast=False)):
        _write_manifest(bundle, m, True, raw)
        outcome, _ = judge(lambda: BundleView.open(bundle), BundleError, (str(bundle),))
        if outcome != "accepted" or _top(name) not in _RUNS:
            continue
        res = xpr("predict", str(bundle), str(studies), "--backend", "onnx", "--json", cwd=tmp_path)
        problem = None if res.returncode == 0 and "Traceback" not in res.stderr else cli_problem(res, 3, str(bundle))
        record(fuzz_tally, "bundle/cli", f"predict sealed {name}", problem)
        if problem:
            problems.append(f"{name}: {problem}")
    assert not problems, "\n".join(problems[:20])


@pytest.mark.fuzz
def test_long_every_meta_mutation_through_predict(ckpt: Path, studies: Path, tmp_path: Path, fuzz_tally: Tally) -> None:
    raw = (ckpt / "meta.json").read_text()
    doc = json.loads(raw)
    problems = []
    for name, m in limited([c for c in json_cases(doc) if c[1] != doc]):
        (ckpt / "meta.json").write_text(json.dumps(m, indent=2))
        res = xpr("predict", str(ckpt), str(studies), "--json", cwd=tmp_path)
        problem = None if res.returncode == 0 and "Traceback" not in res.stderr else cli_problem(res, 2, "meta.json")
        record(fuzz_tally, "checkpoint/cli", f"predict {name}", problem)
        if problem:
            problems.append(f"{name}: {problem}")
    (ckpt / "meta.json").write_text(raw)
    assert not problems, "\n".join(problems[:20])


@pytest.mark.fuzz
def test_long_usage_errors_in_subprocesses(tmp_path: Path, fuzz_tally: Tally) -> None:
    problems = []
    for name, argv, says in limited(usage_cases()):
        res = xpr(*argv, cwd=tmp_path)
        problem = usage_problem(res.returncode, res.stderr, says)
        record(fuzz_tally, "cli/usage", f"subprocess {name}", problem)
        if problem:
            problems.append(f"{name}: {problem}")
    assert not problems, "\n".join(problems[:20])


def _json_values() -> Any:
    from hypothesis import strategies as st

    leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
    return st.recursive(
        leaf,
        lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
        max_leaves=8,
    )


def _paths(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path] if path else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*path, i))
    return out


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    copy = json.loads(json.dumps(doc))
    node = copy
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return copy


@pytest.mark.fuzz
def test_long_hypothesis_random_manifest_and_meta_edits(world: Path, tmp_path: Path, fuzz_tally: Tally) -> None:
    """Random JSON values at random places of a re-sealed manifest and of meta.json (library)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from xpr_deploy.bundle import BundleError
    from xpr_deploy.errors import WeightsError
    from xpr_deploy.runners.factory import PredictError

    b, ck = tmp_path / "b", tmp_path / "ck"
    shutil.copytree(world / "bundle", b)
    shutil.copytree(world / "ckpt", ck)
    manifest = json.loads((b / "manifest.json").read_text())
    meta = json.loads((ck / "meta.json").read_text())
    mpaths, cpaths = _paths(manifest), _paths(meta)
    problems: list[str] = []

    @settings(max_examples=LIMIT or 300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.booleans(), st.integers(0, 10**6), _json_values())
    def edit(on_manifest: bool, where: int, value: Any) -> None:
        from xpr_deploy.bundle import seal

        if on_manifest:
            path = mpaths[where % len(mpaths)]
            doc = _set(manifest, path, value)
            try:
                (b / "manifest.json").write_bytes(seal(doc))
            except ValueError:  # a nested manifest_sha256 key cannot be sealed
                return
            _, problem = judge(lambda: bundle_answers(b), BundleError, (str(b),))
        else:
            path = cpaths[where % len(cpaths)]
            (ck / "meta.json").write_text(json.dumps(_set(meta, path, value)))
            _, problem = judge(lambda: ckpt_answers(ck), (WeightsError, PredictError), ("meta.json",))
        case = f"hypothesis {'manifest' if on_manifest else 'meta'} {'/'.join(map(str, path))}={value!r:.60}"
        record(fuzz_tally, "bundle/open" if on_manifest else "checkpoint/load", case, problem)
        if problem:
            problems.append(f"{case}: {problem}")

    edit()
    assert not problems, "\n".join(problems[:20])
