"""A PACS over DICOMweb (`dicomweb-client`): pull a study's MG instances (QIDO-RS + WADO-RS), predict,
and store the DICOM results back (STOW-RS).

`predict_dicomweb(model, url, study, store=True)`: the study's mammograms are fetched into a
temporary folder and go through `xpr predict` exactly as files would; the SR and the heatmap
Segmentations (`dicom_out.py`) are written to `dicom_out` (or a temporary folder) and, with `store`,
sent with STOW-RS. Result UIDs are derived from the inputs and the model, so a rerun finds its
objects already in the study (QIDO-RS) and stores nothing twice.

Every failure is one `DicomWebError` line naming the URL and the cause: server down or not
answering (bounded timeouts), study not found, no MG instances, STOW-RS rejected.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import XprError
from .io import write_buffer

if TYPE_CHECKING:
    from pydicom import Dataset

    from .predict import PredictReport

#: (connect, read) seconds for every request, and attempts per request
TIMEOUT = (5.0, 60.0)
RETRIES = 2
MG_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.1.2",  # Digital Mammography X-Ray Image - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.2.1",  # - For Processing
)


class DicomWebError(XprError):
    """A DICOMweb request failed; the message names the URL and the cause."""

    exit_code = 4


def _cause(exc: BaseException) -> str:
    import requests

    if isinstance(exc, requests.exceptions.ConnectTimeout | requests.exceptions.ReadTimeout):
        return f"no answer within {TIMEOUT[0]:g}/{TIMEOUT[1]:g} s"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "cannot connect (server down or wrong address)"
    if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
        r = exc.response
        return f"HTTP {r.status_code} {r.reason or ''}".strip()
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:200]


class Pacs:
    """One DICOMweb endpoint; every call is bounded by TIMEOUT and fails with one line."""

    def __init__(self, url: str, timeout: tuple[float, float] = TIMEOUT) -> None:
        from dicomweb_client import DICOMwebClient

        self.url = url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise DicomWebError(f"{url}: not an http(s) DICOMweb URL")
        self.client = DICOMwebClient(self.url, timeout=timeout)
        # dicomweb-client retries 5 times with exponential back-off (about 30 s for a server that is
        # down); two tries, 0.25 s apart, keep a busy server's 503 retried and a failure quick
        self.client.set_http_retry_params(retry=True, max_attempts=RETRIES, wait_exponential_multiplier=250)

    def _call(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except Exception as exc:  # requests / dicomweb-client errors: one line with the URL
            raise DicomWebError(f"{self.url}: {what} failed: {_cause(exc)}") from None

    def mg_instances(self, study: str) -> list[tuple[str, str]]:
        """(series UID, SOP instance UID) of the study's mammograms; study not found / no MG fail."""
        found = self._call("QIDO-RS search for the study", self.client.search_for_studies,
                           search_filters={"StudyInstanceUID": study})  # fmt: skip
        if not found:
            raise DicomWebError(f"{self.url}: study {study} not found")
        insts = self._call("QIDO-RS search for instances", self.client.search_for_instances,
                           study_instance_uid=study)  # fmt: skip
        out = []
        for item in insts or []:
            sop_class = _value(item, "00080016")
            modality = _value(item, "00080060")
            if sop_class in MG_SOP_CLASSES or modality == "MG":
                out.append((str(_value(item, "0020000E")), str(_value(item, "00080018"))))
        if not out:
            raise DicomWebError(f"{self.url}: study {study} has no MG instances ({len(insts or [])} other instances)")
        return out

    def fetch_mg(self, study: str, dest: Path) -> list[Path]:
        """WADO-RS: the study's MG instances as files under `dest` (names by SOP Instance UID)."""
        paths = []
        for series, sop in self.mg_instances(study):
            ds = self._call(f"WADO-RS retrieve of instance {sop}", self.client.retrieve_instance,
                            study_instance_uid=study, series_instance_uid=series, sop_instance_uid=sop)  # fmt: skip
            p = dest / f"{sop}.dcm"
            write_buffer(p, lambda f, ds=ds: ds.save_as(f, enforce_file_format=True))
            paths.append(p)
        return paths

    def present(self, study: str, series_uids: Sequence[str]) -> set[str]:
        """SOP Instance UIDs already stored in these series of the study."""
        have: set[str] = set()
        for series in set(series_uids):
            items = self._call("QIDO-RS search for stored results", self.client.search_for_instances,
                               study_instance_uid=study, series_instance_uid=series)  # fmt: skip
            have |= {str(_value(i, "00080018")) for i in items or []}
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
            raise DicomWebError(
                f"{self.url}: STOW-RS rejected {len(failed)} of {len(datasets)} objects (failure reason {reason})"
            )


def _value(item: dict[str, Any], tag: str) -> Any:
    v = item.get(tag, {}).get("Value")
    return v[0] if v else None


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
) -> DicomWebResult:
    """Pull `study` from the DICOMweb server at `url`, predict it, and (`store`) send the results back."""
    import pydicom

    from .predict import predict

    pacs = Pacs(url)
    with tempfile.TemporaryDirectory(prefix="xpr-dicomweb-") as tmp:
        inbox = Path(tmp) / "study"
        inbox.mkdir()
        fetched = pacs.fetch_mg(study, inbox)
        out = Path(dicom_out) if dicom_out is not None else Path(tmp) / "results"
        rep = predict(model, [inbox], backend=backend, heatmaps_dir=heatmaps_dir, operating_point=operating_point,
                      dicom_out=out, input_ids=[f"{url}#{study}"])  # fmt: skip
        for b in rep.breasts:  # name the PACS, not the temporary folder
            b.cc, b.mlo = f"{url}#{Path(b.cc).stem}", f"{url}#{Path(b.mlo).stem}"
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
