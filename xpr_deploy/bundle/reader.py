"""The one verified reader of an export bundle: nothing in a bundle is used before all of it is checked.

`BundleView.open(path)` refuses (one `BundleError` line naming the file and what differs) unless:
1. `manifest.json` is a plain file, readable JSON nested at most 64 deep, of this toolkit's bundle format;
2. its seal (`manifest_sha256`, see `seal.py`) matches its bytes: no field was edited;
3. it follows `export/manifest.schema.json`;
4. every path it names is relative, free of `..`, and resolves inside the folder (no symlink out);
5. the folder holds exactly the files the manifest lists (plain files, no links, nothing extra),
   and each one's SHA-256 equals the manifest's; every graph reads external data only from those
   files (`external.py`: no absolute path, `..`, device or unlisted file);
6. the facts agree with each other: the I/O roles name real inputs/outputs, the input shape is the
   model's image size, the served graph and engines are listed files.

Steps 1-5 are `verify.read_verified_manifest`; step 6 is `BundleView._cross_check`.

The C++ runtime (`engines/src/manifest.cpp`) and the Triton model apply the same rules. After that,
the view answers every question a command asks of a bundle: the graph for a precision, the engine
for a compute capability, I/O names, selection outputs, preprocessing, label rule, threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .verify import MANIFEST, BundleError, read_verified_manifest

if TYPE_CHECKING:
    from ..config import ModelConfig
    from ..data.dicom import PreprocessSettings
    from ..train.operating_points import OperatingPoint

#: (view, stage, block)
BlockKey = tuple[str, int, int]


@dataclass(frozen=True)
class IoNames:
    """Tensor names by role; readers never hard-code them."""

    cc: str
    mlo: str
    logits: str
    prob: str

    @property
    def inputs(self) -> tuple[str, str]:
        return self.cc, self.mlo


@dataclass(frozen=True)
class EngineRef:
    """One verified engine of the bundle (its version and GPU checks run when it is loaded)."""

    path: Path
    entry: dict[str, Any]

    @property
    def flavour(self) -> str:
        """The TensorRT flavour that built it (tensorrt-rtx | tensorrt; the manifest's `backend` field)."""
        return str(self.entry["backend"])

    @property
    def precision(self) -> str:
        return "fp16" if str(self.entry.get("onnx", "")).endswith(".fp16.onnx") else "fp32"


class BundleView:
    """A bundle that passed every check; the only way commands read one (see the module docstring)."""

    def __init__(self, root: Path, manifest: dict[str, Any], digest: str, chosen: Path | None = None) -> None:
        self.root = root
        self.manifest = manifest
        self.digest = digest
        self.chosen = chosen  # the graph or engine file a user pointed at inside the bundle
        self.where = str(root / MANIFEST)
        self._cross_check()

    @classmethod
    def open(cls, path: str | Path) -> BundleView:
        """A bundle folder, its manifest.json, or a graph/engine file inside it (then that one is served)."""
        p = Path(path)
        if not p.exists() and not p.is_symlink():
            raise BundleError(f"{p}: no such bundle")
        root, chosen = (p, None) if p.is_dir() else (_bundle_root(p), p)
        manifest, digest = read_verified_manifest(root)
        view = cls(root, manifest, digest)
        if chosen is not None and chosen.name != MANIFEST:
            rel = chosen.resolve().relative_to(root.resolve()).as_posix()
            if rel not in manifest["files"]:
                raise BundleError(f"{chosen}: not a file of the bundle {root}")
            view.chosen = root / rel
        return view

    # ---- facts -------------------------------------------------------------------------------
    def _cross_check(self) -> None:
        m, where = self.manifest, self.where
        io = m["io"]
        inputs = {t["name"]: t for t in m["inputs"]}
        outputs = {t["name"]: t for t in m["outputs"]}
        for role in ("cc", "mlo"):
            if io[role] not in inputs:
                raise BundleError(f"{where}: io.{role} {io[role]!r} is not an input")
        for role in ("logits", "prob"):
            if io[role] not in outputs:
                raise BundleError(f"{where}: io.{role} {io[role]!r} is not an output")
        size = list(m["model_config"]["img_size"])
        max_batch = m.get("max_batch")
        # static: every shape has the integer batch first; dynamic (`max_batch`): every input and
        # output has -1 first (1..max_batch samples), `batch` is the profile's opt batch, no other -1
        want = m["batch"] if max_batch is None else -1
        if max_batch is not None and not 1 <= m["batch"] <= max_batch:
            raise BundleError(f"{where}: batch {m['batch']} (the opt batch) is outside 1..max_batch {max_batch}")
        for t in [*m["inputs"], *m["outputs"]]:
            shape = t["shape"]
            if shape[0] != want or any(d == -1 for d in shape[1:]):
                what = f"batch {m['batch']}" if max_batch is None else f"max_batch {max_batch} (batch dim -1)"
                raise BundleError(f"{where}: tensor {t['name']!r} shape {shape} disagrees with {what}")
        for role in ("cc", "mlo"):
            shape = inputs[io[role]]["shape"]
            if len(shape) != 4 or list(shape[2:]) != size:
                raise BundleError(
                    f"{where}: input {io[role]!r} shape {shape} disagrees with model_config.img_size {size}"
                )
            if shape[1] != m["model_config"]["in_chans"]:
                raise BundleError(
                    f"{where}: input {io[role]!r} shape {shape} disagrees with model_config.in_chans "
                    f"{m['model_config']['in_chans']}"
                )
        pre = m["preprocessing"].get("img_size")
        if pre is not None and list(pre) != size:
            raise BundleError(f"{where}: preprocessing.img_size {pre} differs from model_config.img_size {size}")
        points, default = m.get("operating_points") or {}, m.get("operating_point")
        if default is not None and default not in points:
            raise BundleError(f"{where}: operating_point {default!r} is not among operating_points")
        if default is not None and abs(float(points[default]["threshold"]) - float(m["threshold"])) > 1e-12:
            raise BundleError(
                f"{where}: threshold {m['threshold']} is not the threshold of its operating point {default!r} "
                f"({points[default]['threshold']})"
            )
        for b in m["blocks"]:
            sel = b.get("selection_output")
            if sel and sel not in outputs:
                raise BundleError(f"{where}: blocks[].selection_output {sel!r} is not an output")

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def io(self) -> IoNames:
        io = self.manifest["io"]
        return IoNames(io["cc"], io["mlo"], io["logits"], io["prob"])

    @property
    def batch(self) -> int:
        return int(self.manifest["batch"])

    @property
    def dynamic_batch(self) -> bool:
        """The batch axis is dynamic (exported with --max-batch): 1..max_batch samples per run."""
        return self.manifest.get("max_batch") is not None

    @property
    def max_batch(self) -> int | None:
        mb = self.manifest.get("max_batch")
        return None if mb is None else int(mb)

    def accepts_batch(self, n: int) -> bool:
        return 1 <= n <= (self.max_batch or 0) if self.dynamic_batch else n == self.batch

    @property
    def precision(self) -> str:
        return str(self.manifest["precision"])

    @property
    def threshold(self) -> float:
        return float(self.manifest["threshold"])

    @property
    def operating_points(self) -> dict[str, OperatingPoint]:
        """Target name -> threshold chosen on the validation split (empty for a model trained without one)."""
        from ..train.operating_points import points_from

        return points_from(self.manifest.get("operating_points"))

    def operating_point(self, name: str | None = None) -> OperatingPoint:
        """The named operating point (None: the bundle's default; a bundle without any: its threshold)."""
        from ..train.operating_points import resolve

        return resolve(
            self.operating_points, name, default=self.manifest.get("operating_point"),
            legacy_threshold=self.threshold, legacy_method=self.manifest.get("threshold_method"), where=self.where,
        )  # fmt: skip

    @property
    def class_names(self) -> tuple[str, str]:
        names = self.manifest["class_names"]
        return str(names[0]), str(names[1])

    @property
    def label_rule(self) -> str | None:
        return self.manifest.get("label_rule")

    @property
    def inputs(self) -> list[dict[str, Any]]:
        return list(self.manifest["inputs"])

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return list(self.manifest["outputs"])

    def model_config(self) -> ModelConfig:
        from ..config import ModelConfig

        try:
            return ModelConfig.from_dict(self.manifest["model_config"])
        except (TypeError, ValueError) as exc:
            raise BundleError(f"{self.where}: model_config unusable ({exc})") from None

    def preprocess_settings(self) -> PreprocessSettings:
        from ..data.dicom import PreprocessSettings

        keys = set(PreprocessSettings.__dataclass_fields__)
        try:
            return PreprocessSettings.from_dict({k: v for k, v in self.manifest["preprocessing"].items() if k in keys})
        except (TypeError, ValueError) as exc:
            raise BundleError(f"{self.where}: preprocessing settings unusable ({exc})") from None

    def selection_outputs(self) -> dict[str, BlockKey]:
        """Output name -> (view, stage, block) for every block whose kept windows the graph returns."""
        return {
            str(b["selection_output"]): (str(b["view"]), int(b["stage"]), int(b["block"]))
            for b in self.manifest["blocks"]
            if b.get("selection_output")
        }

    def source_checkpoint(self) -> Path | None:
        p = self.manifest["source_checkpoint"].get("path")
        return Path(p) if p else None

    # ---- files -------------------------------------------------------------------------------
    def file(self, rel: str) -> Path:
        """A verified file of the bundle by its manifest path."""
        if rel not in self.manifest["files"]:
            raise BundleError(f"{self.where}: {rel!r} is not a file of this bundle")
        return self.root / rel

    @property
    def graphs(self) -> dict[str, Path]:
        return {p: self.root / f for p, f in self.manifest["graphs"].items()}

    def graph(self, precision: str | None = None) -> Path:
        """The ONNX graph for `precision` (fp32 | fp16); None: the one the user pointed at, else the served one."""
        if precision is None:
            if self.chosen is not None and self.chosen.suffix == ".onnx":
                return self.chosen
            return self.root / self.manifest["model"]
        graphs = self.manifest["graphs"]
        if precision not in graphs:
            have = ", ".join(sorted(graphs)) or "none"
            raise BundleError(f"{self.where}: no {precision} graph in the bundle (has {have})")
        return self.root / graphs[precision]

    def graph_precision(self, path: Path) -> str:
        rel = path.relative_to(self.root).as_posix()
        for prec, f in self.manifest["graphs"].items():
            if f == rel:
                return str(prec)
        raise BundleError(f"{path}: not a graph of the bundle {self.root}")

    @property
    def engines(self) -> list[EngineRef]:
        return [EngineRef(self.root / e["path"], e) for e in self.manifest["engines"]]

    def engine(self, compute_capability: str | None = None) -> EngineRef:
        """The engine the user pointed at, else the first built for `compute_capability` (any if None)."""
        engines = self.engines
        if self.chosen is not None and self.chosen.suffix in (".engine", ".plan"):
            for e in engines:
                if e.path == self.chosen:
                    return e
            raise BundleError(f"{self.chosen}: listed as a file, but not as an engine in {self.where}")
        if not engines:
            why = self.manifest.get("engine_skipped") or "none was built"
            raise BundleError(f"{self.root}: the bundle has no engine ({why})")
        if compute_capability is None:
            return engines[0]
        for e in engines:
            if compute_capability in (e.entry.get("compute_capabilities") or [e.entry["compute_capability"]]):
                return e
        have = ", ".join(e.entry["compute_capability"] for e in engines)
        raise BundleError(f"{self.root}: no engine for compute capability {compute_capability} (has {have})")

    def describe(self) -> dict[str, Any]:
        """What `xpr verify` prints."""
        return {
            "bundle": str(self.root),
            "name": self.name,
            "manifest_sha256": self.digest,
            "format_version": self.manifest["format_version"],
            "toolkit_version": self.manifest["toolkit_version"],
            "files": dict(self.manifest["files"]),
            "graphs": dict(self.manifest["graphs"]),
            "served": self.manifest["model"],
            "engines": [
                {"path": e.entry["path"], "backend": e.flavour, "sm": e.entry["compute_capability"]}
                for e in self.engines
            ],
            "io": self.manifest["io"],
            "threshold": self.threshold,
            "operating_points": {k: p.threshold for k, p in self.operating_points.items()},
            "operating_point": self.manifest.get("operating_point"),
        }


def _bundle_root(p: Path) -> Path:
    """The bundle folder of a file inside it: its folder, or one up (engines/model.sm86.engine)."""
    for cand in (p.parent, p.parent.parent):
        if (cand / MANIFEST).exists() or (cand / MANIFEST).is_symlink():
            return cand
    raise BundleError(f"{p}: not inside an export bundle (no {MANIFEST} beside it or one folder up)")


def check_bundle_target(out: str | Path) -> None:
    """`xpr export --out`: new, empty or an earlier bundle (replaced whole); a file or other folder is refused."""
    from ..io import check_folder_target

    check_folder_target(out, MANIFEST, "an export bundle")


def verify_bundle(path: str | Path) -> BundleView:
    """`xpr verify`: every check, or a BundleError naming the file and what differs."""
    return BundleView.open(path)


def rewrite_file(view: BundleView, rel: str, data: bytes) -> BundleView:
    """Replace one listed file (e.g. parity.json after `xpr validate`) and re-seal the manifest.

    The bundle is verified first (it is the one given), so re-sealing never blesses an edit made by
    someone else; the file is written atomically, then the manifest.
    """
    import hashlib

    from ..io import write_bytes
    from .seal import write_sealed

    fresh = BundleView.open(view.root)  # nothing changed since it was read
    path = fresh.file(rel)
    write_bytes(path, data)
    manifest = dict(fresh.manifest)
    manifest["files"] = {**manifest["files"], rel: hashlib.sha256(data).hexdigest()}
    write_sealed(fresh.root, manifest)
    return BundleView.open(fresh.root)
