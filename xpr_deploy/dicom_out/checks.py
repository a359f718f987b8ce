"""The validators the tests and the demo run on written objects (DICOM's own checkers, not ours)."""

from __future__ import annotations

import re
from pathlib import Path


def dciodvfy_errors(path: str | Path, timeout: float = 60.0, iod: str | None = None) -> list[str] | None:
    """The `Error` lines of `dciodvfy` (Debian dicom3tools) on one object; None when it is not installed.

    Also an error when dciodvfy exits non-zero without an Error line, and when it does not name the
    IOD it checked against (`iod`, e.g. "ComprehensiveSR", "Segmentation"; else any): an object it
    did not recognise was not verified at all."""
    import shutil
    import subprocess

    exe = shutil.which("dciodvfy")
    if exe is None:
        return None
    r = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=timeout, check=False)
    lines = (r.stdout + r.stderr).splitlines()
    errors = [ln for ln in lines if ln.startswith("Error")]
    if r.returncode != 0 and not errors:
        errors.append(f"Error - dciodvfy exit status {r.returncode}")
    named = [ln.strip() for ln in lines if re.fullmatch(r"[A-Z][A-Za-z0-9]+", ln.strip())]
    if (iod is None and not named) or (iod is not None and iod not in named):
        errors.append(f"Error - not recognised as {iod or 'a known IOD'} (dciodvfy named {named or 'none'})")
    return errors


#: dsrdump's notice that it checks relationship constraints but not templates: not a finding
_DSRDUMP_NOTICE = "W: Check for template constraints not yet supported"


def dsrdump_errors(path: str | Path, timeout: float = 60.0, document: str | None = None) -> list[str] | None:
    """What DCMTK's `dsrdump` finds wrong in one SR document; None when it is not installed.

    dsrdump reads the content tree against the IOD's relationship content constraints (PS3.3, e.g.
    Table A.35.5-2 for the Mammography CAD SR) and its root template identifier (TID 4000 there),
    and stops at the first violation. Every E:/F: line, every W: line but its notice that templates
    are not checked, a non-zero exit status, and (with `document`, e.g. "Mammography CAD SR") a
    document type other than that one are errors."""
    import shutil
    import subprocess

    exe = shutil.which("dsrdump")
    if exe is None:
        return None
    r = subprocess.run([exe, "-v", str(path)], capture_output=True, text=True, timeout=timeout, check=False)
    lines = (r.stdout + r.stderr).splitlines()
    errors = [ln for ln in lines if ln.startswith(("E:", "F:")) or (ln.startswith("W:") and ln != _DSRDUMP_NOTICE)]
    if r.returncode != 0 and not errors:
        errors.append(f"E: dsrdump exit status {r.returncode}")
    if document is not None and f"{document} Document" not in lines:
        named = [ln for ln in lines if ln.endswith(" Document")]
        errors.append(f"E: not read as a {document} Document (dsrdump named {named or 'none'})")
    return errors
