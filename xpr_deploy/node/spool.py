"""The spool: received instances on disk, one file per SOP Instance UID, written atomically and
synced before the sender hears "stored"; the results of each study beside them.

    SPOOL/incoming/<study>/<sop>.dcm    received instances (names: `io.uid_name`, paths: `io.child_path`)
    SPOOL/results/<study>/...           the study's SR and Segmentations (`dicom_out`), one folder swap
    SPOOL/queue.sqlite                  the state of every study (`queue.py`)

Study and SOP Instance UIDs come from the network: a valid UID is its own name, anything else a
hash, and no name leaves the spool. Free space is checked before an association is accepted and
before each instance is written: under `min_free_bytes` the node answers "out of resources".
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from ..errors import XprError
from ..io import atomic_path, child_path, uid_name

SUFFIX = ".dcm"


class SpoolFull(XprError):
    """No room for an instance: refused with the out-of-resources status, nothing acknowledged."""


class Spool:
    def __init__(self, root: str | Path, *, max_instance_bytes: int, min_free_bytes: int) -> None:
        self.root = Path(os.path.abspath(root))
        self.incoming = self.root / "incoming"
        self.results = self.root / "results"
        self.max_instance_bytes = max_instance_bytes
        self.min_free_bytes = min_free_bytes
        for d in (self.incoming, self.results):
            d.mkdir(parents=True, exist_ok=True)

    # ---- names --------------------------------------------------------------------------------
    def study_dir(self, study_uid: str) -> Path:
        return child_path(self.incoming, uid_name(study_uid))

    def instance_path(self, study_uid: str, sop_uid: str) -> Path:
        return child_path(self.incoming, uid_name(study_uid), uid_name(sop_uid) + SUFFIX)

    def results_dir(self, study_uid: str) -> Path:
        return child_path(self.results, uid_name(study_uid))

    def result_files(self, study_uid: str) -> list[Path]:
        d = self.results_dir(study_uid)
        return sorted(p for p in d.rglob("*" + SUFFIX) if p.is_file()) if d.is_dir() else []

    # ---- room ---------------------------------------------------------------------------------
    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def has_room(self, extra: int = 0) -> bool:
        return self.free_bytes() - extra >= self.min_free_bytes

    # ---- writing ------------------------------------------------------------------------------
    def store(self, study_uid: str, sop_uid: str, data: bytes) -> Path:
        """Write one instance (DICOM file bytes) atomically and durably; SpoolFull when there is no room."""
        if len(data) > self.max_instance_bytes:
            raise SpoolFull(f"{len(data)} bytes, over the {self.max_instance_bytes}-byte limit per instance")
        if not self.has_room(len(data)):
            raise SpoolFull(f"{self.root}: under {self.min_free_bytes} bytes free")
        dest = self.instance_path(study_uid, sop_uid)
        try:
            with atomic_path(dest) as tmp, open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            _sync_dir(dest.parent)
        except XprError as exc:  # io's OutputError: its reason says why (disk full, ...)
            raise SpoolFull(str(exc)) from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise SpoolFull(f"{dest}: {exc.strerror}") from None
            raise
        return dest

    def remove_study(self, study_uid: str) -> None:
        for d in (self.study_dir(study_uid), self.results_dir(study_uid)):
            shutil.rmtree(d, ignore_errors=True)


def _sync_dir(folder: Path) -> None:
    """The rename is durable too (a power cut after "stored" keeps the file)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
