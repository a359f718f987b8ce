"""The node's DICOM side (pynetdicom): Verification and Storage SCP behind an allow-list of callers.

Association (EVT_REQUESTED): a caller whose AE title (and host, when the allow-list names one)
is not allowed gets A-ASSOCIATE-RJ "calling AE title not recognised" (rejected-permanent); with
the spool under its free-space floor, A-ASSOCIATE-RJ rejected-transient "temporary congestion", so
the sender keeps the study and tries later.

C-STORE: mammography (For Presentation, For Processing) and Breast Tomosynthesis are accepted (the
study pipeline chooses the images it uses); other storage classes are acknowledged and dropped
(`others="ignore"`, the default: a PACS re-sending a whole study, xpr's own SR and Segmentations
included, must not see its job fail) or refused at negotiation (`others="refuse"`). An instance is acknowledged
(0x0000) only once its file is synced in the spool and its row committed in the queue; no room or
an instance over the size limit: 0xA700 (out of resources), nothing recorded; no readable Study
Instance UID: 0xC000 (cannot understand).
"""

from __future__ import annotations

import io
import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .peer import Caller
from .queue import Queue
from .spool import Spool, SpoolFull

log = logging.getLogger("xpr.listen")

VERIFICATION = "1.2.840.10008.1.1"
MAMMO_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MAMMO_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
BREAST_TOMOSYNTHESIS = "1.2.840.10008.5.1.4.1.1.13.1.3"
ACCEPTED_CLASSES = (MAMMO_FOR_PRESENTATION, MAMMO_FOR_PROCESSING, BREAST_TOMOSYNTHESIS)

#: what an archive sends mammograms in; the study pipeline's reader decides what it decodes and
#: names any syntax it cannot (stored as received, never transcoded here)
TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless, process 14 SV1
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless, process 14
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203",  # HTJ2K
    "1.2.840.10008.1.2.5",  # RLE Lossless
)

# PS3.4 C-STORE statuses and PS3.8 A-ASSOCIATE-RJ (result, source, diagnostic)
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
REJECT_CALLING_AE = (0x01, 0x01, 0x03)
REJECT_CONGESTION = (0x02, 0x03, 0x01)
#: seconds an association is held open after A-ASSOCIATE-RJ, so the PDU is on the wire before the close
REJECT_LINGER_S = 0.2


@dataclass
class Counters:
    """What the SCP did, for /metrics (monotonic counts)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    values: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, name: str, label: str = "", n: int = 1) -> None:
        with self.lock:
            self.values[name, label] = self.values.get((name, label), 0) + n

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self.lock:
            return dict(self.values)


class StorageSCP:
    def __init__(
        self,
        ae_title: str,
        bind: tuple[str, int],
        allow: Sequence[Caller],
        spool: Spool,
        queue: Queue,
        counters: Counters,
        *,
        others: str = "refuse",
        ssl_context: ssl.SSLContext | None = None,
        on_instance: Callable[[str], None] | None = None,
    ) -> None:
        self.ae_title, self.bind, self.allow = ae_title, bind, tuple(allow)
        self.spool, self.queue, self.counters = spool, queue, counters
        self.others, self.ssl_context, self.on_instance = others, ssl_context, on_instance
        self._server: Any = None

    def _ae(self) -> Any:
        from pynetdicom import AE, AllStoragePresentationContexts

        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(VERIFICATION)
        for uid in ACCEPTED_CLASSES:
            ae.add_supported_context(uid, list(TRANSFER_SYNTAXES))
        if self.others == "ignore":
            for cx in AllStoragePresentationContexts:
                if cx.abstract_syntax is not None and cx.abstract_syntax not in ACCEPTED_CLASSES:
                    ae.add_supported_context(cx.abstract_syntax, list(TRANSFER_SYNTAXES))
        ae.maximum_associations = 16
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
        return ae

    def start(self) -> None:
        from pynetdicom import evt

        handlers = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
        ]
        self._server = self._ae().start_server(
            self.bind, block=False, evt_handlers=handlers, ssl_context=self.ssl_context
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1]) if self._server is not None else self.bind[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    # ---- handlers (pynetdicom's threads; an exception here would become a failure status) ------
    def admits(self, ae_title: str, address: str) -> bool:
        return any(c.admits(ae_title, address) for c in self.allow)

    def _on_requested(self, event: Any) -> None:
        calling = str(event.assoc.requestor.primitive.calling_ae_title).strip()
        address = str(event.assoc.requestor.address)
        if not self.admits(calling, address):
            log.warning("association from %s@%s rejected: calling AE title not allowed", calling, address)
            self.counters.add("associations_rejected_total", "caller")
            event.assoc.acse.send_reject(*REJECT_CALLING_AE)
        elif not self.spool.has_room():
            log.warning(
                "association from %s@%s rejected: %s is under its free-space floor", calling, address, self.spool.root
            )
            self.counters.add("associations_rejected_total", "disk_full")
            event.assoc.acse.send_reject(*REJECT_CONGESTION)
        else:
            self.counters.add("associations_accepted_total")
            return
        time.sleep(REJECT_LINGER_S)  # pynetdicom closes the socket on return: let the A-ASSOCIATE-RJ go first

    def _on_echo(self, _event: Any) -> int:
        return SUCCESS

    def _on_store(self, event: Any) -> int:
        calling = str(event.assoc.requestor.ae_title).strip()
        sop_class = str(event.request.AffectedSOPClassUID)
        sop = str(event.request.AffectedSOPInstanceUID)
        if sop_class not in ACCEPTED_CLASSES:
            self.counters.add("instances_ignored_total")
            return SUCCESS  # others="ignore": acknowledged, not kept
        try:
            data = event.encoded_dataset()
            study = _study_uid(data)
        except Exception as exc:  # a dataset pydicom cannot parse is the sender's problem, not ours
            log.warning("instance %s from %s refused: no readable Study Instance UID (%s)", sop, calling, exc)
            self.counters.add("instances_refused_total", "unreadable")
            return CANNOT_UNDERSTAND
        if self.queue.has_instance(sop):
            self.counters.add("instances_duplicate_total")
            return SUCCESS  # the same SOP Instance again (a sender's retry): one file per SOP Instance UID
        try:
            path = self.spool.store(study, sop, data)
            self.queue.add_instance(study, sop, sop_class, str(path), calling)
        except SpoolFull as exc:
            log.warning("instance %s of study %s from %s refused (out of resources): %s", sop, study, calling, exc)
            self.counters.add("instances_refused_total", "out_of_resources")
            return OUT_OF_RESOURCES
        except Exception as exc:  # the queue could not commit (disk full, ...): not acknowledged
            log.warning("instance %s of study %s from %s refused: %s", sop, study, calling, exc)
            self.counters.add("instances_refused_total", "out_of_resources")
            return OUT_OF_RESOURCES
        self.counters.add("instances_received_total")
        if self.on_instance is not None:
            self.on_instance(study)
        return SUCCESS


def _study_uid(data: bytes) -> str:
    """The Study Instance UID of an encoded file (header only, nothing else parsed)."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
    uid = str(ds.get("StudyInstanceUID", "") or "").strip("\x00 ")
    if not uid:
        raise ValueError("Study Instance UID missing")
    return uid
