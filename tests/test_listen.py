"""Issue 22 part 4: `xpr listen`, a DICOM node, against real peers on 127.0.0.1.

Orthanc sends a study by C-STORE (its REST `/modalities/xpr/store`) and gets the SR and the heatmap
Segmentations back by C-STORE, read back with highdicom; DCMTK's storescu is a second sender and
storescp a destination that keeps every object it receives as its own file (so a duplicate send
would show). `kill -9` at the points that matter (mid-reception, after inference, with a result on
the wire, after an acknowledgement), a destination that is down, an unknown caller, a corrupt
instance and a full spool, each with the node as a real subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pydicom
import pytest
from peers import Listen, Orthanc, StoreSCP, free_port, need, storescu
from test_export_support import xpr_main

from xpr_deploy.dicom_out import sr_probabilities
from xpr_deploy.node import parse_caller, parse_peer
from xpr_deploy.node.queue import Queue
from xpr_deploy.node.sender import backoff

QUIET = "1"  # seconds without a new instance before a study is complete


@pytest.fixture(scope="module")
def bundle(tiny_selection_bundle: Path) -> Path:
    """The tiny model with kept-window outputs (heatmaps), name "tiny" (conftest: exported once per session)."""
    return tiny_selection_bundle


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, list[Path]]]:
    """Three synthetic four-view studies (mixed transfer syntaxes): (StudyInstanceUID, files)."""
    from xpr_deploy.data.synth import write_synthetic

    root = tmp_path_factory.mktemp("listen_synth") / "vindr"
    write_synthetic(root, 6, "vindr", size=(320, 160), seed=22)
    out = []
    for folder in sorted((root / "images").iterdir()):
        files = sorted(folder.iterdir())
        out.append((str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID), files))
    assert len(out) == 3 and all(len(f) == 4 for _, f in out)
    return out


@pytest.fixture(scope="module")
def expected(bundle: Path, studies: list[tuple[str, list[Path]]]) -> dict[str, dict[str, float]]:
    """`xpr predict` on each study's folder: {study UID: {laterality: P(malignant)}}."""
    from xpr_deploy.predict import predict

    rep = predict(bundle, [files[0].parent for _, files in studies])
    out: dict[str, dict[str, float]] = {}
    for b in rep.breasts:
        out.setdefault(b.study, {})[b.laterality] = b.prob
    return out


def _received(d: StoreSCP) -> dict[str, list[Path]]:
    """SOP Instance UID -> the files storescp wrote for it (two files: it was sent twice)."""
    out: dict[str, list[Path]] = {}
    for f in d.files():
        out.setdefault(str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID), []).append(f)
    return out


def _results_once(d: StoreSCP, want: dict[str, float], objects: int = 5) -> dict[str, list[Path]]:
    """The destination holds each of the study's `objects` results once, and the SR's probabilities are `want`."""
    got = _received(d)
    assert len(got) == objects and all(len(v) == 1 for v in got.values()), got
    _approx(_sr_probs([v[0] for v in got.values()]), want)
    return got


def _sr_probs(files: list[Path]) -> dict[str, float]:
    srs = [f for f in files if pydicom.dcmread(f, stop_before_pixels=True).Modality == "SR"]
    assert len(srs) == 1, srs
    return sr_probabilities(srs[0])[1]


def _approx(got: dict[str, float], want: dict[str, float]) -> None:
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-5), k


def _node(tmp: Path, bundle: Path, d: StoreSCP, *extra: str, **kw: object) -> Listen:
    return Listen(
        tmp,
        bundle,
        "--send-to",
        f"{d.aet}@127.0.0.1:{d.port}",
        "--allow",
        "STORESCU@127.0.0.1",
        "--quiet-seconds",
        QUIET,
        *extra,
        **kw,
    )  # type: ignore[arg-type]


# ---- Orthanc: a PACS sends, gets the SR and the heatmaps back --------------------------------------


def test_orthanc_sends_a_study_and_stores_the_results_once(bundle, studies, expected, tmp_path: Path) -> None:
    import highdicom as hd

    xpr_port = free_port()
    orthanc = Orthanc(tmp_path / "orthanc", {"xpr": ("XPR", xpr_port)})
    node = None
    try:
        node = Listen(
            tmp_path,
            bundle,
            "--send-to",
            f"ORTHANC@127.0.0.1:{orthanc.dicom_port}",
            "--quiet-seconds",
            QUIET,
            port=xpr_port,
        )  # by default only the --send-to peer may send
        uid, files = studies[0]
        study_id = {orthanc.upload(f)["ParentStudy"] for f in files}.pop()
        r = orthanc.send_to("xpr", study_id)
        assert r.ok, r.text
        line = node.wait_for(f"study {uid}:").splitlines()[-1]
        assert "dimse:ORTHANC@127.0.0.1" in line and "stored 5" in line and " L " in line and " R " in line

        insts = orthanc.instances(uid)
        by_mod: dict[str, list[dict]] = {}
        for i in insts:
            by_mod.setdefault(i["Modality"], []).append(i)
        assert len(by_mod["MG"]) == 4 and len(by_mod["SR"]) == 1 and len(by_mod["SEG"]) == 4
        sr = orthanc.file(by_mod["SR"][0]["ID"], tmp_path / "sr.dcm")
        study, probs = sr_probabilities(sr)
        assert study == uid
        _approx(probs, expected[uid])
        mg_uids = {i["MainDicomTags"]["SOPInstanceUID"] for i in by_mod["MG"]}
        for k, i in enumerate(by_mod["SEG"]):
            seg = hd.seg.segread(orthanc.file(i["ID"], tmp_path / f"seg{k}.dcm"))
            assert seg.StudyInstanceUID == uid
            assert {
                str(r.ReferencedSOPInstanceUID) for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
            } <= mg_uids

        # the whole study again, xpr's results in it: the mammograms are duplicates (one file per SOP
        # Instance UID), the SR and SEG are acknowledged and dropped, nothing new is made or sent
        r = orthanc.send_to("xpr", study_id)
        assert r.ok, r.text
        assert len(orthanc.instances(uid)) == 9

        health = node.get("/health")
        assert health.status_code == 200 and health.json()["studies"]["sent"] == 1
        metrics = node.get("/metrics").text
        assert 'xpr_listen_studies{state="sent"} 1' in metrics
        assert "xpr_listen_instances_received_total 4" in metrics
        assert "xpr_listen_instances_duplicate_total 4" in metrics
        assert "xpr_listen_instances_ignored_total 5" in metrics
        assert (
            f'xpr_listen_results_sent_total{{destination="dimse:ORTHANC@127.0.0.1:{orthanc.dicom_port}"}} 5' in metrics
        )
        assert node.stop(signal.SIGTERM) == 143
        node = None
    finally:
        if node is not None:
            node.stop()
        orthanc.stop()


def test_orthanc_crash_with_a_result_on_the_wire_stores_each_object_once(bundle, studies, expected, tmp_path) -> None:
    """kill -9 after Orthanc acknowledged the first result and before the node recorded it: the restart
    sends it again, the same SOP instance (derived UID), and Orthanc still holds each result once."""
    xpr_port = free_port()
    orthanc = Orthanc(tmp_path / "orthanc", {"xpr": ("XPR", xpr_port)})
    node = None
    try:
        args = ("--send-to", f"ORTHANC@127.0.0.1:{orthanc.dicom_port}", "--quiet-seconds", QUIET)
        node = Listen(tmp_path, bundle, *args, port=xpr_port, env={"XPR_FAULT_KILL": "listen:on-wire"})
        uid, files = studies[1]
        study_id = {orthanc.upload(f)["ParentStudy"] for f in files}.pop()
        assert orthanc.send_to("xpr", study_id).ok
        assert node.proc.wait(timeout=120) == -signal.SIGKILL
        assert len([i for i in orthanc.instances(uid) if i["Modality"] in ("SR", "SEG")]) == 1

        node = Listen(tmp_path, bundle, *args, port=xpr_port, name="restart")
        node.wait_for(f"study {uid}:")
        results = [i for i in orthanc.instances(uid) if i["Modality"] in ("SR", "SEG")]
        assert len(results) == 5  # not 6: the re-sent object is the same object
        sr = next(i for i in results if i["Modality"] == "SR")
        _approx(sr_probabilities(orthanc.file(sr["ID"], tmp_path / "sr.dcm"))[1], expected[uid])
        assert node.stop(signal.SIGINT) == 130
        node = None
    finally:
        if node is not None:
            node.stop()
        orthanc.stop()


# ---- storescu as a sender, storescp as the destination ------------------------------------------------


@pytest.mark.parametrize("point", ["listen:predicted", "listen:acked"])
def test_kill9_then_restart_sends_every_result_exactly_once(bundle, studies, expected, dest, tmp_path, point) -> None:
    """Killed after inference (results written, `predicted` not committed) or right after the first
    acknowledgement was recorded: after the restart every object reaches the destination once."""
    uid, files = studies[2]
    node = _node(tmp_path, bundle, dest, env={"XPR_FAULT_KILL": point})
    r = storescu(files, node.port)
    assert r.returncode == 0, r.stderr
    assert node.proc.wait(timeout=120) == -signal.SIGKILL
    before = _received(dest)
    node = _node(tmp_path, bundle, dest, port=node.port, name="restart")
    try:
        line = node.wait_for(f"study {uid}:").splitlines()[-1]
    finally:
        node.stop()
    _results_once(dest, expected[uid])
    assert len(before) == (1 if point == "listen:acked" else 0)
    assert ("(1 earlier)" in line) == (point == "listen:acked")


def test_kill9_mid_reception_then_the_rest_gives_one_answer(bundle, studies, expected, dest, tmp_path) -> None:
    """Two instances received, kill -9, restart, the other two: one SR with both breasts, each object once."""
    uid, files = studies[0]
    node = _node(tmp_path, bundle, dest, "--quiet-seconds", "30")
    assert storescu(files[:2], node.port).returncode == 0
    node.kill9()
    node = _node(tmp_path, bundle, dest, port=node.port, name="restart")
    try:
        node.answer(files[2:], uid)
    finally:
        node.stop()
    _results_once(dest, expected[uid])


def test_destination_down_results_arrive_when_it_comes_back(bundle, studies, expected, tmp_path) -> None:
    uid, files = studies[1]
    port = free_port()
    node = Listen(
        tmp_path,
        bundle,
        "--send-to",
        f"DEST@127.0.0.1:{port}",
        "--allow",
        "STORESCU",
        "--quiet-seconds",
        QUIET,
        "--retry-max-seconds",
        "1",
    )
    d = None
    try:
        assert storescu(files, node.port).returncode == 0
        node.wait_for("not stored (attempt", count=2)
        assert "retrying in" in node.log()
        d = StoreSCP(tmp_path / "dest", port=port)
        node.wait_for(f"study {uid}:")
    finally:
        node.stop()
        if d is not None:
            d.stop()
    _results_once(d, expected[uid])


def test_corrupt_instance_the_other_breast_is_still_answered(bundle, studies, expected, dest, tmp_path) -> None:
    uid, files = studies[0]
    copies = []
    for f in files:
        copies.append(shutil.copy(f, tmp_path / f.name))
    victim = next(Path(c) for c in copies if pydicom.dcmread(c).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1")
    ds = pydicom.dcmread(victim)
    lat = str(ds.ImageLaterality)
    ds.Rows = int(ds.Rows) * 2  # the pixel data is now half of what the header promises
    ds.save_as(victim)
    node = _node(tmp_path, bundle, dest)
    try:
        line = node.answer([Path(c) for c in copies], uid)
    finally:
        node.stop()
    assert "not used" in line and "stored 3" in line  # the SR and the other breast's two heatmaps
    other = "R" if lat == "L" else "L"
    got = _received(dest)
    _approx(_sr_probs([v[0] for v in got.values()]), {other: expected[uid][other]})


def test_unknown_callers_are_rejected_at_association(bundle, studies, dest, tmp_path) -> None:
    _uid, files = studies[0]
    node = Listen(
        tmp_path,
        bundle,
        "--send-to",
        f"{dest.aet}@127.0.0.1:{dest.port}",
        "--allow",
        "STORESCU@127.0.0.1",
        "--allow",
        "FAR@192.0.2.7",
        "--quiet-seconds",
        QUIET,
        "--max-instance-mb",
        "0.01",
    )
    try:
        for aet in ("NOBODY", "FAR", dest.aet):  # unknown; known but from another host; the destination's AE
            r = storescu(files[:1], node.port, aet=aet)
            assert r.returncode != 0 and "Calling AE Title Not Recognized" in r.stderr, (aet, r.stderr)
        echo = subprocess.run(
            [
                need(shutil.which("echoscu"), "DCMTK echoscu"),
                "-aet",
                "STORESCU",
                "-aec",
                "XPR",
                "127.0.0.1",
                str(node.port),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert echo.returncode == 0, echo.stderr
        big = storescu(files[:1], node.port)  # allowed, but over --max-instance-mb: out of resources
        assert big.returncode != 0 and "outofresources" in (big.stdout + big.stderr).lower(), big.stderr
        assert not list((node.spool / "incoming").rglob("*.dcm"))
        metrics = node.get("/metrics").text
        assert 'xpr_listen_associations_rejected_total{reason="caller"} 3' in metrics
        assert 'xpr_listen_instances_refused_total{reason="out_of_resources"} 1' in metrics
    finally:
        node.stop()


def test_full_spool_refuses_the_association(bundle, studies, dest, tmp_path) -> None:
    _uid, files = studies[0]
    node = _node(tmp_path, bundle, dest, "--min-free-mb", str(1 << 40))
    try:
        r = storescu(files[:1], node.port)
        assert r.returncode != 0 and "Rejected Transient" in r.stderr and "Temporary Congestion" in r.stderr, r.stderr
        assert node.get("/health").status_code == 503
    finally:
        node.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_disk_full_mid_study_refuses_with_out_of_resources_and_keeps_what_was_acknowledged(
    bundle, studies, dest, tmp_path
) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mnt)], check=True)
    node = None
    try:
        node = Listen(
            tmp_path,
            bundle,
            "--send-to",
            f"{dest.aet}@127.0.0.1:{dest.port}",
            "--allow",
            "STORESCU",
            "--quiet-seconds",
            "600",
            "--min-free-mb",
            "0",
            spool=mnt / "spool",
        )
        files = [f for _, fs in studies for f in fs]
        r = storescu(files, node.port)
        assert r.returncode != 0 and "outofresources" in (r.stdout + r.stderr).lower(), r.stderr
        metrics = node.get("/metrics").text
        acked = int(
            next(ln.split()[-1] for ln in metrics.splitlines() if ln.startswith("xpr_listen_instances_received_total"))
        )
        assert acked >= 1
        q = Queue(node.spool / "queue.sqlite")
        try:
            paths = [Path(p) for s in _study_uids(q) for p in q.instance_paths(s)]
        finally:
            q.close()
        assert len(paths) == acked and all(pydicom.dcmread(p).SOPInstanceUID for p in paths)
    finally:
        if node is not None:
            node.stop()
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _study_uids(q: Queue) -> list[str]:
    with q._lock:
        return [r[0] for r in q._db.execute("SELECT uid FROM studies")]


# ---- options and small parts ---------------------------------------------------------------------


def _main(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    """`xpr ARGS` in this process (test_export_support.xpr_main): (exit code, stderr)."""
    code, _, err = xpr_main(capsys, monkeypatch, *args)
    return code, err


def test_bad_options_are_one_line(bundle, tmp_path: Path, capsys, monkeypatch) -> None:
    def fails(*args: str, code: int = 2) -> str:
        got, err = _main(capsys, monkeypatch, "listen", str(bundle), "--spool", str(tmp_path / "s"), *args)
        lines = err.strip().splitlines()
        assert got == code and len(lines) == 1 and lines[0].startswith("error:"), (got, err)
        return lines[0]

    assert "--send-to" in fails()
    assert "AE@HOST:PORT" in fails("--send-to", "PACS@host")
    assert "1..65535" in fails("--send-to", "PACS@host:0")
    assert "AE title" in fails("--send-to", "A" * 17 + "@h:104")
    code, err = _main(capsys, monkeypatch, "listen", str(bundle), "--send-to", "P@h:104", "--other-classes", "maybe")
    assert code == 2 and "'maybe' is not one of 'ignore', 'refuse'" in err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        line = fails("--send-to", "P@127.0.0.1:104", "--bind", "127.0.0.1", "--port", str(s.getsockname()[1]))
    assert "cannot listen" in line and len(line.splitlines()) == 1


def test_missing_bundle_is_refused_before_listening(tmp_path: Path, capsys, monkeypatch) -> None:
    code, err = _main(
        capsys, monkeypatch, "listen", str(tmp_path / "nope"), "--send-to", "P@h:104", "--spool", str(tmp_path / "s")
    )
    assert code in (2, 3) and "nope" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "s").exists()


def test_peer_and_caller_parsing() -> None:
    assert str(parse_peer("PACS@10.0.0.5:104")) == "PACS@10.0.0.5:104"
    assert parse_peer("PACS@[::1]:11112").host == "::1"
    c = parse_caller("MOD@127.0.0.1")
    assert c.admits("MOD", "127.0.0.1") and not c.admits("MOD", "10.0.0.1") and not c.admits("OTHER", "127.0.0.1")
    assert parse_caller("MOD").admits("MOD ", "10.0.0.1")
    assert [backoff(a, 2, 30) for a in (1, 2, 3, 4, 5, 6)] == [2, 4, 8, 16, 30, 30]


def test_queue_reopens_a_study_when_a_late_instance_arrives(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.sqlite")
    try:
        assert q.add_instance("1.2", "1.2.1", "c", "p1", "A", now=0)
        assert not q.add_instance("1.2", "1.2.1", "c", "p1", "A", now=1)  # the same SOP instance: nothing changes
        assert q.promote_quiet(5, now=10) == 1
        s = q.next_in("complete", now=10)
        assert s is not None and s.gen == 1
        assert q.add_instance("1.2", "1.2.2", "c", "p2", "A", now=11)  # late instance: back to received, gen 2
        assert not q.mark_predicted(s, {})  # the older generation's results are not recorded
        assert q.get("1.2").state == "received" and q.get("1.2").gen == 2  # type: ignore[union-attr]
        assert json.dumps(q.counts()) == json.dumps(
            {"received": 1, "complete": 0, "predicted": 0, "sent": 0, "failed": 0}
        )
    finally:
        q.close()


def test_other_classes_refused_when_asked(bundle, studies, dest, tmp_path) -> None:
    """`--other-classes refuse`: a Secondary Capture finds no presentation context; mammograms still go."""
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    _uid, files = studies[0]
    ds = pydicom.dcmread(
        next(f for f in files if pydicom.dcmread(f).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian)
    )
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(tmp_path / "sc.dcm")
    node = _node(tmp_path, bundle, dest, "--other-classes", "refuse", "--quiet-seconds", "600")
    try:
        r = storescu([tmp_path / "sc.dcm"], node.port)
        assert r.returncode != 0 and "presentation context" in r.stderr.lower(), r.stderr
        assert storescu(files[:1], node.port).returncode == 0
        assert len(list((node.spool / "incoming").rglob("*.dcm"))) == 1
    finally:
        node.stop()


def _cert(tmp: Path, name: str, ca: tuple[Path, Path] | None) -> tuple[Path, Path]:
    """A 2048-bit RSA key and its certificate for 127.0.0.1 (self-signed when `ca` is None)."""
    key, crt = tmp / f"{name}.key", tmp / f"{name}.pem"
    subj = ["-subj", f"/CN={name}"]
    if ca is None:
        cmd = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt, "-days", "1"]
        subprocess.run([*map(str, cmd), *subj], check=True, capture_output=True)
        return key, crt
    csr, ext = tmp / f"{name}.csr", tmp / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    req = ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr]
    subprocess.run([*map(str, req), *subj], check=True, capture_output=True)
    sign = ["openssl", "x509", "-req", "-in", csr, "-CA", ca[1], "-CAkey", ca[0], "-CAcreateserial", "-out", crt,
            "-days", "1", "-extfile", ext]  # fmt: skip
    subprocess.run(list(map(str, sign)), check=True, capture_output=True)
    return key, crt


def test_tls_callers_need_a_certificate_from_the_ca(bundle, dest, tmp_path) -> None:
    need(shutil.which("openssl"), "openssl")
    need(shutil.which("echoscu"), "DCMTK echoscu")
    ca = _cert(tmp_path, "xpr-test-ca", None)
    srv_key, srv_crt = _cert(tmp_path, "node", ca)
    cli_key, cli_crt = _cert(tmp_path, "modality", ca)
    other_ca = _cert(tmp_path, "other-ca", None)
    stranger_key, stranger_crt = _cert(tmp_path, "stranger", other_ca)
    tls = ("--tls-cert", str(srv_crt), "--tls-key", str(srv_key), "--tls-ca", str(ca[1]))
    node = _node(tmp_path, bundle, dest, *tls)

    def echo(*opts: str) -> subprocess.CompletedProcess[str]:
        cmd = ["echoscu", *opts, "-aet", "STORESCU", "-aec", "XPR", "127.0.0.1", str(node.port)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)

    try:
        ok = echo("+tls", str(cli_key), str(cli_crt), "+cf", str(ca[1]))
        assert ok.returncode == 0, ok.stderr
        assert echo().returncode != 0  # plain TCP
        assert echo("+tls", str(stranger_key), str(stranger_crt), "+cf", str(ca[1])).returncode != 0
    finally:
        node.stop()


def test_results_by_stow_rs(bundle, studies, expected, tmp_path) -> None:
    """`--stow URL` only: storescu sends, the results reach Orthanc's DICOMweb (STOW-RS)."""
    from peers import DICOMWEB_PLUGIN

    if not DICOMWEB_PLUGIN.is_file():
        if os.environ.get("CI"):
            pytest.fail("Orthanc's DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)")
        pytest.skip("Orthanc's DICOMweb plugin is not installed")
    uid, files = studies[2]
    orthanc = Orthanc(tmp_path / "orthanc")
    node = None
    try:
        node = Listen(tmp_path, bundle, "--stow", orthanc.dicomweb, "--allow", "STORESCU", "--quiet-seconds", QUIET)
        line = node.answer(files, uid)
        assert f"stow:{orthanc.dicomweb} stored 5" in line
        results = [i for i in orthanc.instances(uid) if i["Modality"] in ("SR", "SEG")]
        assert len(results) == 5
        sr = next(i for i in results if i["Modality"] == "SR")
        _approx(sr_probabilities(orthanc.file(sr["ID"], tmp_path / "sr.dcm"))[1], expected[uid])
    finally:
        if node is not None:
            node.stop()
        orthanc.stop()
