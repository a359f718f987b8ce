"""Prepared model inputs on disk, keyed by (file SHA-256, preprocessing settings hash).

Decoding a full-size JPEG 2000 mammogram takes seconds; training reads each image many times.
The key is the file's content, not its path, so renamed or copied datasets still hit, and any
change of settings (size, thresholds, version) misses instead of serving stale arrays.
Layout: `<dir>/<settings hash>/settings.json` and `<dir>/<settings hash>/<sha[:2]>/<sha>.npy`
(+ `<sha>.json` with the Geometry).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..io import sha256_file, write_buffer, write_json
from .dicom import Geometry, PreprocessSettings, preprocess_with_geometry
from .errors import CacheError


class PreparedCache:
    """`load(path, settings)` returns the model input, computing and storing it on a miss."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._sha: dict[tuple[str, int, int], str] = {}

    def file_hash(self, path: str | Path) -> str:
        p = Path(path)
        try:
            st = p.stat()
        except OSError:
            from .errors import MissingFile

            raise MissingFile(f"{p}: file not found") from None
        key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
        if key not in self._sha:
            self._sha[key] = sha256_file(p)
        return self._sha[key]

    def entry(self, path: str | Path, settings: PreprocessSettings) -> Path:
        sha = self.file_hash(path)
        return self.root / settings.hash() / sha[:2] / f"{sha}.npy"

    def contains(self, path: str | Path, settings: PreprocessSettings) -> bool:
        """True for a complete entry: the array is renamed into place last, after its geometry."""
        entry = self.entry(path, settings)
        return entry.exists() and entry.with_suffix(".json").exists()

    def write_settings(self, settings: PreprocessSettings) -> None:
        """`<hash>/settings.json` once per settings (also shows early that the folder is writable)."""
        sfile = self.root / settings.hash() / "settings.json"
        if not sfile.exists():
            write_json(sfile, settings.to_dict())

    def _store(self, entry: Path, arr: np.ndarray, geo: Geometry, settings: PreprocessSettings) -> None:
        self.write_settings(settings)
        # geometry first, array last: a run killed in between leaves no entry that `contains` accepts
        write_json(entry.with_suffix(".json"), geo.to_dict())
        # np.save reports a full disk as an OSError without errno ("N requested and M written"): buffer it
        write_buffer(entry, lambda f: np.save(f, arr))

    def ensure(self, path: str | Path, settings: PreprocessSettings) -> bool:
        """Make sure `path` has an entry; True if it was computed now, False if it was there."""
        if self.contains(path, settings):
            return False
        entry = self.entry(path, settings)
        arr, geo = preprocess_with_geometry(path, settings)
        self._store(entry, arr, geo, settings)
        return True

    def load_with_geometry(self, path: str | Path, settings: PreprocessSettings) -> tuple[np.ndarray, Geometry]:
        entry = self.entry(path, settings)
        meta = entry.with_suffix(".json")
        if entry.exists() and meta.exists():
            try:
                arr = np.load(entry, allow_pickle=False)
                geo = Geometry.from_dict(json.loads(meta.read_text()))
            except (OSError, ValueError, KeyError) as exc:
                raise CacheError(f"{entry}: unreadable cache entry ({exc}); delete it to recompute") from None
            if arr.shape != tuple(settings.img_size) or arr.dtype != np.float32:
                raise CacheError(f"{entry}: cached array {arr.dtype} {arr.shape} does not match the settings")
            return arr, geo
        arr, geo = preprocess_with_geometry(path, settings)
        self._store(entry, arr, geo, settings)
        return arr, geo

    def load(self, path: str | Path, settings: PreprocessSettings) -> np.ndarray:
        return self.load_with_geometry(path, settings)[0]

    def size_bytes(self) -> int:
        total = 0
        for dirpath, _, files in os.walk(self.root):
            total += sum((Path(dirpath) / f).stat().st_size for f in files)
        return total
