"""A real Triton server (the `nvidia-pytriton` wheel's tritonserver, Python backend, CPU) serving the
repository `xpr triton` writes for tiny bundles: a batch-1 bundle and a dynamic-batch one (--max-batch).

One server for the module (loopback, free ports, explicit model control); every test bounds its
waits; the module stops the server itself. Skipped with the reason when no server is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xpr_deploy.serve import ServeError, TritonServer, find_server, free_ports
from xpr_deploy.serve.load import client, infer, run_load

try:
    INSTALL = find_server()
except ServeError as exc:  # pragma: no cover - the Makefile installs it
    pytest.skip(str(exc), allow_module_level=True)
pytest.importorskip("tritonclient.http", reason="tritonclient[http] not installed")
pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] not installed")

TIMEOUT = 30.0  # seconds any single request may take before the client gives up
MAX_BATCH = 4


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path, tiny_dynamic_bundle: Path) -> dict[str, Any]:
    """Two bundles of the same random tiny weights (static batch 1, dynamic 1..4: conftest's session
    bundles, exported once), synthetic studies, and `xpr predict`'s answers on them."""
    from xpr_deploy.data.synth import write_synthetic
    from xpr_deploy.predict import predict

    root = tmp_path_factory.mktemp("serve")
    bundles = {"static": tiny_bundle, "dynamic": tiny_dynamic_bundle}
    assert json.loads((tiny_dynamic_bundle / "manifest.json").read_text())["max_batch"] == MAX_BATCH
    write_synthetic(root / "synth", breasts=3, size=(512, 256), seed=5)
    studies = root / "synth" / "images"
    rep = {which: predict(b, [studies], backend="onnx") for which, b in bundles.items()}
    return {"root": root, **bundles, "studies": studies, "predict": rep}


@pytest.fixture(scope="module")
def server(work: dict[str, Any]) -> Any:
    """Repository: tiny_python (batch 1), tdyn_python (dynamic batcher), tdynnb_python (no batcher)."""
    from xpr_deploy.triton import PythonModelOptions, write_repository

    repo = work["root"] / "repo"
    write_repository(work["static"], repo)
    write_repository(work["dynamic"], repo)
    write_repository(work["dynamic"], repo, name="tdynnb", python=PythonModelOptions(dynamic_batching=False))
    models = ("tiny_python", "tdyn_python", "tdynnb_python")
    args = ("--model-control-mode", "explicit", *(a for m in models for a in ("--load-model", m)))
    srv = TritonServer(repo, install=INSTALL, log_path=work["root"] / "tritonserver.log", extra_args=args)
    srv.start(timeout=180)
    yield srv
    srv.stop()


def _views(work: dict[str, Any], which: str) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """(cc [1,1,H,W], mlo, P(malignant) from xpr predict) per breast, preprocessed as predict does."""
    from xpr_deploy.data.dicom import preprocess_file
    from xpr_deploy.runners import open_source

    src = open_source(work[which])
    h, w = src.cfg.img_size
    out = []
    for b in work["predict"][which].breasts:
        cc = preprocess_file(b.cc, src.settings).reshape(1, 1, h, w).astype(np.float32)
        mlo = preprocess_file(b.mlo, src.settings).reshape(1, 1, h, w).astype(np.float32)
        out.append((cc, mlo, b.prob))
    return out


def test_real_server_loads_the_repository(server: TritonServer) -> None:
    c = client("http", server.http_url)
    for m in ("tiny_python", "tdyn_python", "tdynnb_python"):
        assert c.is_model_ready(m), m
    cfg = c.get_model_config("tdyn_python")
    assert cfg["max_batch_size"] == MAX_BATCH and "dynamic_batching" in cfg
    assert "dynamic_batching" not in c.get_model_config("tdynnb_python")
    assert c.get_model_config("tiny_python")["max_batch_size"] == 0


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_answers_equal_xpr_predict(server: TritonServer, work: dict[str, Any], protocol: str) -> None:
    url = server.http_url if protocol == "http" else server.grpc_url
    c = client(protocol, url, TIMEOUT)
    assert len(work["predict"]["static"].breasts) == 3
    for which, model in (("static", "tiny_python"), ("dynamic", "tdyn_python")):
        views = _views(work, which)
        for cc, mlo, want in views:
            got = infer(c, protocol, model, {"cc": cc, "mlo": mlo}, timeout=TIMEOUT)["prob"]
            assert abs(float(got.reshape(-1)[0]) - want) <= 1e-5, (which, protocol)
        # the dynamic model takes a batch in one request; each sample equals its own single answer
        if which == "dynamic":
            cc = np.concatenate([v[0] for v in views[:MAX_BATCH]])
            mlo = np.concatenate([v[1] for v in views[:MAX_BATCH]])
            got = infer(c, protocol, model, {"cc": cc, "mlo": mlo}, timeout=TIMEOUT)["prob"].reshape(-1)
            np.testing.assert_allclose(got, [v[2] for v in views[:MAX_BATCH]], atol=1e-5, rtol=0)
    # the same weights through both bundles
    a = [b.prob for b in work["predict"]["static"].breasts]
    b = [b.prob for b in work["predict"]["dynamic"].breasts]
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_bounded_load_zero_failures_every_answer_the_single_one(server: TritonServer, work: dict[str, Any]) -> None:
    views = _views(work, "dynamic")
    feeds = [{"cc": v[0], "mlo": v[1]} for v in views]
    c = client("http", server.http_url, TIMEOUT)
    single = [float(infer(c, "http", "tdyn_python", f, timeout=TIMEOUT)["prob"].reshape(-1)[0]) for f in feeds]
    # 8 x 25 through the dynamic batcher; fewer without it and over gRPC (2 shared CPU cores)
    for protocol, model, clients, requests in (
        ("http", "tdyn_python", 8, 25), ("http", "tdynnb_python", 8, 5), ("grpc", "tdyn_python", 4, 5),
    ):  # fmt: skip
        url = server.http_url if protocol == "http" else server.grpc_url
        r = run_load(
            protocol, url, model, feeds, single, clients=clients, requests=requests, timeout=TIMEOUT, atol=1e-5
        )
        assert r["failed"] == 0 and r["hung_clients"] == 0, r["errors"]
        assert r["succeeded"] == clients * requests and r["mismatches"] == 0, r["mismatch_examples"]


def _expect_error(c: Any, protocol: str, model: str, feeds: dict[str, np.ndarray], *needles: str) -> str:
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as ei:
        infer(c, protocol, model, feeds, timeout=TIMEOUT)
    msg = str(ei.value)
    for n in needles:
        assert n in msg, msg
    return msg


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bad_requests_get_errors_naming_the_input_and_the_server_keeps_serving(
    server: TritonServer, work: dict[str, Any], protocol: str
) -> None:
    url = server.http_url if protocol == "http" else server.grpc_url
    c = client(protocol, url, TIMEOUT)
    cc, mlo, want = _views(work, "dynamic")[0]
    for model in ("tiny_python", "tdyn_python"):
        _expect_error(c, protocol, model, {"cc": cc[..., :100], "mlo": mlo}, "cc", "shape")
        _expect_error(c, protocol, model, {"cc": cc, "mlo": mlo.astype(np.float64)}, "mlo", "FP64")
        _expect_error(c, protocol, model, {"cc": cc}, "mlo")
        nan = cc.copy()
        nan[0, 0, 10, 10] = np.nan
        _expect_error(c, protocol, model, {"cc": nan, "mlo": mlo}, "'cc'", "NaN")
    got = infer(c, protocol, "tdyn_python", {"cc": cc, "mlo": mlo}, timeout=TIMEOUT)["prob"]
    assert abs(float(got.reshape(-1)[0]) - want) <= 1e-5
    assert server.running


def test_tampered_bundle_is_not_served(server: TritonServer, work: dict[str, Any]) -> None:
    """The Python model verifies its copy of the bundle when Triton loads it: a changed byte refuses the load."""
    from tritonclient.utils import InferenceServerException

    from xpr_deploy.triton import write_repository

    res = write_repository(work["static"], server.repo, name="tampered")
    py = next(m for m in res.models if m.platform == "python")
    onnx = py.path.parent / "bundle" / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[-10] ^= 0xFF
    onnx.write_bytes(bytes(data))
    c = client("http", server.http_url, TIMEOUT)
    with pytest.raises(InferenceServerException) as ei:
        c.load_model("tampered_python")
    assert "model.onnx" in str(ei.value) and "SHA-256" in str(ei.value), str(ei.value)
    assert not c.is_model_ready("tampered_python")
    assert c.is_model_ready("tiny_python")  # the others still serve


def test_port_in_use_and_failed_model_are_one_line_errors(work: dict[str, Any], server: TritonServer) -> None:
    with pytest.raises(ServeError, match=rf"127\.0\.0\.1:{server.http_port} \(HTTP port\) is in use"):
        TritonServer(server.repo, http_port=server.http_port, install=INSTALL).start(timeout=30)
    # a repository whose only model fails to load: the server stops, the error names model and cause
    bad = work["root"] / "bad-repo"
    shutil.copytree(server.repo / "tampered_python", bad / "tampered_python")
    with pytest.raises(ServeError) as ei:
        TritonServer(bad, install=INSTALL, log_path=work["root"] / "bad.log").start(timeout=120)
    msg = str(ei.value)
    assert "\n" not in msg and "'tampered_python' failed to load" in msg and "SHA-256" in msg, msg


def test_missing_server_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from xpr_deploy.serve import env

    monkeypatch.setattr(env, "_pytriton", lambda: None)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ServeError, match="no Triton server found: pip install --no-deps nvidia-pytriton"):
        find_server()


def test_server_killed_mid_load_clients_fail_fast_then_restart_serves(
    server: TritonServer, work: dict[str, Any]
) -> None:
    """SIGKILL while 4 clients send: every request either succeeds or fails with an error (connection
    refused/reset), none waits past TIMEOUT; after a restart on the same ports all succeed."""
    import threading

    views = _views(work, "dynamic")
    feeds = [{"cc": v[0], "mlo": v[1]} for v in views]
    single = [v[2] for v in views]
    result: dict[str, Any] = {}

    def load() -> None:
        result["r"] = run_load("http", server.http_url, "tdyn_python", feeds, single, clients=4, requests=40,
                               timeout=5.0, atol=1e-5)  # fmt: skip

    t = threading.Thread(target=load, daemon=True)
    t0 = time.monotonic()
    t.start()
    time.sleep(1.5)
    server.kill()
    t.join(5.0 * 45)
    assert not t.is_alive(), "clients hung after the server was killed"
    r = result["r"]
    assert r["hung_clients"] == 0 and r["failed"] > 0 and r["mismatches"] == 0, r
    assert time.monotonic() - t0 < 120
    assert any(w in e.lower() for e in r["errors"] for w in ("connect", "refused", "reset", "closed", "broken")), r
    server.start(timeout=180)
    r = run_load("http", server.http_url, "tdyn_python", feeds, single, clients=4, requests=10, timeout=TIMEOUT,
                 atol=1e-5)  # fmt: skip
    assert r["failed"] == 0 and r["succeeded"] == 40 and r["mismatches"] == 0, r


def test_xpr_serve_cli_starts_prints_endpoints_and_stops_on_ctrl_c(work: dict[str, Any]) -> None:
    ports = free_ports(3)
    cmd = [
        sys.executable, "-m", "xpr_deploy.cli", "serve", str(work["static"]), "--repo", str(work["root"] / "cli-repo"),
        "--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2]),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 180
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C" in line:
                break
        out = "".join(lines)
        assert proc.poll() is None, out  # still serving
        assert f"http://127.0.0.1:{ports[0]}" in out and f"grpc://127.0.0.1:{ports[1]}" in out, out
        c = client("http", f"127.0.0.1:{ports[0]}", TIMEOUT)
        assert c.is_model_ready("tiny_python")
        c.close()
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        # Ctrl-C is exit 130 as the README says (issue 21), with one line, and the server stopped
        assert proc.returncode == 130, out + rest
        assert rest.strip().splitlines()[-1] == "error: interrupted (SIGINT): stopped, temporary files removed", rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_doctor_names_the_server_and_its_backends() -> None:
    from xpr_deploy.doctor import run_checks

    checks = {c.name: c for c in run_checks()}
    t = checks["Triton server"]
    assert t.ok and "python" in t.detail and str(INSTALL.binary) in t.detail
