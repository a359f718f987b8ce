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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import atomic_path, sha256_file, write_json
from .dicom import Geometry, PreprocessSettings, preprocess_with_geometry
from .errors import CacheError, DicomError


@dataclass
class PrepareReport:
    """What `prepare` did."""

    computed: int = 0
    cached: int = 0
    failed: list[dict[str, str]] | None = None

    def to_dict(self) -> dict[str, object]:
        return {"computed": self.computed, "cached": self.cached, "failed": self.failed or []}


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
        return self.entry(path, settings).exists()

    def _store(self, entry: Path, arr: np.ndarray, geo: Geometry, settings: PreprocessSettings) -> None:
        sdir = entry.parent.parent
        if not (sdir / "settings.json").exists():
            write_json(sdir / "settings.json", settings.to_dict())
        with atomic_path(entry, suffix=".npy") as tmp, open(tmp, "wb") as f:
            np.save(f, arr)
        write_json(entry.with_suffix(".json"), geo.to_dict())

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

    def prepare(self, paths: list[Path], settings: PreprocessSettings) -> PrepareReport:
        """Fill the cache for `paths`, keeping going past bad files."""
        rep = PrepareReport(failed=[])
        for p in paths:
            try:
                if self.contains(p, settings):
                    rep.cached += 1
                    continue
                self.load(p, settings)
                rep.computed += 1
            except DicomError as exc:
                assert rep.failed is not None
                rep.failed.append({"path": str(p), "reason": str(exc)})
        return rep

    def size_bytes(self) -> int:
        total = 0
        for dirpath, _, files in os.walk(self.root):
            total += sum((Path(dirpath) / f).stat().st_size for f in files)
        return total
