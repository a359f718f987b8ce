"""Export bundles as a contract: the schema, the seal, and the one verified reader (`BundleView`).

Every command that reads a bundle (predict, validate, bench, triton, the demo) opens it with
`BundleView.open`; the export writes it with `seal.write_sealed`. Rules: `reader.py`'s docstring
and `export/README.md#integrity`.
"""

from __future__ import annotations

from .reader import BlockKey, BundleError, BundleView, EngineRef, IoNames, rewrite_file, verify_bundle
from .schema import FORMAT, FORMAT_VERSION, MANIFEST_SCHEMA, SCHEMA_FILE, schema_json, tensor_entry
from .seal import DIGEST_KEY, digest_of, seal, write_sealed

__all__ = [
    "DIGEST_KEY",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_SCHEMA",
    "SCHEMA_FILE",
    "BlockKey",
    "BundleError",
    "BundleView",
    "EngineRef",
    "IoNames",
    "digest_of",
    "rewrite_file",
    "schema_json",
    "seal",
    "tensor_entry",
    "verify_bundle",
    "write_sealed",
]
