"""The manifest's seal: a SHA-256 of its own bytes, so no field (threshold, preprocessing, I/O,
blocks, the file hashes themselves) can change unnoticed.

Rule (the same in Python, C++ and the Triton model; `export/README.md#integrity`): take the bytes of
`manifest.json`, replace the 64 hex digits of the one top-level `"manifest_sha256": "<hex>"` by 64
ASCII `0`, hash with SHA-256; the result must equal `<hex>`. Working on bytes, not on re-serialised
JSON, keeps the rule exact in every language (no float or key-order canonicalisation to agree on).

This is integrity, not authenticity: whoever can write the bundle can re-seal it. The digest is the
bundle's identity (printed by `xpr verify`, recorded by reports); pin it where authenticity matters.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from ..errors import BundleError

DIGEST_KEY = "manifest_sha256"
_ZEROS = "0" * 64
#: the sealed field exactly as the writer emits it (json.dumps(indent=2))
_FIELD = re.compile(rb'"manifest_sha256": "([0-9a-f]{64})"')


class SealError(BundleError, ValueError):
    """The manifest bytes carry no single well-formed seal."""


def digest_of(raw: bytes) -> tuple[str, str]:
    """(recorded digest, computed digest) of sealed manifest bytes."""
    found = _FIELD.findall(raw)
    if len(found) != 1:
        raise SealError(
            "has no manifest_sha256 seal" if not found else f"has {len(found)} manifest_sha256 fields, not one"
        )
    recorded = found[0].decode()
    blank = _FIELD.sub(f'"{DIGEST_KEY}": "{_ZEROS}"'.encode(), raw)
    return recorded, hashlib.sha256(blank).hexdigest()


def seal(manifest: dict[str, Any]) -> bytes:
    """The manifest as the bytes to write, its seal filled in (any previous seal replaced)."""
    body = {k: v for k, v in manifest.items() if k != DIGEST_KEY}
    body[DIGEST_KEY] = _ZEROS
    raw = (json.dumps(body, indent=2, ensure_ascii=False, default=str) + "\n").encode()
    if len(_FIELD.findall(raw)) != 1:  # a nested "manifest_sha256" key would make the rule ambiguous
        raise SealError("a manifest may hold the manifest_sha256 key only at its top level")
    digest = hashlib.sha256(raw).hexdigest()
    return raw.replace(f'"{DIGEST_KEY}": "{_ZEROS}"'.encode(), f'"{DIGEST_KEY}": "{digest}"'.encode())


def write_sealed(folder: str | Path, manifest: dict[str, Any]) -> str:
    """Seal and write `folder/manifest.json` atomically; returns the digest."""
    from ..io import write_bytes

    raw = seal(manifest)
    write_bytes(Path(folder) / "manifest.json", raw)
    return digest_of(raw)[0]
