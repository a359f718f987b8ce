"""One factory from a model path (checkpoint, bundle, or a graph/engine inside a bundle) plus a
backend name to a runner. predict, validate, bench, the demo and the Triton model all call it, so
the configuration a command runs is decided here once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..bundle import BundleError, BundleView, IoNames
from ..config import ModelConfig
from ..errors import PredictError
from .base import DEFAULT_IO
from .registry import BACKENDS, BackendSpec, RunnerRequest, backend_spec, check_backend

if TYPE_CHECKING:
    from ..data.dicom import PreprocessSettings
    from ..train.operating_points import OperatingPoint
    from .base import XprRunnerMixin
    from .onnxrt import OrtSettings


#: the modules that declare a backend (`registry.register_backend`), imported once so the registry is full
BACKEND_MODULES = ("onnxrt", "eager", "trt", "int8", "triton_client")


@dataclass
class ModelSource:
    """What a MODEL argument points at, and the facts every backend needs from it."""

    kind: str  # "checkpoint" | "bundle"
    path: Path
    cfg: ModelConfig
    settings: PreprocessSettings
    threshold: float
    class_names: tuple[str, str]
    io: IoNames = DEFAULT_IO
    bundle: BundleView | None = None
    checkpoint: Path | None = None
    operating_points: dict[str, OperatingPoint] = field(default_factory=dict)
    default_point: str | None = None
    threshold_method: str | None = None
    weights_sha256: str | None = None  # a checkpoint's weights (a bundle is identified by `digest`)

    def operating_point(self, name: str | None = None) -> OperatingPoint:
        """The named operating point (None: the model's default) — from the checkpoint meta or the manifest."""
        from ..train.operating_points import resolve

        return resolve(
            self.operating_points, name, default=self.default_point, legacy_threshold=self.threshold,
            legacy_method=self.threshold_method, where=str(self.path),
        )  # fmt: skip

    @property
    def natural_backend(self) -> str:
        """checkpoint -> eager; engine file -> engine; a graph file -> the backend that serves its
        precision (registry: `serves_precision`); a bundle -> onnx (its served graph)."""
        if self.bundle is None:
            return "eager"
        chosen = self.bundle.chosen
        if chosen is not None and chosen.suffix in (".engine", ".plan"):
            return "engine"
        if chosen is not None and chosen.suffix == ".onnx":
            prec = self.bundle.graph_precision(chosen)
            for spec in BACKENDS.values():
                if prec in spec.serves_precision:
                    return spec.name
        return "onnx"

    @property
    def digest(self) -> str | None:
        return self.bundle.digest if self.bundle is not None else None


def _is_bundle_path(p: Path) -> bool:
    if p.is_dir():
        return (p / "manifest.json").exists() or (p / "manifest.json").is_symlink()
    return p.name == "manifest.json" or p.suffix in (".onnx", ".engine", ".plan")


def open_source(model_path: str | Path) -> ModelSource:
    """A checkpoint (folder / run folder / meta.json) or an export bundle, verified before use."""
    p = Path(model_path)
    if not p.exists():
        raise PredictError(f"{p}: no such model (give a checkpoint or an export bundle)")
    if _is_bundle_path(p):
        view = BundleView.open(p)
        cfg = view.model_config()
        settings = view.preprocess_settings()
        return ModelSource(
            "bundle", p, cfg, settings, view.threshold, view.class_names, view.io, view, view.source_checkpoint(),
            operating_points=view.operating_points, default_point=view.manifest.get("operating_point"),
            threshold_method=view.manifest.get("threshold_method"),
        )  # fmt: skip
    from ..train.checkpoint import CheckpointError, model_config_of, read_meta
    from ..train.operating_points import points_from

    try:
        meta = read_meta(p)
    except CheckpointError as exc:
        raise PredictError(f"{p}: not a checkpoint or export bundle ({exc})") from None
    cfg = model_config_of(meta)
    ckpt = Path(meta["checkpoint_dir"])
    settings = _checkpoint_settings(meta.get("preprocess"), cfg, ckpt / "meta.json")
    names = list(meta.get("class_names") or cfg.class_names)
    return ModelSource(
        "checkpoint", p, cfg, settings, float(meta.get("threshold", 0.5)), (str(names[0]), str(names[1])),
        checkpoint=ckpt, operating_points=points_from(meta.get("operating_points")),
        default_point=meta.get("operating_point"), threshold_method=meta.get("threshold_method"),
        weights_sha256=meta.get("weights_sha256"),
    )  # fmt: skip


def _checkpoint_settings(d: dict[str, Any] | None, cfg: ModelConfig, where: Path) -> PreprocessSettings:
    from ..data.dicom import PreprocessSettings

    if not d:
        return PreprocessSettings.for_config(cfg)
    keys = set(PreprocessSettings.__dataclass_fields__)
    try:
        s = PreprocessSettings.from_dict({k: v for k, v in d.items() if k in keys})
    except (TypeError, ValueError) as exc:
        raise PredictError(f"{where}: preprocessing settings unusable ({exc})") from None
    if tuple(s.img_size) != tuple(cfg.img_size):
        raise PredictError(f"{where}: preprocessing size {s.img_size} differs from the model input {cfg.img_size}")
    return s


def source_model(source: ModelSource) -> Any:
    """The eager model of a source: its checkpoint, or a random-weight bundle's recorded seed.

    A bundle's source checkpoint must still hold the weights the bundle was exported from.
    """
    from ..train.checkpoint import load_checkpoint

    if source.kind == "checkpoint":
        assert source.checkpoint is not None
        return load_checkpoint(source.checkpoint)[0]
    view = source.bundle
    assert view is not None
    src = view.manifest["source_checkpoint"]
    if src.get("path"):
        ckpt = Path(src["path"])
        if not ckpt.exists():
            raise PredictError(
                f"{source.path}: the bundle's source checkpoint {ckpt} is not here (a relative path is relative "
                "to where `xpr export` ran); give the checkpoint itself as MODEL"
            )
        model, meta = load_checkpoint(ckpt)
        want = src.get("weights_sha256")
        if want and meta.get("weights_sha256") != want:
            raise BundleError(
                f"{ckpt}: weights SHA-256 {str(meta.get('weights_sha256'))[:12]}… differ from those the bundle "
                f"{view.root} was exported from ({want[:12]}…)"
            )
        return model
    if src.get("random_seed") is not None:
        from ..model.xpruning import random_model

        return random_model(source.cfg, int(src["random_seed"]))
    raise PredictError(f"{view.where}: names no source checkpoint and no random seed: no eager model")


def make_runner(
    source: ModelSource | str | Path,
    backend: str | None = None,
    *,
    precision: str | None = None,
    selection: bool = False,
    all_selections: bool = False,
    scores: bool = False,
    ort: OrtSettings | None = None,
    device: str = "cpu",
    model: Any = None,
    name: str | None = None,
    triton: str | None = None,
    triton_model: str | None = None,
) -> XprRunnerMixin:
    """The runner for `backend` (None: the source's natural one: checkpoint -> eager, bundle -> onnx,
    engine file -> engine), built by the backend's registered `build`. `selection`: kept windows the
    model returns as outputs (eager: all pruned blocks); `all_selections`: ONNX graphs expose every
    block's TopK indices (parity); `scores`: the eager reference also returns window scores.
    `precision` picks a bundle graph (onnx) or the eager FP16 islands. `triton`: the server URL of the
    triton backend (`triton_model`: its model name there)."""
    check_backend(backend)  # an unknown name fails before the model is opened
    src = source if isinstance(source, ModelSource) else open_source(source)
    spec = backend_spec(backend or src.natural_backend)
    if spec.needs == "bundle" and src.bundle is None:
        raise PredictError(f"{src.path}: the {spec.name} backend needs an export bundle (run `xpr export`)")
    req = RunnerRequest(
        precision=precision, selection=selection, all_selections=all_selections, scores=scores, ort=ort,
        device=device, model=model, name=name, triton=triton, triton_model=triton_model,
    )  # fmt: skip
    return spec.build(src, req)


def _register_all() -> None:
    import importlib

    for mod in BACKEND_MODULES:
        importlib.import_module(f"{__package__}.{mod}")


_register_all()

__all__ = [
    "BACKENDS", "BACKEND_MODULES", "BackendSpec", "ModelSource", "check_backend", "make_runner", "open_source",
    "source_model",
]  # fmt: skip
