"""A PACS over DICOMweb (`dicomweb-client`): pull a study's MG instances (QIDO-RS + WADO-RS), predict,
and store the DICOM results back (STOW-RS).

`predict_dicomweb(model, url, study, store=True)`: the study's mammograms are fetched into a
temporary folder and go through `xpr predict` exactly as files would (read by `data.dicom`, the one
DICOM reader, with its budget); the SR and the heatmap Segmentations (`dicom_out.py`) are written
to `dicom_out` (or a temporary folder) and, with `store`, sent with STOW-RS. Result UIDs are derived
from the inputs and the model, so a rerun finds its objects already in the study (QIDO-RS) and
stores nothing twice.

The server is untrusted: every transaction (one QIDO-RS search, one WADO-RS instance, the STOW-RS,
retries included) ends within `timeout` seconds, however slowly the server sends, and no answer
may hold more than `max_bytes` before or after decompression (`session.py`). QIDO-RS answers are
checked (a list of DICOM JSON objects, UIDs that are UIDs); names of fetched files come from
`io.uid_name`. Every failure is one `DicomWebError` line naming the URL and the cause, in plain text
(the server's words are quoted, never interpreted): exit 4.
"""

from __future__ import annotations

import logging
import re
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ConfigError, PeerError, XprError
from ..io import child_path, uid_name, write_buffer
from .session import CappedSession, LimitExceeded, deadline, mib

if TYPE_CHECKING:
    import requests
    from pydicom import Dataset

    from ..predict import PredictReport

#: seconds a whole transaction (request, answer, retries) may take; seconds to connect
TIMEOUT_S = 60.0
CONNECT_S = 5.0
MAX_TIMEOUT_S = 86400.0
#: bytes one answer may hold, before and after decompression (a 2D mammogram is at most ~60 MB)
MAX_RESPONSE_BYTES = 256 << 20
#: attempts per request (a busy server's 503 or a refused connection: once more, within the same deadline)
RETRIES = 2
#: more MG instances than a mammography study holds: a broken or hostile answer
MAX_INSTANCES = 64
MG_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.1.2",  # Digital Mammography X-Ray Image - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.2.1",  # - For Processing
)
#: what a server may call a UID: digits and dots (leading zeros tolerated, as some modalities write
#: them); nothing else reaches a URL or a file name
_UIDISH = re.compile(r"^[0-9]+(\.[0-9]+)*$")

T = TypeVar("T")

# dicomweb-client logs server `Warning` headers and failed STOW items: ours are the one-line errors
logging.getLogger("dicomweb_client").addHandler(logging.NullHandler())


class DicomWebError(PeerError):
    """A DICOMweb request failed or was answered wrongly; the message names the URL and the cause."""


def _plain(text: object, limit: int = 160) -> str:
    """Server text as one short plain line: control characters out, length bounded."""
    s = " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _failure_reasons(resp: requests.Response) -> str:
    """What a STOW-RS (or other) error answer says: failure reasons of DICOM JSON, else its first line."""
    try:
        body = resp.content or b""
        ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
        # Orthanc's 409 carries its DICOM JSON with no Content-Type at all
        if ctype in ("application/dicom+json", "application/json") or (not ctype and body.lstrip()[:1] == b"{"):
            import json

            doc = json.loads(body)
            items = (doc.get("00081198") or {}).get("Value") or [] if isinstance(doc, dict) else []
            codes = []
            for item in items:
                v = ((item or {}).get("00081197") or {}).get("Value") if isinstance(item, dict) else None
                if isinstance(v, list) and v and isinstance(v[0], int):
                    codes.append(f"0x{v[0]:04X}")
            if codes:
                return f"failure reason {', '.join(dict.fromkeys(codes))}"
            return ""
        if ctype.startswith("text/") and body:
            line = next((ln for ln in body.decode("utf-8", "replace").splitlines() if ln.strip()), "")
            return _plain(line, 120)
    except Exception:  # an error answer we cannot read adds nothing to the status line
        pass
    return ""


def _cause(exc: BaseException, timeout: float) -> str:
    import http.client

    import requests
    from pydicom.errors import InvalidDicomError

    if isinstance(exc, LimitExceeded):
        return str(exc)
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"cannot connect within {CONNECT_S:g} s"
    if isinstance(exc, requests.exceptions.Timeout):
        return f"no complete answer within {timeout:g} s"
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS error: {_plain(_innermost(exc))}"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError):
        return f"the answer broke off or could not be decoded ({_plain(_innermost(exc))})"
    if isinstance(exc, requests.exceptions.ConnectionError):
        inner = _innermost(exc)
        if isinstance(inner, ConnectionRefusedError):
            return "cannot connect (server down or wrong address)"
        if isinstance(inner, ConnectionResetError):
            return "the server reset the connection"
        if isinstance(inner, http.client.RemoteDisconnected):
            return "the server closed the connection without an answer"
        if isinstance(inner, http.client.HTTPException):  # a status line or headers http.client refuses
            return f"malformed HTTP answer ({type(inner).__name__}: {_plain(inner, 80)})"
        return f"cannot connect (server down or wrong address): {_plain(inner)}"
    if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
        r = exc.response
        status = f"HTTP {r.status_code} {_plain(r.reason or '', 80)}".strip()
        detail = _failure_reasons(r)
        return f"{status} ({detail})" if detail else status
    if isinstance(exc, requests.exceptions.JSONDecodeError):
        return f"malformed answer (not JSON: {_plain(exc, 80)})"
    if isinstance(exc, requests.exceptions.RequestException):
        return _plain(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, InvalidDicomError):
        return "the answer is not a DICOM file"
    if isinstance(exc, KeyError):
        return f"malformed answer (no {_plain(exc.args[0] if exc.args else '?', 40)})"
    if isinstance(exc, ValueError | TypeError | AttributeError | IndexError | EOFError | OverflowError):
        return f"malformed answer ({_plain(exc)})"
    return _plain(f"{type(exc).__name__}: {exc}")


def _innermost(exc: BaseException) -> BaseException:
    """The root cause under requests' and urllib3's wrappers (an exception in args, .reason, or the cause)."""
    seen = {id(exc)}
    while True:
        nxt = next((a for a in exc.args if isinstance(a, BaseException)), None)
        if nxt is None and isinstance(getattr(exc, "reason", None), BaseException):
            nxt = exc.reason  # type: ignore[attr-defined]
        if nxt is None:
            nxt = exc.__cause__ or exc.__context__
        if nxt is None or id(nxt) in seen:
            return exc
        seen.add(id(nxt))
        exc = nxt


class Pacs:
    """One DICOMweb endpoint: every transaction ends within `timeout` s, every answer holds at most
    `max_bytes`, and every failure is one DicomWebError line."""

    def __init__(
        self, url: str, *, timeout: float = TIMEOUT_S, max_bytes: int = MAX_RESPONSE_BYTES, ca: str | Path | None = None
    ) -> None:
        """`ca`: a PEM file of the CA(s) an https server's certificate must verify against (None: the system's)."""
        from dicomweb_client import DICOMwebClient

        self.url = url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise DicomWebError(f"{_plain(url)}: not an http(s) DICOMweb URL")
        if not 0 < timeout <= MAX_TIMEOUT_S:
            raise ConfigError(f"--timeout {timeout:g}: give seconds in (0, {MAX_TIMEOUT_S:g}]")
        if not max_bytes >= 1 << 20:
            raise ConfigError(f"--max-response-mb {max_bytes / (1 << 20):g}: give at least 1 (MiB)")
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.session = CappedSession(timeout=timeout, max_bytes=max_bytes)
        if ca is not None:
            if not Path(ca).is_file():
                raise ConfigError(f"{ca}: no such CA file (PEM) to verify {_plain(url)}")
            self.session.ca = str(ca)
        self.client = DICOMwebClient(self.url, session=self.session, timeout=(CONNECT_S, timeout))
        # dicomweb-client retries 5 times with exponential back-off (about 30 s for a server that is
        # down); two tries, half a second apart, keep a busy server's 503 retried and a failure quick
        self.client.set_http_retry_params(retry=True, max_attempts=RETRIES, wait_exponential_multiplier=250)

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """One transaction under one deadline (its retries included); any failure is one line."""
        try:
            with deadline(self.timeout), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom / dicomweb-client warnings on odd answers
                return fn(*args, **kw)
        except XprError:
            raise
        except Exception as exc:  # requests / dicomweb-client / pydicom errors: one line with the URL
            raise DicomWebError(f"{self.url}: {what} failed: {_cause(exc, self.timeout)}") from None

    def _datasets(self, what: str, answer: object) -> list[dict[str, Any]]:
        """A QIDO-RS answer must be a list of DICOM JSON objects."""
        if not isinstance(answer, list) or not all(isinstance(i, dict) for i in answer):
            kind = type(answer).__name__ if not isinstance(answer, list) else "list with non-objects"
            raise DicomWebError(f"{self.url}: {what}: malformed answer (a {kind}, not a list of DICOM JSON objects)")
        return answer

    def _uid(self, what: str, item: dict[str, Any], tag: str, name: str) -> str:
        """A UID attribute of a QIDO-RS object: present, a string, digits and dots, at most 64 chars."""
        v = _value(item, tag)
        if not isinstance(v, str) or len(v) > 64 or not _UIDISH.match(v):
            shown = "missing" if v is None else f"{_plain(repr(v), 80)} is not a UID"
            raise DicomWebError(f"{self.url}: {what}: malformed answer ({name} {shown})")
        return v

    def mg_instances(self, study: str) -> list[tuple[str, str]]:
        """(series UID, SOP instance UID) of the study's mammograms; study not found / no MG fail."""
        what = "QIDO-RS search for the study"
        found = self._datasets(what, self._call(what, self.client.search_for_studies,
                                                search_filters={"StudyInstanceUID": study}))  # fmt: skip
        if not found:
            raise DicomWebError(f"{self.url}: study {study} not found")
        what = "QIDO-RS search for instances"
        insts = self._datasets(what, self._call(what, self.client.search_for_instances, study_instance_uid=study))
        out: dict[str, str] = {}
        for item in insts:
            sop_class, modality = _value(item, "00080016"), _value(item, "00080060")
            # the SOP class decides when given (a tomosynthesis volume is modality MG too, and not ours)
            if sop_class in MG_SOP_CLASSES or (sop_class is None and modality == "MG"):
                sop = self._uid(what, item, "00080018", "SOPInstanceUID")
                out[sop] = self._uid(what, item, "0020000E", "SeriesInstanceUID")
        if not out:
            raise DicomWebError(f"{self.url}: study {study} has no MG instances ({len(insts)} other instances)")
        if len(out) > MAX_INSTANCES:
            raise DicomWebError(f"{self.url}: study {study} lists {len(out)} MG instances, over {MAX_INSTANCES}")
        return [(series, sop) for sop, series in out.items()]

    def fetch_mg(self, study: str, dest: Path) -> list[Path]:
        """WADO-RS: the study's MG instances as files under `dest`, named by SOP Instance UID (made
        safe by `uid_name`); their content is read later by the project's DICOM reader."""
        paths = []
        for series, sop in self.mg_instances(study):
            what = f"WADO-RS retrieve of instance {sop}"
            ds = self._call(what, self.client.retrieve_instance,
                            study_instance_uid=study, series_instance_uid=series, sop_instance_uid=sop)  # fmt: skip
            p = child_path(dest, uid_name(sop) + ".dcm")
            self._call(what, write_buffer, p, lambda f, ds=ds: ds.save_as(f, enforce_file_format=True))
            paths.append(p)
        return paths

    def present(self, study: str, series_uids: Sequence[str]) -> set[str]:
        """SOP Instance UIDs already stored in these series of the study."""
        what = "QIDO-RS search for stored results"
        have: set[str] = set()
        for series in set(series_uids):
            items = self._datasets(what, self._call(what, self.client.search_for_instances,
                                                    study_instance_uid=study, series_instance_uid=series))  # fmt: skip
            have |= {self._uid(what, i, "00080018", "SOPInstanceUID") for i in items}
        return have

    def store(self, datasets: Sequence[Dataset]) -> None:
        """STOW-RS; a response with failed instances is a rejection."""
        if not datasets:
            return
        study = str(datasets[0].StudyInstanceUID)
        resp = self._call("STOW-RS", self.client.store_instances, datasets=list(datasets), study_instance_uid=study)
        failed = getattr(resp, "FailedSOPSequence", None) if resp is not None else None
        if failed:
            reason = failed[0].get("FailureReason", "?")
            reason = f"0x{reason:04X}" if isinstance(reason, int) else _plain(reason, 40)
            raise DicomWebError(
                f"{self.url}: STOW-RS rejected {len(failed)} of {len(datasets)} objects (failure reason {reason})"
            )


def _value(item: dict[str, Any], tag: str) -> Any:
    """The first value of a DICOM JSON attribute, or None when it is absent or not shaped as one."""
    elem = item.get(tag)
    v = elem.get("Value") if isinstance(elem, dict) else None
    return v[0] if isinstance(v, list) and v else None


@dataclass
class DicomWebResult:
    report: PredictReport
    url: str
    study: str
    fetched: int
    stored: list[str] = field(default_factory=list)  # SOP Instance UIDs sent now
    already: list[str] = field(default_factory=list)  # found in the PACS from an earlier run

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.report.to_dict(),
            "dicomweb": {"url": self.url, "study": self.study, "fetched": self.fetched,
                         "stored": self.stored, "already_present": self.already},
        }  # fmt: skip


def predict_dicomweb(
    model: str | Path,
    url: str,
    study: str,
    *,
    store: bool = False,
    backend: str | None = None,
    operating_point: str | None = None,
    dicom_out: str | Path | None = None,
    heatmaps_dir: str | Path | None = None,
    timeout: float = TIMEOUT_S,
    max_bytes: int = MAX_RESPONSE_BYTES,
    ca: str | Path | None = None,
    **options: Any,
) -> DicomWebResult:
    """Pull `study` from the DICOMweb server at `url`, predict it, and (`store`) send the results back.

    `options`: the study pipeline's (`prefer`, `strict`, `sr`, `seg`, `triton`, ...), as for folders:
    the same image selection decides which of the study's instances are read."""
    import pydicom

    from ..predict import predict

    if not _UIDISH.match(study) or len(study) > 64:
        raise ConfigError(f"--study {_plain(repr(study), 80)}: not a StudyInstanceUID (digits and dots)")
    pacs = Pacs(url, timeout=timeout, max_bytes=max_bytes, ca=ca)
    with tempfile.TemporaryDirectory(prefix="xpr-dicomweb-") as tmp:
        inbox = Path(tmp) / "study"
        inbox.mkdir()
        fetched = pacs.fetch_mg(study, inbox)
        out = Path(dicom_out) if dicom_out is not None else Path(tmp) / "results"
        rep = predict(model, [inbox], backend=backend, heatmaps_dir=heatmaps_dir, operating_point=operating_point,
                      dicom_out=out, input_ids=[f"{url}#{study}"], **options)  # fmt: skip
        for b in rep.breasts:  # name the PACS, not the temporary folder
            b.cc, b.mlo = f"{url}#{Path(b.cc).stem}", f"{url}#{Path(b.mlo).stem}"
        for r in rep.rejects:
            if r.get("path", "").startswith(str(inbox)):
                r["reason"] = r["reason"].replace(str(inbox), url)
                r["path"] = f"{url}#{Path(r['path']).stem}"
        res = DicomWebResult(rep, url, study, len(fetched))
        if store and rep.dicom:
            objs = [pydicom.dcmread(p) for p in rep.dicom]
            have = pacs.present(study, [str(o.SeriesInstanceUID) for o in objs])
            todo = [o for o in objs if str(o.SOPInstanceUID) not in have]
            res.already = sorted(str(o.SOPInstanceUID) for o in objs if str(o.SOPInstanceUID) in have)
            pacs.store(todo)
            res.stored = [str(o.SOPInstanceUID) for o in todo]
        if dicom_out is None:
            rep.dicom = []  # they lived in the temporary folder
    return res


__all__ = [
    "CONNECT_S",
    "MAX_RESPONSE_BYTES",
    "TIMEOUT_S",
    "DicomWebError",
    "DicomWebResult",
    "Pacs",
    "mib",
    "predict_dicomweb",
]
