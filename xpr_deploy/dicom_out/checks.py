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
