"""`xpr listen` options against real peers on 127.0.0.1: inference on a real Triton server (`--triton`),
the image selection and result kinds (`--prefer`, `--seg`), TLS on the results sent out (a pynetdicom
Storage SCP over TLS; a peer with a certificate from the wrong CA), and `xpr predict --dicomweb
--prefer` against a real Orthanc.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from peers import DICOMWEB_PLUGIN, REPO, Listen, Orthanc, TlsProxy, TlsStoreSCP, free_port, need, storescu
from test_listen import _approx, _cert, _received, _results_once, _sr_probs
from test_selection import mixed_study, write_clean_study

from xpr_deploy.dicom_out import sr_probabilities

QUIET = "1"


@pytest.fixture(scope="module")
def bundle(tiny_selection_bundle: Path) -> Path:
    """The tiny model with kept-window outputs (heatmaps), name "tiny" (conftest: exported once per session)."""
    return tiny_selection_bundle


@pytest.fixture(scope="module")
def combo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A combo study: acquired 2D, a synthesized 2D R CC (other pixels) and a tomosynthesis object."""
    root = tmp_path_factory.mktemp("listen_combo")
    return mixed_study(write_clean_study(root), root, "combo")


def _probs(bundle: Path, folder: Path, **kw: Any) -> dict[str, float]:
    from xpr_deploy.predict import predict

    return {b.laterality: b.prob for b in predict(bundle, [folder], **kw).breasts}


def _uid(folder: Path) -> str:
    return str(pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True).StudyInstanceUID)


# ---- --prefer synthesized, --seg fractional --------------------------------------------------------


def test_listen_prefer_synthesized_and_fractional_heatmaps(bundle, combo, dest, tmp_path) -> None:
    acquired, synthesized = _probs(bundle, combo), _probs(bundle, combo, prefer="synthesized")
    assert acquired["R"] != pytest.approx(synthesized["R"], abs=1e-6)  # the synthesized CC has other pixels
    node = Listen(
        tmp_path, bundle, "--send-to", f"{dest.aet}@127.0.0.1:{dest.port}", "--allow", "STORESCU",
        "--quiet-seconds", QUIET, "--prefer", "synthesized", "--seg", "fractional",
    )  # fmt: skip
    try:
        line = node.answer(sorted(combo.iterdir()), _uid(combo))
    finally:
        node.stop()
    assert "stored 5" in line and "2 images left out by the selection" in line, line
    got = _received(dest)
    assert all(len(v) == 1 for v in got.values())
    files = [v[0] for v in got.values()]
    _approx(_sr_probs(files), synthesized)
    segs = [pydicom.dcmread(f) for f in files if pydicom.dcmread(f, stop_before_pixels=True).Modality == "SEG"]
    assert len(segs) == 4 and {s.SegmentationType for s in segs} == {"FRACTIONAL"}


def test_listen_bad_options_are_one_line(bundle, tmp_path) -> None:
    for args, needle, code in (
        (("--seg", "colour"), "colour", 2),
        (("--sr", "nope"), "nope", 2),
        (("--send-tls-ca", "/nope.pem"), "/nope.pem", 2),
        (("--send-tls-cert", "x.pem"), "go together", 2),
        (("--stow", "https://x/dicom-web", "--stow-ca", "/nope.pem"), "/nope.pem", 2),
        (("--triton", "ftp://x"), "expected http://HOST:PORT", 4),
        (("--triton", f"http://127.0.0.1:{free_port()}"), "liveness check failed", 4),
    ):
        r = subprocess.run(
            [sys.executable, "-m", "xpr_deploy.cli", "listen", str(bundle), "--send-to", "P@127.0.0.1:104",
             "--spool", str(tmp_path / "s"), *args],
            capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
        )  # fmt: skip
        lines = r.stderr.strip().splitlines()
        assert r.returncode == code and needle in r.stderr and len(lines) == 1, (args, r.stderr)


# ---- inference on a real Triton server -------------------------------------------------------------


@pytest.fixture(scope="module")
def triton(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real tritonserver (CPU, Python backend) serving `xpr triton`'s repository of the bundle."""
    from xpr_deploy.serve import ServeError, TritonServer, find_server
    from xpr_deploy.triton import write_repository

    try:
        install = find_server()
    except ServeError as exc:
        need(None, f"tritonserver ({exc})")
    pytest.importorskip("tritonclient.http", reason="tritonclient[http] not installed")
    root = tmp_path_factory.mktemp("triton")
    write_repository(bundle, root / "repo")
    args = ("--model-control-mode", "explicit", "--load-model", "tiny_python")
    srv = TritonServer(root / "repo", install=install, log_path=root / "tritonserver.log", extra_args=args)
    srv.start(timeout=180)
    yield srv
    srv.stop()


def test_listen_on_triton_gives_the_local_runners_answer(bundle, combo, triton, dest, tmp_path) -> None:
    want = _probs(bundle, combo)
    url = f"http://{triton.http_url}" if "://" not in triton.http_url else triton.http_url
    node = Listen(
        tmp_path, bundle, "--send-to", f"{dest.aet}@127.0.0.1:{dest.port}", "--allow", "STORESCU",
        "--quiet-seconds", QUIET, "--triton", url,
    )  # fmt: skip
    try:
        line = node.answer(sorted(combo.iterdir()), _uid(combo))
    finally:
        node.stop()
    assert "stored 5" in line, line  # the SR and the four heatmaps: the served model returns kept windows too
    _results_once(dest, want)


def test_predict_on_triton_and_its_errors(bundle, combo, triton, tmp_path) -> None:
    from xpr_deploy.predict import predict

    url = triton.http_url if "://" in triton.http_url else f"http://{triton.http_url}"
    rep = predict(bundle, [combo], triton=url)
    assert rep.backend == "triton" and rep.runner["model"] == "tiny_python"
    _approx({b.laterality: b.prob for b in rep.breasts}, _probs(bundle, combo))
    if importlib.util.find_spec("tritonclient.grpc") is not None:
        rep = predict(bundle, [combo], triton=f"grpc://{triton.grpc_url}")
        _approx({b.laterality: b.prob for b in rep.breasts}, _probs(bundle, combo))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "xpr_deploy.cli", "predict", str(bundle), str(combo), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO, check=False)

    down = f"http://127.0.0.1:{free_port()}"
    for args, needle in (
        (("--triton", down), down),
        (("--triton", url, "--triton-model", "absent"), "'absent' is not loaded"),
        (("--triton", "ftp://x"), "expected http://HOST:PORT"),
    ):
        r = cli(*args)
        assert r.returncode == 4 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = cli("--triton", url, "--backend", "onnx")
    assert r.returncode == 2 and "--triton" in r.stderr, r.stderr


def test_triton_serving_another_bundle_is_refused(bundle, combo, triton, tmp_path) -> None:
    """The same model name on the server, another bundle here: refused, one line (exit 4)."""
    from xpr_deploy.export.bundle import ExportOptions, export_bundle, load_source

    model, meta = load_source(None, "tiny", 1)
    other = export_bundle(model, meta, tmp_path / "other", ExportOptions(engine=False, parity_samples=0, name="tiny"))
    url = triton.http_url if "://" in triton.http_url else f"http://{triton.http_url}"
    cmd = [sys.executable, "-m", "xpr_deploy.cli", "predict", str(other.path), str(combo), "--triton", url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO, check=False)
    assert r.returncode == 4 and "serves bundle" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


# ---- TLS on the results sent out --------------------------------------------------------------------


def test_results_by_c_store_over_tls_wrong_ca_then_right_one(bundle, combo, tmp_path) -> None:
    """The destination first presents a certificate from another CA: the send fails with one line and is
    retried; with a certificate from the CA given, every result arrives once."""
    need(shutil.which("openssl"), "openssl")
    ca = _cert(tmp_path, "xpr-test-ca", None)
    good_key, good_crt = _cert(tmp_path, "pacs", ca)
    bad_key, bad_crt = _cert(tmp_path, "impostor", _cert(tmp_path, "other-ca", None))
    port = free_port()
    peer = TlsStoreSCP(tmp_path / "bad", bad_crt, bad_key, port=port)
    node = Listen(
        tmp_path, bundle, "--send-to", f"{peer.aet}@127.0.0.1:{port}", "--allow", "STORESCU",
        "--quiet-seconds", QUIET, "--retry-max-seconds", "1", "--send-tls-ca", str(ca[1]),
    )  # fmt: skip
    good = None
    try:
        assert storescu(sorted(combo.iterdir()), node.port).returncode == 0
        node.wait_for("not stored (attempt", count=2)
        warn = next(ln for ln in node.log().splitlines() if "not stored (attempt" in ln)
        assert "TLS handshake failed" in warn and "certificate verify failed" in warn, warn
        assert not peer.files()
        peer.stop()
        good = TlsStoreSCP(tmp_path / "good", good_crt, good_key, port=port)
        line = node.wait_for(f"study {_uid(combo)}:").splitlines()[-1]
    finally:
        node.stop()
        if good is not None:
            good.stop()
    assert f"dimse+tls:{peer.aet}@127.0.0.1:{port} stored 5" in line, line
    sops = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in good.files()]
    assert len(sops) == 5 and len(set(sops)) == 5
    srs = [f for f in good.files() if pydicom.dcmread(f, stop_before_pixels=True).Modality == "SR"]
    _approx(sr_probabilities(srs[0])[1], _probs(bundle, combo))


# ---- xpr predict --dicomweb runs the same selection -------------------------------------------------


def test_predict_dicomweb_prefer_synthesized(bundle, combo, tmp_path) -> None:
    if not DICOMWEB_PLUGIN.is_file():
        need(None, "Orthanc's DICOMweb plugin")
    orthanc = Orthanc(tmp_path / "orthanc")
    try:
        for f in combo.iterdir():
            orthanc.upload(f)

        def run(*extra: str) -> dict[str, Any]:
            cmd = [sys.executable, "-m", "xpr_deploy.cli", "predict", str(bundle), "--dicomweb", orthanc.dicomweb,
                   "--study", _uid(combo), "--json", *extra]  # fmt: skip
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=REPO, check=False)
            assert r.returncode == 0, r.stderr
            return dict(json.loads(r.stdout))

        synthesized = _probs(bundle, combo, prefer="synthesized")
        cases = (((), _probs(bundle, combo)), (("--prefer", "synthesized"), synthesized))
        for extra, want in cases:
            out = run(*extra)
            _approx({b["laterality"]: b["prob"] for b in out["breasts"]}, want)
            assert any("synthesized" in n["reason"] or "tomosynthesis" in n["reason"] for n in out["not_used"])
        strict = run("--strict")  # the R breast holds a choice: rejected; L still answered
        assert [b["laterality"] for b in strict["breasts"]] == ["L"]
    finally:
        orthanc.stop()


def test_results_by_stow_over_https_verified_with_the_ca(bundle, combo, tmp_path) -> None:
    """`--stow https://... --stow-ca CA`: Orthanc behind a TLS front gets the results; a CA that did not
    sign its certificate is one line naming the server (the send would be retried, nothing recorded)."""
    from xpr_deploy.dicomweb import DicomWebError, Pacs

    need(shutil.which("openssl"), "openssl")
    if not DICOMWEB_PLUGIN.is_file():
        need(None, "Orthanc's DICOMweb plugin")
    ca = _cert(tmp_path, "xpr-test-ca", None)
    key, crt = _cert(tmp_path, "pacs", ca)
    other_ca = _cert(tmp_path, "other-ca", None)
    orthanc = Orthanc(tmp_path / "orthanc")
    proxy = TlsProxy(orthanc.port, crt, key)
    url = f"https://127.0.0.1:{proxy.port}/dicom-web"
    node = None
    try:
        mammogram = next(iter(combo.iterdir()))
        with pytest.raises(DicomWebError) as e:
            Pacs(url, ca=other_ca[1]).store([pydicom.dcmread(mammogram)])
        assert "certificate verify failed" in str(e.value) and len(str(e.value).splitlines()) == 1, e.value
        assert orthanc.study_id(_uid(combo)) is None  # nothing reached the server
        node = Listen(
            tmp_path, bundle, "--stow", url, "--stow-ca", str(ca[1]), "--allow", "STORESCU",
            "--quiet-seconds", QUIET,
        )  # fmt: skip
        line = node.answer(sorted(combo.iterdir()), _uid(combo))
        assert f"stow:{url} stored 5" in line, line
        results = [i for i in orthanc.instances(_uid(combo)) if i["Modality"] in ("SR", "SEG")]
        assert len(results) == 5
        # the same https PACS read by `xpr predict --dicomweb --ca`: verified, the node's probabilities
        from typer.testing import CliRunner

        from xpr_deploy.cli import app

        for f in sorted(combo.iterdir()):
            orthanc.upload(f)
        args = ["predict", str(bundle), "--dicomweb", url, "--study", _uid(combo), "--json"]
        r = CliRunner().invoke(app, [*args, "--ca", str(ca[1])])
        assert r.exit_code == 0, r.output
        got = {b["laterality"]: b["prob"] for b in json.loads(r.stdout)["breasts"]}
        assert got == pytest.approx(_probs(bundle, combo), abs=1e-5)
        cmd = [sys.executable, "-m", "xpr_deploy.cli", *args, "--ca", str(other_ca[1])]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO, check=False)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 4 and len(lines) == 1 and "certificate verify failed" in lines[0], p.stderr
    finally:
        if node is not None:
            node.stop()
        proxy.stop()
        orthanc.stop()


def test_listen_tls_options_as_library_calls(tmp_path: Path) -> None:
    """What `xpr listen` checks of its TLS options, callable without the command line: the server
    certificate and key go together and a CA only with them; a CA or a client certificate for
    --send-to implies TLS, and the client certificate and key go together."""
    from xpr_deploy.node import NodeError
    from xpr_deploy.node.sender import SendTls
    from xpr_deploy.node.service import Tls, incoming_tls, outgoing_tls

    c, k, ca = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem"
    assert incoming_tls(None, None, None) is None and incoming_tls(c, k, ca) == Tls(c, k, ca)
    for args in ((c, None, None), (None, k, None), (None, None, ca)):
        with pytest.raises(NodeError, match=r"^TLS needs --tls-cert and --tls-key \(and --tls-ca only with them\)$"):
            incoming_tls(*args)
    assert outgoing_tls(False, None, None, None) is None
    assert outgoing_tls(True, None, None, None) == SendTls()
    assert outgoing_tls(False, ca, None, None) == SendTls(ca) and outgoing_tls(False, None, c, k) == SendTls(None, c, k)
    with pytest.raises(NodeError, match=r"^--send-tls-cert and --send-tls-key go together$"):
        outgoing_tls(True, None, c, None)
