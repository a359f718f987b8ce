"""The bundle is the contract: the verified reader refuses every edited, incomplete or escaping
bundle, and every command that reads bundles (predict, validate, bench, triton, verify) goes
through it. The C++ runtime's refusals are tested in tests/test_engines_cpp.py."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from test_export_support import XPR, xpr_here

from xpr_deploy.bundle import BundleError, BundleView, digest_of, seal, write_sealed

Tamper = Callable[[Path], str]  # edits a bundle copy, returns the file the refusal must name


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny random-weight FP32 bundle with kept-window outputs, no engine, parity run (fast)."""
    from xpr_deploy.export.bundle import ExportOptions, load_source
    from xpr_deploy.validate import export_and_validate

    model, meta = load_source(None, "tiny", 0)
    out = tmp_path_factory.mktemp("bundle") / "tiny"
    res = export_and_validate(model, meta, out, ExportOptions(with_selection=True, engine=False, parity_samples=2))
    assert res.ok
    return out


def _copy(bundle: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "b"
    shutil.copytree(bundle, dest)
    return dest


def _manifest(b: Path) -> dict:
    return json.loads((b / "manifest.json").read_text())


def _edit_manifest(b: Path, change: Callable[[dict], None], reseal: bool) -> None:
    m = _manifest(b)
    change(m)
    if reseal:
        write_sealed(b, m)
    else:  # an edit by hand: the seal stays as it was
        (b / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")


def _flip_byte(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))


# ---- tampering, each case: (what is done, file the one-line refusal names, words it contains)
def t_graph_byte(b: Path) -> str:
    _flip_byte(b / "model.onnx")
    return "model.onnx"


def t_head_bias(b: Path) -> str:
    """The hostile edit of the issue: the head's last bias changed so every breast reads malignant."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(b / "model.onnx"))
    init = [i for i in proto.graph.initializer if i.dims == [2]][-1]
    arr = numpy_helper.to_array(init).copy() + np.array([-50.0, 50.0], dtype=np.float32)
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(proto, str(b / "model.onnx"))
    return "model.onnx"


def t_threshold(b: Path) -> str:
    _edit_manifest(b, lambda m: m.update(threshold=0.01), reseal=False)
    return "manifest.json"


def t_preprocessing(b: Path) -> str:
    _edit_manifest(b, lambda m: m["preprocessing"].update(mean=0.1), reseal=False)
    return "manifest.json"


def t_dotdot(b: Path) -> str:
    _edit_manifest(b, lambda m: m.update(model="../elsewhere.onnx"), reseal=True)
    return "manifest.json"


def t_absolute(b: Path) -> str:
    _edit_manifest(b, lambda m: m["graphs"].update(fp32=str((b / "model.onnx").resolve())), reseal=True)
    return "manifest.json"


def t_symlink_out(b: Path) -> str:
    outside = b.parent / "outside.onnx"
    shutil.copyfile(b / "model.onnx", outside)
    (b / "model.onnx").unlink()
    os.symlink(outside, b / "model.onnx")
    return "model.onnx"


def t_extra_file(b: Path) -> str:
    (b / "notes.txt").write_text("dropped in later\n")
    return "notes.txt"


def t_missing_file(b: Path) -> str:
    (b / "parity.json").unlink()
    return "parity.json"


def t_old_format(b: Path) -> str:
    _edit_manifest(b, lambda m: m.update(format_version=1), reseal=True)
    return "manifest.json"


def t_no_seal(b: Path) -> str:
    m = _manifest(b)
    del m["manifest_sha256"]
    (b / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")
    return "manifest.json"


def t_resealed_hash_lie(b: Path) -> str:
    """A re-sealed manifest whose file hash was not updated for an edited graph: still refused."""
    _flip_byte(b / "model.onnx")
    _edit_manifest(b, lambda m: m.update(threshold=0.3), reseal=True)
    return "model.onnx"


def t_dynamic_without_max_batch(b: Path) -> str:
    """-1 (the dynamic batch axis) in a manifest that has no max_batch: the facts disagree."""
    _edit_manifest(b, lambda m: m["inputs"][0].update(shape=[-1, *m["inputs"][0]["shape"][1:]]), reseal=True)
    return "manifest.json"


def t_max_batch_on_static_shapes(b: Path) -> str:
    _edit_manifest(b, lambda m: m.update(max_batch=4), reseal=True)
    return "manifest.json"


def t_dynamic_inner_dim(b: Path) -> str:
    """Only the batch axis may be dynamic: -1 elsewhere is refused even with max_batch."""

    def change(m: dict) -> None:
        m["max_batch"] = 4
        for t in [*m["inputs"], *m["outputs"]]:
            t["shape"] = [-1, *t["shape"][1:]]
        m["inputs"][1]["shape"][2] = -1

    _edit_manifest(b, change, reseal=True)
    return "manifest.json"


TAMPERS: dict[str, Tamper] = {
    f.__name__[2:]: f
    for f in (
        t_graph_byte, t_head_bias, t_threshold, t_preprocessing, t_dotdot, t_absolute, t_symlink_out,
        t_extra_file, t_missing_file, t_old_format, t_no_seal, t_resealed_hash_lie, t_dynamic_without_max_batch,
        t_max_batch_on_static_shapes, t_dynamic_inner_dim,
    )
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(TAMPERS))
def test_reader_refuses(small_bundle: Path, tmp_path: Path, case: str) -> None:
    b = _copy(small_bundle, tmp_path)
    named = TAMPERS[case](b)
    with pytest.raises(BundleError) as exc:
        BundleView.open(b)
    msg = str(exc.value)
    assert named in msg and "\n" not in msg, msg


def test_reader_accepts_the_export_and_reports_its_digest(small_bundle: Path) -> None:
    view = BundleView.open(small_bundle)
    raw = (small_bundle / "manifest.json").read_bytes()
    recorded, computed = digest_of(raw)
    assert view.digest == recorded == computed
    blank = raw.replace(recorded.encode(), b"0" * 64)
    assert hashlib.sha256(blank).hexdigest() == recorded  # the rule of export/README.md, by hand
    assert view.io.inputs == ("cc", "mlo") and view.graph().name == "model.onnx"
    assert set(view.selection_outputs()) == {o["name"] for o in view.outputs if o["name"].startswith("sel_")}


def test_seal_is_stable_and_rejects_nested_keys() -> None:
    m = {"format": "xpr-bundle", "a": 1.5, "b": [1, 2]}
    raw = seal(m)
    assert seal(json.loads(raw)) == raw
    with pytest.raises(ValueError):
        seal({"x": {"manifest_sha256": "0" * 64}})


def test_graph_pointed_at_inside_the_bundle_verifies_the_whole_bundle(small_bundle: Path, tmp_path: Path) -> None:
    b = _copy(small_bundle, tmp_path)
    assert BundleView.open(b / "model.onnx").graph() == b / "model.onnx"
    _flip_byte(b / "parity.json")  # another file of the bundle
    with pytest.raises(BundleError, match=r"parity\.json"):
        BundleView.open(b / "model.onnx")


# ---- every command refuses, with one line and the documented exit code ----------------------
def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed console script `xpr`, for real (test_verify_prints_the_digest keeps one such run)."""
    return subprocess.run([str(XPR), *args], capture_output=True, text=True, cwd=cwd, timeout=600)


COMMANDS: dict[str, Callable[[Path, Path], list[str]]] = {
    "predict": lambda b, tmp: ["predict", str(b), str(tmp / "studies"), "--backend", "onnx"],
    "validate": lambda b, tmp: ["validate", str(b), "--samples", "1"],
    "bench": lambda b, tmp: ["bench", "--onnx", str(b), "--runs", "1", "--warmup", "0"],
    "triton": lambda b, tmp: ["triton", str(b), "--repo", str(tmp / "repo")],
    "verify": lambda b, tmp: ["verify", str(b)],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("case", ["head_bias", "threshold", "dotdot"])
def test_commands_refuse_a_tampered_bundle(
    small_bundle: Path,
    tmp_path: Path,
    command: str,
    case: str,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from xpr_deploy.data.synth import write_synthetic

    b = _copy(small_bundle, tmp_path)
    named = TAMPERS[case](b)
    if command == "predict":
        write_synthetic(tmp_path / "studies", 1, "vindr", size=(448, 224), seed=3)
    res = xpr_here(capfd, monkeypatch, *COMMANDS[command](b, tmp_path), cwd=tmp_path)
    assert res.returncode == 3, (res.returncode, res.stdout[-500:], res.stderr[-1500:])
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "repo").exists()  # triton wrote nothing


def test_verify_prints_the_digest(small_bundle: Path, tmp_path: Path) -> None:
    res = _run("verify", str(small_bundle), "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["manifest_sha256"] == BundleView.open(small_bundle).digest and "model.onnx" in out["files"]


def test_resealed_manifest_disagreeing_with_its_graph_fails_in_one_line(small_bundle: Path, tmp_path: Path) -> None:
    """Consistent with itself (and re-sealed), but not with model.onnx: refused before ONNX Runtime runs."""
    from xpr_deploy.runners import make_runner
    from xpr_deploy.runners.onnxrt import OnnxLoadError

    b = _copy(small_bundle, tmp_path)

    def taller(m: dict) -> None:
        m["model_config"]["img_size"] = [672, 224]
        m["preprocessing"]["img_size"] = [672, 224]
        for t in m["inputs"]:
            t["shape"] = [1, 1, 672, 224]

    _edit_manifest(b, taller, reseal=True)
    with pytest.raises(OnnxLoadError) as exc, make_runner(b, "onnx"):
        pass
    assert "model.onnx: input 'cc' is [1, 1, 448, 224] in the graph, [1, 1, 672, 224] in the manifest" in str(exc.value)


# ---- ONNX external data (issue 21): written confined and hashed, read only from inside ---------
@pytest.fixture(scope="module")
def external_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small bundle's model (same seed) exported with `--external-data`: weights in model.onnx.data."""
    from xpr_deploy.export.bundle import ExportOptions, load_source
    from xpr_deploy.validate import export_and_validate

    model, meta = load_source(None, "tiny", 0)
    out = tmp_path_factory.mktemp("bundle") / "tiny-external"
    opts = ExportOptions(with_selection=True, engine=False, parity_samples=2, external_data=True)
    assert export_and_validate(model, meta, out, opts).ok  # parity ran ONNX Runtime on it
    return out


def test_export_writes_external_data_listed_hashed_and_served(
    external_bundle: Path,
    small_bundle: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`xpr export --external-data`: the weights go to model.onnx.data (a bare name beside the graph),
    listed with its SHA-256; `xpr verify` accepts it and `xpr predict` gives the self-contained
    bundle's probabilities (same seed, same weights)."""
    import onnx

    from xpr_deploy.data.synth import write_synthetic
    from xpr_deploy.predict import predict

    m = _manifest(external_bundle)
    data = external_bundle / "model.onnx.data"
    assert m["files"]["model.onnx.data"] == hashlib.sha256(data.read_bytes()).hexdigest()
    proto = onnx.load(str(external_bundle / "model.onnx"), load_external_data=False)
    locations = {e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"model.onnx.data"}
    assert (external_bundle / "model.onnx").stat().st_size < data.stat().st_size / 10
    res = xpr_here(capfd, monkeypatch, "verify", str(external_bundle), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    write_synthetic(tmp_path / "studies", 1, "vindr", size=(448, 224), seed=3)
    res = xpr_here(
        capfd,
        monkeypatch,
        "predict",
        str(external_bundle),
        str(tmp_path / "studies"),
        "--backend",
        "onnx",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    a = predict(external_bundle, [tmp_path / "studies"], backend="onnx").breasts
    b = predict(small_bundle, [tmp_path / "studies"], backend="onnx").breasts
    assert a and [x.prob for x in a] == pytest.approx([x.prob for x in b], abs=1e-6)


@pytest.mark.parametrize("case", sorted(__import__("external_data_cases").CASES))
def test_verify_refuses_external_data_outside_the_bundle(
    external_bundle: Path,
    tmp_path: Path,
    case: str,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A graph reading `../x.bin`, an absolute path, `/dev/zero`, ONNX Runtime's memory tag, an unlisted
    file, bytes past a file's end, or from a tensor inside a subgraph's attribute; or a listed data file
    edited after export: `xpr verify` exits 3 with one line naming the graph (or file) and the location."""
    from external_data_cases import CASES

    b = _copy(external_bundle, tmp_path)
    named, part = CASES[case](b)
    res = xpr_here(capfd, monkeypatch, "verify", str(b), cwd=tmp_path)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 3, (res.returncode, res.stdout[-500:], res.stderr[-1500:])
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert str(b / named) in lines[0].replace("\\\\", "\\") or named in lines[0], lines
    assert part in lines[0], lines


def test_reader_refuses_deep_nesting_in_one_line(small_bundle: Path, tmp_path: Path) -> None:
    """A manifest value nested 100,000 (or just 65) levels deep: one line, as the C++ reader says it."""
    from xpr_deploy.bundle.verify import MAX_JSON_DEPTH

    for depth in (100_000, MAX_JSON_DEPTH):
        b = _copy(small_bundle, tmp_path / str(depth))
        m = _manifest(b)
        m["lint"] = "DEEP"  # replaced by `depth` arrays inside the top-level object: depth + 1 levels
        deep = b"[" * depth + b"]" * depth
        (b / "manifest.json").write_bytes(seal(m).replace(b'"DEEP"', deep))
        with pytest.raises(BundleError) as exc:
            BundleView.open(b)
        assert f"nested deeper than {MAX_JSON_DEPTH} levels" in str(exc.value) and "\n" not in str(exc.value)
