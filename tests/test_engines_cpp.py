"""C++ runtime (engines/) against the Python toolkit, from the same DICOM files.

Builds `engines/build/xpr_infer` with CMake (incremental; `make cpp` does the same and more) and
exports the tiny model to a bundle with kept-window outputs (both once per session: conftest
`xpr_infer`, `cpp_bundle`), writes synthetic studies in every
transfer syntax `xpr synth` produces (uncompressed, RLE, JPEG 2000; MONOCHROME1 and 2), then per
breast compares the C++ example viewer with `xpr predict` on ONNX Runtime:

- the preprocessed model inputs (C++ `--dump-inputs` vs `preprocess_file`): max |diff| <= 1e-6,
- the malignancy probability: max |diff| <= 1e-5,
- the kept windows of every pruned block and view: identical.

Bad bundles and bad DICOM files are covered by the C++ tests (ctest, also under AddressSanitizer);
a few run here too, through the CLI, to pin the JSON error line. A tampered real bundle (a byte of
the graph, a manifest field without re-sealing, a `..` path, a link, an extra or missing file,
format 1) is refused by both the Python verified reader and `xpr_infer`, naming the same file; a
real bundle whose tensors are renamed runs the same (names come from the manifest's `io`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_export_support import xpr_in_process

REPO = Path(__file__).resolve().parents[1]
ENGINES = REPO / "engines"
PROB_TOL = 1e-5
INPUT_TOL = 1e-6


def _run(cmd: list[str], timeout: int = 900, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, cpp_bundle: dict[str, Path]) -> dict[str, Path]:
    """Synthetic studies beside the session's tiny checkpoint and its export bundle (conftest `cpp_bundle`:
    kept-window outputs, LayerNorms off their init so window scores do not tie)."""
    from xpr_deploy.data.synth import write_synthetic

    root = tmp_path_factory.mktemp("engines_cpp")
    write_synthetic(root / "synth", breasts=6, size=(512, 256), seed=11)
    return {"root": root, "synth": root / "synth", "ckpt": cpp_bundle["ckpt"], "bundle": cpp_bundle["bundle"]}


def _export(ckpt: Path, bundle: Path, *extra: str) -> None:
    """`xpr export CKPT --with-selection`: the real bundle (ONNX + TensorRT-RTX engine entry when
    tensorrt-rtx is installed + manifest); parity samples off, `xpr validate` covers those."""
    xpr_in_process(
        "export", ckpt, "--with-selection", "--parity-samples", "0", "--out", bundle, *extra
    )  # no torch import
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert any(b.get("selection_output") for b in manifest["blocks"]), "bundle has no kept-window outputs"


def _cpp(xpr_infer: Path, bundle: Path, cc: str | Path, mlo: str | Path, *extra: str | Path) -> dict[str, Any]:
    res = _run([xpr_infer, bundle, cc, mlo, "--device", "cpu", *extra], timeout=300)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"xpr_infer printed no JSON (exit {res.returncode}):\n{res.stdout}\n{res.stderr}"
    out: dict[str, Any] = json.loads(lines[-1])
    out["_exit"] = res.returncode
    out["_stderr"] = res.stderr
    return out


def _py_selection(runner: Any, source: Any, cc: np.ndarray, mlo: np.ndarray, cfg: Any = None) -> dict[Any, Any]:
    """Kept windows (view, stage, block) -> [B, K] from the Python ONNX Runtime runner, I/O by the bundle's io."""
    from xpr_deploy.runners import kept_windows

    outputs = runner.infer({source.io.cc: cc, source.io.mlo: mlo})
    return dict(kept_windows(outputs, runner.selection, cfg))


def test_cpp_matches_python_onnxruntime(xpr_infer: Path, work: dict[str, Path], tmp_path: Path) -> None:
    import pydicom

    from xpr_deploy.data.dicom import preprocess_file
    from xpr_deploy.predict import predict
    from xpr_deploy.runners import make_runner, open_source

    bundle = work["bundle"]
    rep = predict(bundle, [work["synth"]], backend="onnx")  # what `xpr predict BUNDLE STUDIES` prints
    assert len(rep.breasts) == 6, rep.rejects
    source = open_source(bundle)
    h, w = source.cfg.img_size
    runner = make_runner(source, "onnx", selection=True)

    syntaxes, photometrics = set(), set()
    max_dprob = max_dinput = 0.0
    blocks_compared = windows_compared = 0
    rows = []
    with runner:
        for b in rep.breasts:
            c = _cpp(xpr_infer, bundle, b.cc, b.mlo, "--dump-inputs", tmp_path / "in")
            assert c["_exit"] == 0, c
            # 1. preprocessing, from the DICOM files on both sides
            py_in = {}
            for view, path in (("cc", b.cc), ("mlo", b.mlo)):
                ds = pydicom.dcmread(path, stop_before_pixels=True)
                syntaxes.add(str(ds.file_meta.TransferSyntaxUID))
                photometrics.add(str(ds.PhotometricInterpretation))
                py_in[view] = preprocess_file(path, source.settings)
                cpp_in = np.fromfile(tmp_path / f"in.{view}.f32", dtype=np.float32).reshape(h, w)
                max_dinput = max(max_dinput, float(np.abs(cpp_in - py_in[view]).max()))
            # 2. probability: `xpr predict` (Python, ONNX Runtime) vs C++
            dprob = abs(c["prob"] - b.prob)
            max_dprob = max(max_dprob, dprob)
            # 3. kept windows of every pruned block
            sel = _py_selection(runner, source, py_in["cc"].reshape(1, 1, h, w), py_in["mlo"].reshape(1, 1, h, w))
            cpp_sel = {(s["view"], s["stage"], s["block"]): s["kept"] for s in c["selection"]}
            assert source.bundle is not None
            pruned = [(bl["view"], bl["stage"], bl["block"]) for bl in source.bundle.manifest["blocks"] if bl["pruned"]]
            assert sorted(cpp_sel) == sorted(pruned)
            for key in pruned:
                assert cpp_sel[key] == [int(i) for i in sel[key][0]], f"{b.cc}: kept windows differ in {key}"
                blocks_compared += 1
                windows_compared += len(cpp_sel[key])
            rows.append((b.study[-12:], b.laterality, b.prob, c["prob"], dprob))

    print(f"\nC++ xpr_infer vs xpr predict (onnx), {len(rows)} breasts:")
    for r in rows:
        print(f"  {r[0]} {r[1]}  python {r[2]:.7f}  c++ {r[3]:.7f}  |d| {r[4]:.2e}")
    print(
        f"max |dprob| {max_dprob:.2e}, max |dinput| {max_dinput:.2e}, "
        f"kept windows identical in {blocks_compared} block-views ({windows_compared} windows)"
    )
    assert max_dinput <= INPUT_TOL
    assert max_dprob <= PROB_TOL
    # the studies exercised every decoder path the C++ side has
    assert {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.90"} <= syntaxes
    assert photometrics == {"MONOCHROME1", "MONOCHROME2"}


def test_cpp_preprocessing_edge_cases(xpr_infer: Path, tmp_path: Path) -> None:
    """The contract's corners, from engines/tests/make_fixture.py files: multi-valued window, padding
    value and (reversed) range, signed 12-bit pixels, odd width, rescale, LINEAR_EXACT, SIGMOID, no
    window (min-max), MONOCHROME1, flipped breasts, a burned-in marker. C++ vs `preprocess_file`."""
    from xpr_deploy.data.dicom import PreprocessSettings, preprocess_file

    fx = tmp_path / "fx"
    res = _run([sys.executable, ENGINES / "tests" / "make_fixture.py", fx])
    assert res.returncode == 0, res.stderr[-3000:]
    settings = PreprocessSettings(img_size=(448, 224))
    files = sorted((fx / "dicom").glob("good_*.dcm"))
    assert len(files) >= 5
    for f in files:
        c = _cpp(xpr_infer, fx / "bundle", f, f, "--dump-inputs", tmp_path / "in")
        assert c["_exit"] == 0, c
        cpp_in = np.fromfile(tmp_path / "in.cc.f32", dtype=np.float32).reshape(448, 224)
        diff = float(np.abs(cpp_in - preprocess_file(f, settings)).max())
        assert diff <= INPUT_TOL, f"{f.name}: max |C++ - Python| = {diff:.3e}"


def test_cpp_heatmap_matches_python_count_maps(xpr_infer: Path, work: dict[str, Path], tmp_path: Path) -> None:
    """`--heatmap`: per view, the fraction of pruned blocks that kept each region; the same as the
    Python heatmap's per-stage count maps (shifted windows rolled back per dimension) summed."""
    from xpr_deploy.data.dicom import preprocess_file
    from xpr_deploy.heatmap import count_maps
    from xpr_deploy.predict import predict
    from xpr_deploy.runners import make_runner, open_source

    bundle = work["bundle"]
    b = predict(bundle, [work["synth"]], backend="onnx").breasts[0]
    out = tmp_path / "heat.pgm"
    c = _cpp(xpr_infer, bundle, b.cc, b.mlo, "--heatmap", out)
    assert c["_exit"] == 0 and c["heatmap"] == str(out)
    header, rest = out.read_bytes().split(b"\n255\n", 1)
    width, height = (int(v) for v in header.split()[1:3])
    assert (height, width) == (448, 2 * 224 + 8)
    pixels = np.frombuffer(rest, dtype=np.uint8).reshape(height, width).astype(np.int32)

    source = open_source(bundle)
    cfg = source.cfg
    with make_runner(source, "onnx", selection=True) as runner:
        x = {v: preprocess_file(p, source.settings).reshape(1, 1, 448, 224) for v, p in (("cc", b.cc), ("mlo", b.mlo))}
        sel = _py_selection(runner, source, x["cc"], x["mlo"], cfg)
    maps = count_maps(sel, cfg)
    n_blocks = sum(cfg.depths)
    for view, x0 in (("cc", 0), ("mlo", 224 + 8)):
        total = sum(np.repeat(np.repeat(m, 2 ** (s - 1), axis=0), 2 ** (s - 1), axis=1) for s, m in maps[view].items())
        frac = np.repeat(np.repeat(total / n_blocks, 4, axis=0), 4, axis=1)  # stage-1 tokens -> pixels
        expected = np.floor(255.0 * frac + 0.5).astype(np.int32)
        diff = np.abs(pixels[:, x0 : x0 + 224] - expected)
        assert diff.max() <= 1, f"{view}: C++ heatmap differs from count_maps by {diff.max()} grey levels"
        assert expected.max() > expected.min()  # not a flat map


def _copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_cpp_bad_bundles_and_files_give_error_lines(xpr_infer: Path, work: dict[str, Path], tmp_path: Path) -> None:
    from xpr_deploy.predict import predict

    b = predict(work["bundle"], [work["synth"]], backend="onnx").breasts[0]

    # hash mismatch: one byte of the model changed
    bad = _copy_bundle(work["bundle"], tmp_path / "hash")
    raw = bytearray((bad / "model.onnx").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (bad / "model.onnx").write_bytes(bytes(raw))
    c = _cpp(xpr_infer, bad, b.cc, b.mlo)
    assert c["_exit"] == 2 and c["status"] == "hash mismatch" and "model.onnx" in c["error"]

    # missing file
    bad = _copy_bundle(work["bundle"], tmp_path / "missing")
    (bad / "model.onnx").unlink()
    c = _cpp(xpr_infer, bad, b.cc, b.mlo)
    assert c["_exit"] == 2 and c["status"] == "file error" and "model.onnx" in c["error"]

    # wrong version (preprocessing contract and toolkit), the manifest sealed again after the edit
    from xpr_deploy.bundle.seal import seal

    for key, value, status in (("preprocessing", None, "unsupported version"), ("toolkit_version", "99.0.0", None)):
        bad = _copy_bundle(work["bundle"], tmp_path / f"version-{key}")
        m = json.loads((bad / "manifest.json").read_text())
        if key == "preprocessing":
            m["preprocessing"]["version"] = "xpr-preproc-9"
        else:
            m[key] = value
        (bad / "manifest.json").write_bytes(seal(m))
        c = _cpp(xpr_infer, bad, b.cc, b.mlo)
        assert c["_exit"] == 2 and c["status"] == (status or "unsupported version"), c
        assert "manifest.json" in c["error"]

    # this build has no TensorRT backend (no SDK here): asking for it is an error, not a crash
    c = _cpp(xpr_infer, work["bundle"], b.cc, b.mlo, "--backend", "tensorrt")
    assert c["_exit"] == 2 and c["status"] == "unsupported" and "TensorRT" in c["error"], c

    # bad DICOM: truncated and not DICOM at all; the error names the file
    trunc = tmp_path / "trunc.dcm"
    trunc.write_bytes(Path(b.cc).read_bytes()[:700])
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not a dicom" * 50)
    for f in (trunc, junk):
        c = _cpp(xpr_infer, work["bundle"], f, b.mlo)
        assert c["_exit"] == 2 and c["status"] == "bad DICOM" and str(f) in c["error"], c


def test_fixture_bundle_hash_is_sha256(work: dict[str, Path]) -> None:
    """The manifest's digests are what the C++ side recomputes (hex SHA-256 of the file bytes), and
    its seal is the SHA-256 of its bytes with the seal's 64 hex digits replaced by '0'."""
    raw = (work["bundle"] / "manifest.json").read_bytes()
    m = json.loads(raw)
    for rel, digest in m["files"].items():
        assert hashlib.sha256((work["bundle"] / rel).read_bytes()).hexdigest() == digest
    (found,) = re.findall(rb'"manifest_sha256": "([0-9a-f]{64})"', raw)
    assert hashlib.sha256(raw.replace(found, b"0" * 64)).hexdigest() == found.decode() == m["manifest_sha256"]


@pytest.fixture(scope="module")
def breast(work: dict[str, Path]) -> tuple[str, str]:
    """One (CC, MLO) pair of the synthetic studies (xpr_infer reads the DICOM files before the bundle)."""
    from xpr_deploy.predict import predict

    b = predict(work["bundle"], [work["synth"]], backend="onnx").breasts[0]
    return b.cc, b.mlo


def _edit_manifest(bundle: Path, edit: Any) -> None:
    """Edit the manifest as JSON and seal it again: what is refused is then the edit, not the seal."""
    from xpr_deploy.bundle.seal import seal

    m = json.loads((bundle / "manifest.json").read_bytes())
    edit(m)
    (bundle / "manifest.json").write_bytes(seal(m))


def _flip_model_byte(b: Path) -> None:
    raw = bytearray((b / "model.onnx").read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (b / "model.onnx").write_bytes(bytes(raw))


def _edit_threshold_unsealed(b: Path) -> None:
    raw = (b / "manifest.json").read_bytes()
    edited, n = re.subn(rb'"threshold": [0-9.eE+-]+', b'"threshold": 0.0123', raw, count=1)
    assert n == 1 and edited != raw
    (b / "manifest.json").write_bytes(edited)


#: case -> (tamper, file the error names, C++ status, a part of both messages)
TAMPER: dict[str, tuple[Any, str, str, str]] = {
    "onnx-byte": (_flip_model_byte, "model.onnx", "hash mismatch", "SHA-256"),
    "field-unsealed": (_edit_threshold_unsealed, "manifest.json", "hash mismatch", "seal"),
    "dotdot-graph": (
        lambda b: _edit_manifest(b, lambda m: m["graphs"].update(fp32="../model.onnx")),
        "manifest.json", "bad manifest", "../model.onnx",
    ),
    "absolute-model": (
        lambda b: _edit_manifest(b, lambda m: m.update(model=str(b.resolve() / "model.onnx"))),
        "manifest.json", "bad manifest", "model.onnx",
    ),
    "format-1": (
        lambda b: _edit_manifest(b, lambda m: m.update(format_version=1)),
        "manifest.json", "unsupported version", "re-export",
    ),
    "symlink": (lambda b: (b / "link.onnx").symlink_to("model.onnx"), "link.onnx", "bad bundle layout", "link"),
    "extra-file": (lambda b: (b / "notes.txt").write_text("x\n"), "notes.txt", "bad bundle layout", "not listed"),
    "missing-file": (lambda b: (b / "model.onnx").unlink(), "model.onnx", "file error", "missing"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(TAMPER))
def test_cpp_refuses_tampered_bundle_like_python(
    case: str, xpr_infer: Path, work: dict[str, Path], breast: tuple[str, str], tmp_path: Path
) -> None:
    """The same rules on both sides: the Python reader refuses, and `xpr_infer` exits non-zero with one
    error line (stdout: one JSON line, stderr: one message line) naming the same file."""
    from xpr_deploy.bundle import BundleError, BundleView

    tamper, named, status, part = TAMPER[case]
    bad = _copy_bundle(work["bundle"], tmp_path / case)
    tamper(bad)
    with pytest.raises(BundleError) as exc:
        BundleView.open(bad)
    assert str(bad / named) in str(exc.value) and part in str(exc.value), exc.value
    res = _run([xpr_infer, bad, *breast, "--device", "cpu"], timeout=300)
    assert res.returncode == 2, res
    out, err = res.stdout.splitlines(), res.stderr.splitlines()
    assert len(out) == 1 and len(err) == 1, (out, err)
    c = json.loads(out[0])
    assert c["status"] == status, c
    assert str(bad / named) in c["error"] and part in c["error"], c
    assert err[0] == f"xpr_infer: {c['error']}"


def test_cpp_runs_a_bundle_with_renamed_io(
    xpr_infer: Path, work: dict[str, Path], breast: tuple[str, str], tmp_path: Path
) -> None:
    """No tensor name is built into the runtime: the real bundle with every input/output renamed in the
    graph and the manifest (`io`, `inputs`, `outputs`, `blocks[].selection_output`), sealed again, gives
    the same probability and kept windows."""
    import onnx

    from xpr_deploy.bundle import BundleView

    src = work["bundle"]
    dst = _copy_bundle(src, tmp_path / "renamed")
    m = json.loads((src / "manifest.json").read_bytes())
    new = {"cc": "image_cc", "mlo": "image_mlo", "logits": "class_scores", "prob": "p_malignant"}
    rename = {m["io"][role]: name for role, name in new.items()}
    rename |= {b["selection_output"]: "kept_" + b["selection_output"] for b in m["blocks"] if b["selection_output"]}
    model = onnx.load(str(dst / "model.onnx"))
    g = model.graph
    for v in [*g.input, *g.output, *g.value_info]:
        v.name = rename.get(v.name, v.name)
    for node in g.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
    onnx.save(model, str(dst / "model.onnx"))
    m["io"] = new
    for t in [*m["inputs"], *m["outputs"]]:
        t["name"] = rename.get(t["name"], t["name"])
    for b in m["blocks"]:
        if b["selection_output"]:
            b["selection_output"] = rename[b["selection_output"]]
    m["files"]["model.onnx"] = hashlib.sha256((dst / "model.onnx").read_bytes()).hexdigest()
    from xpr_deploy.bundle.seal import seal

    (dst / "manifest.json").write_bytes(seal(m))
    assert BundleView.open(dst).io.inputs == ("image_cc", "image_mlo")

    a = _cpp(xpr_infer, src, *breast, "--threads", "1")
    b = _cpp(xpr_infer, dst, *breast, "--threads", "1")
    assert a["_exit"] == 0 and b["_exit"] == 0, (a, b)
    assert abs(a["prob"] - b["prob"]) <= 1e-6
    assert [s["kept"] for s in a["selection"]] == [s["kept"] for s in b["selection"]] and a["selection"]


def test_cpp_runs_a_dynamic_batch_bundle(
    xpr_infer: Path, work: dict[str, Path], breast: tuple[str, str], tmp_path: Path
) -> None:
    """A bundle exported with `--max-batch 2` (for Triton) runs in the C++ runtime one breast at a
    time, with the static bundle's probability and kept windows; a dynamic manifest whose shapes do
    not start with -1 is refused naming the tensor."""
    dyn = tmp_path / "dynamic"
    _export(work["ckpt"], dyn, "--max-batch", "2", "--no-engine")
    m = json.loads((dyn / "manifest.json").read_bytes())
    assert m["max_batch"] == 2 and all(t["shape"][0] == -1 for t in m["inputs"] + m["outputs"])
    a = _cpp(xpr_infer, work["bundle"], *breast, "--threads", "1")
    b = _cpp(xpr_infer, dyn, *breast, "--threads", "1")
    assert a["_exit"] == 0 and b["_exit"] == 0, (a, b)
    assert abs(a["prob"] - b["prob"]) <= PROB_TOL
    assert [s["kept"] for s in a["selection"]] == [s["kept"] for s in b["selection"]] and b["selection"]

    def static_first_dim(man: dict[str, Any]) -> None:
        man["inputs"][0]["shape"][0] = 1

    _edit_manifest(dyn, static_first_dim)
    res = _run([xpr_infer, dyn, *breast, "--device", "cpu"], timeout=300)
    c = json.loads(res.stdout.splitlines()[-1])
    assert res.returncode == 2 and c["status"] == "bad manifest", res
    assert str(dyn / "manifest.json") in c["error"] and "must start with -1" in c["error"], c


def test_cpp_runtime_version_follows_the_toolkit() -> None:
    """The C++ runtime accepts bundles of its own toolkit line (0.1.x): bump both together."""
    import re

    from xpr_deploy import __version__

    header = (ENGINES / "include" / "xpr" / "xpr.h").read_text()
    m = re.search(r'#define XPR_VERSION_STRING "([^"]+)"', header)
    assert m and m.group(1) == __version__
    cmake = (ENGINES / "CMakeLists.txt").read_text()
    assert f"project(xpr VERSION {__version__} " in cmake


# ---- issue 21: external data confined to the bundle, special files never opened -----------------
@pytest.fixture(scope="module")
def external_bundle(work: dict[str, Path]) -> Path:
    """The fixture checkpoint exported with `--external-data` (weights in model.onnx.data)."""
    b = work["root"] / "external"
    _export(work["ckpt"], b, "--external-data", "--no-engine")
    assert "model.onnx.data" in json.loads((b / "manifest.json").read_bytes())["files"]
    return b


def test_cpp_runs_an_external_data_bundle(
    xpr_infer: Path, work: dict[str, Path], external_bundle: Path, breast: tuple[str, str]
) -> None:
    """ONNX Runtime (C++) loads the graph from the bundle folder, so model.onnx.data resolves there:
    the same probability and kept windows as the self-contained bundle."""
    a = _cpp(xpr_infer, work["bundle"], *breast, "--threads", "1")
    b = _cpp(xpr_infer, external_bundle, *breast, "--threads", "1")
    assert a["_exit"] == 0 and b["_exit"] == 0, (a, b)
    assert abs(a["prob"] - b["prob"]) <= 1e-6
    assert [s["kept"] for s in a["selection"]] == [s["kept"] for s in b["selection"]] and b["selection"]


@pytest.mark.parametrize("case", sorted(__import__("external_data_cases").CASES))
def test_cpp_refuses_external_data_outside_the_bundle_like_python(
    case: str, xpr_infer: Path, external_bundle: Path, breast: tuple[str, str], tmp_path: Path
) -> None:
    """The bundles `xpr verify` refuses (tests/external_data_cases.py) are refused by `xpr_infer` too,
    before ONNX Runtime sees the graph: one line naming the same file and the location."""
    from external_data_cases import CASES

    from xpr_deploy.bundle import BundleError, BundleView

    bad = _copy_bundle(external_bundle, tmp_path / case)
    named, part = CASES[case](bad)
    with pytest.raises(BundleError) as exc:
        BundleView.open(bad)
    assert str(bad / named) in str(exc.value) and part in str(exc.value), exc.value
    res = _run([xpr_infer, bad, *breast, "--device", "cpu"], timeout=300)
    out, err = res.stdout.splitlines(), res.stderr.splitlines()
    assert res.returncode == 2 and len(out) == 1 and len(err) == 1, (res.returncode, out, err)
    c = json.loads(out[0])
    assert c["status"] in ("bad bundle layout", "hash mismatch"), c
    assert str(bad / named) in c["error"] and part in c["error"], c


def test_cpp_names_special_files_without_reading_them(
    xpr_infer: Path, work: dict[str, Path], breast: tuple[str, str], tmp_path: Path
) -> None:
    """A FIFO named x.dcm used to hang `xpr_infer` (the open waits for a writer); it, a link to
    /dev/zero and a dangling link now exit 2 at once with one line naming the file."""
    fifo = tmp_path / "x.dcm"
    os.mkfifo(fifo)
    (tmp_path / "zero.dcm").symlink_to("/dev/zero")
    (tmp_path / "dangling.dcm").symlink_to(tmp_path / "nowhere.dcm")
    cases = {
        fifo: "is a FIFO, not a regular file",
        tmp_path / "zero.dcm": "is a character device, not a regular file",
        tmp_path / "dangling.dcm": "is a dangling symbolic link",
    }
    for path, says in cases.items():
        res = _run([xpr_infer, work["bundle"], path, breast[1], "--device", "cpu"], timeout=20)
        assert res.returncode == 2, res
        assert res.stderr.splitlines() == [f"xpr_infer: {path}: {says}"], res.stderr
        assert json.loads(res.stdout)["status"] == "bad DICOM"
