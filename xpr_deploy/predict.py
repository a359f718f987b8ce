"""`xpr predict`: per-breast malignancy probability and decision for folders of DICOM studies.

Backends sit behind one small runner interface (as in polygraphy): a runner is built from a model
source, activated once, and asked for P(malignant) (and, for heatmaps, the kept windows) one breast
at a time. GPU libraries are imported only inside the runner that needs them, so `eager` and `onnx`
work on any machine and `engine` fails with the reason where it cannot run.

Bad files and incomplete breasts never stop a run: they become rejects with a one-line reason.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import NUM_STAGES, ModelConfig
from .errors import BackendUnavailable, PredictError, XprError

if TYPE_CHECKING:
    from .data.dicom import Geometry, PreprocessSettings

BACKENDS = ("eager", "onnx", "engine")
#: (view, stage, block) -> kept window indices [B, K]
SelectionArrays = dict[tuple[str, int, int], np.ndarray]


# ---- model sources ---------------------------------------------------------------------------
@dataclass
class ModelSource:
    """What a MODEL argument points at, and the facts every backend needs from it."""

    kind: str  # "checkpoint" | "bundle" | "engine"
    path: Path
    cfg: ModelConfig
    settings: PreprocessSettings
    threshold: float
    class_names: tuple[str, str]
    manifest: dict[str, Any] | None = None
    bundle: Path | None = None
    engine: Path | None = None
    checkpoint: Path | None = None


def _settings(d: dict[str, Any] | None, cfg: ModelConfig, where: Path) -> PreprocessSettings:
    from .data.dicom import PreprocessSettings

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


def _names(raw: Any) -> tuple[str, str]:
    names = list(raw)
    return str(names[0]), str(names[1])


def _bundle_source(path: Path, bundle: Path) -> ModelSource:
    from .export.manifest import read_manifest

    manifest = read_manifest(bundle)  # checked against export/manifest.schema.json
    where = bundle / "manifest.json"
    try:
        cfg = ModelConfig.from_dict(manifest["model_config"])
    except (TypeError, ValueError) as exc:
        raise PredictError(f"{where}: invalid model_config ({exc})") from None
    src = manifest["source_checkpoint"].get("path")
    return ModelSource(
        "bundle",
        path,
        cfg,
        _settings(manifest["preprocessing"], cfg, where),
        float(manifest["threshold"]),
        _names(manifest["class_names"]),
        manifest=manifest,
        bundle=bundle,
        checkpoint=Path(src) if src else None,  # for --backend eager on a bundle
    )


def resolve_model(model_path: str | Path) -> ModelSource:
    """A checkpoint (folder / run folder / meta.json), an export bundle (manifest.json), or an engine file."""
    p = Path(model_path)
    if not p.exists():
        raise PredictError(f"{p}: no such model (give a checkpoint, an export bundle or an engine)")
    if p.is_file() and p.suffix in (".engine", ".plan"):
        for cand in (p.parent, p.parent.parent):
            if (cand / "manifest.json").is_file():
                src = _bundle_source(cand, cand)
                src.kind, src.path, src.engine = "engine", p, p
                return src
        raise PredictError(f"{p}: engine without a manifest.json beside it (or one folder up)")
    bundle = p if p.is_dir() else p.parent
    if (bundle / "manifest.json").is_file() and (p.is_dir() or p.name == "manifest.json" or p.suffix == ".onnx"):
        return _bundle_source(p, bundle)
    from .train.checkpoint import CheckpointError, model_config_of, read_meta

    try:
        meta = read_meta(p)
    except CheckpointError as exc:
        raise PredictError(f"{p}: not a checkpoint, export bundle or engine ({exc})") from None
    cfg = model_config_of(meta)
    ckpt = Path(meta["checkpoint_dir"])
    settings = _settings(meta.get("preprocess"), cfg, ckpt / "meta.json")
    names = _names(meta.get("class_names") or cfg.class_names)
    return ModelSource("checkpoint", p, cfg, settings, float(meta.get("threshold", 0.5)), names, checkpoint=ckpt)


# ---- runners ---------------------------------------------------------------------------------
class Runner(ABC):
    """One backend: `with runner:` loads it; `infer` maps [1, 1, H, W] views to P(malignant) [1]."""

    backend = "?"

    def __init__(self, source: ModelSource) -> None:
        self.source = source
        self.cfg = source.cfg

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.deactivate()

    @abstractmethod
    def activate(self) -> None: ...

    def deactivate(self) -> None:
        return None

    @property
    def has_selection(self) -> bool:
        return True

    @abstractmethod
    def infer(self, cc: np.ndarray, mlo: np.ndarray, selection: bool = False) -> tuple[np.ndarray, SelectionArrays]:
        """(P(malignant) [B] float64, kept windows per block or {} when not asked)."""

    def full_selection(self, partial: SelectionArrays, batch: int) -> SelectionArrays:
        """Fill dense blocks (K = N, no TopK in the graph) with every window."""
        from .model.summary import block_table

        out: SelectionArrays = {}
        for b in block_table(self.cfg):
            key = (b.view, b.stage, b.block)
            if key in partial:
                out[key] = partial[key]
            elif b.k >= b.windows:
                out[key] = np.broadcast_to(np.arange(b.windows), (batch, b.windows))
            else:
                raise PredictError(f"{self.source.path}: no kept-window output for {key}")
        return out


class EagerRunner(Runner):
    """PyTorch on the CPU (or CUDA when asked): the reference, and the only one that needs a checkpoint."""

    backend = "eager"

    def __init__(self, source: ModelSource, device: str = "cpu") -> None:
        super().__init__(source)
        self.device = device
        self.model: Any = None

    def activate(self) -> None:
        from .train.checkpoint import load_checkpoint

        ckpt = self.source.checkpoint
        if ckpt is None:
            raise PredictError(f"{self.source.path}: the eager backend needs a checkpoint; this bundle names none")
        if self.source.kind != "checkpoint" and not ckpt.exists():
            raise PredictError(
                f"{self.source.path}: the bundle's source checkpoint {ckpt} is not here (a relative path is relative "
                "to where `xpr export` ran); give the checkpoint itself as MODEL"
            )
        self.model, _ = load_checkpoint(ckpt, device=self.device)

    def infer(self, cc: np.ndarray, mlo: np.ndarray, selection: bool = False) -> tuple[np.ndarray, SelectionArrays]:
        import torch

        from .model.xpruning import malignancy_probability

        x_cc = torch.from_numpy(np.ascontiguousarray(cc)).to(self.device)
        x_mlo = torch.from_numpy(np.ascontiguousarray(mlo)).to(self.device)
        with torch.no_grad():
            if not selection:
                return malignancy_probability(self.model(x_cc, x_mlo)).cpu().numpy().astype(np.float64), {}
            logits, sel = self.model(x_cc, x_mlo, return_selection=True)
        prob = malignancy_probability(logits).cpu().numpy().astype(np.float64)
        return prob, {k: v.cpu().numpy() for k, v in sel.items()}


class OnnxRunner(Runner):
    """ONNX Runtime on the bundle's graph (CUDA provider when installed and usable, else CPU)."""

    backend = "onnx"

    def __init__(self, source: ModelSource, precision: str | None = None) -> None:
        super().__init__(source)
        self.precision = precision  # "fp32" | "fp16" | None: the bundle's served graph
        self.session: Any = None
        self.outputs: list[str] = []

    def onnx_path(self) -> Path:
        from .triton import onnx_file

        bundle = self.source.bundle
        if bundle is None:
            raise PredictError(f"{self.source.path}: the onnx backend needs an export bundle (run `xpr export`)")
        try:
            return onnx_file(bundle, self.source.manifest or {}, self.precision)
        except XprError as exc:
            raise PredictError(str(exc)) from None

    def activate(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable(f"onnxruntime is not installed ({exc})") from None
        path = self.onnx_path()
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            raise PredictError(f"{path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0][:200]})") from None
        self.outputs = [o.name for o in self.session.get_outputs()]
        if "prob" not in self.outputs:
            raise PredictError(f"{path}: graph has no 'prob' output (outputs: {', '.join(self.outputs)})")
        self.batch = (
            int(self.session.get_inputs()[0].shape[0])
            if isinstance(self.session.get_inputs()[0].shape[0], int)
            else None
        )

    @property
    def has_selection(self) -> bool:
        return any(o.startswith("sel_") for o in self.outputs)

    def infer(self, cc: np.ndarray, mlo: np.ndarray, selection: bool = False) -> tuple[np.ndarray, SelectionArrays]:
        if selection and not self.has_selection:
            raise PredictError(
                f"{self.source.path}: the bundle has no kept-window outputs; re-export with --with-selection "
                "or predict with the checkpoint (eager) for heatmaps"
            )
        names = ["prob", *([o for o in self.outputs if o.startswith("sel_")] if selection else [])]
        res = self.session.run(names, {"cc": cc.astype(np.float32), "mlo": mlo.astype(np.float32)})
        prob = np.asarray(res[0], dtype=np.float64).reshape(-1)
        if not selection:
            return prob, {}
        keys = selection_keys(self.source.manifest)
        sel = {keys.get(n) or _parse_sel_name(n): np.asarray(a) for n, a in zip(names[1:], res[1:], strict=True)}
        return prob, self.full_selection(sel, cc.shape[0])


def selection_keys(manifest: dict[str, Any] | None) -> dict[str, tuple[str, int, int]]:
    """Output name -> (view, stage, block), from the manifest's `blocks[].selection_output`."""
    out = {}
    for b in (manifest or {}).get("blocks") or []:
        if isinstance(b, dict) and b.get("selection_output"):
            out[str(b["selection_output"])] = (str(b["view"]), int(b["stage"]), int(b["block"]))
    return out


def _parse_sel_name(name: str) -> tuple[str, int, int]:
    """'sel_cc_s1_b0' -> ('cc', 1, 0) (the export's selection_output_name)."""
    _, view, s, b = name.split("_")
    return view, int(s[1:]), int(b[1:])


class EngineRunner(Runner):
    """A TensorRT / TensorRT-RTX engine through `xpr_deploy.engine.runtime` (needs an NVIDIA GPU)."""

    backend = "engine"

    def __init__(self, source: ModelSource) -> None:
        super().__init__(source)
        self.runtime: Any = None

    def _engine_path(self) -> Path:
        if self.source.engine is not None:
            return self.source.engine
        for e in (self.source.manifest or {}).get("engines") or []:
            path = e.get("path") or e.get("file") if isinstance(e, dict) else None
            if path:
                p = Path(path)
                return p if p.is_absolute() else (self.source.bundle or Path()) / p
        why = (self.source.manifest or {}).get("engine_skipped") or "none was built"
        raise PredictError(f"{self.source.path}: the bundle has no engine ({why})")

    def activate(self) -> None:
        path = self._engine_path()
        from .engine.runtime import load_engine

        # checks hash, backend version and GPU first: BackendUnavailable (with the reason) on a machine without one
        self.runtime = load_engine(path)

    @property
    def has_selection(self) -> bool:
        names = getattr(self.runtime, "output_names", None) or []
        return any(str(n).startswith("sel_") for n in names)

    def infer(self, cc: np.ndarray, mlo: np.ndarray, selection: bool = False) -> tuple[np.ndarray, SelectionArrays]:
        out = self.runtime.infer({"cc": cc.astype(np.float32), "mlo": mlo.astype(np.float32)})
        prob = np.asarray(out["prob"], dtype=np.float64).reshape(-1)
        if not selection:
            return prob, {}
        keys = selection_keys(self.source.manifest)
        sel = {keys.get(k) or _parse_sel_name(k): np.asarray(v) for k, v in out.items() if str(k).startswith("sel_")}
        if not sel:
            raise PredictError(
                f"{self._engine_path()}: engine has no kept-window outputs (build from --with-selection)"
            )
        return prob, self.full_selection(sel, cc.shape[0])


def make_runner(source: ModelSource, backend: str | None = None) -> Runner:
    """The runner for `backend`; None picks the natural one for the source (checkpoint -> eager, ...)."""
    backend = backend or {"checkpoint": "eager", "bundle": "onnx", "engine": "engine"}[source.kind]
    if backend == "eager":
        return EagerRunner(source)
    if backend == "onnx":
        return OnnxRunner(source)
    if backend == "engine":
        return EngineRunner(source)
    raise PredictError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")


# ---- the report ------------------------------------------------------------------------------
@dataclass
class BreastResult:
    study: str
    laterality: str
    prob: float
    decision: str
    cc: str
    mlo: str
    heatmap: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "study": self.study,
            "laterality": self.laterality,
            "prob": self.prob,
            "decision": self.decision,
            "cc": self.cc,
            "mlo": self.mlo,
        }
        if self.heatmap:
            d["heatmap"] = self.heatmap
        return d


@dataclass
class PredictReport:
    model: str
    backend: str
    threshold: float
    breasts: list[BreastResult] = field(default_factory=list)
    rejects: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "backend": self.backend,
            "threshold": self.threshold,
            "breasts": [b.to_dict() for b in self.breasts],
            "rejects": list(self.rejects),
        }


def _decision(prob: float, threshold: float, names: Sequence[str]) -> str:
    return str(names[1] if prob >= threshold else names[0])


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)[:80]


def _display(path: Path) -> np.ndarray:
    """The stored image as a viewer shows it (window, MONOCHROME1 inverted), in [0, 1]."""
    from .data.dicom import PixelMeta, decode_stored, read_image, to_display

    ds = read_image(path)
    return to_display(decode_stored(ds, str(path)), PixelMeta.from_dataset(ds, str(path)))


def heatmap_png(
    out_dir: Path,
    pair: Any,
    prob: float,
    decision: str,
    threshold: float,
    sel: SelectionArrays,
    cfg: ModelConfig,
    geos: dict[str, Geometry],
) -> Path:
    """The per-breast selection-map figure (both views, every stage)."""
    from .heatmap import ViewImage, count_maps, render

    maps = count_maps(sel, cfg)
    lat = pair.laterality
    views = {
        "cc": ViewImage(_display(pair.cc), geos["cc"], f"{lat} CC"),
        "mlo": ViewImage(_display(pair.mlo), geos["mlo"], f"{lat} MLO"),
    }
    title = f"{pair.study_id} · {lat} breast · P(malignant) = {prob:.3f} → {decision} (threshold {threshold:.3f})"
    keep = ", ".join(f"s{s} {1 - cfg.prune_rates[s - 1]:.0%}" for s in range(1, NUM_STAGES + 1))
    subtitle = f"window selection per stage: how many blocks kept each 7x7 window (keep ratio {keep})"
    return render(out_dir / f"{_safe(pair.study_id)}_{lat}.png", views, maps, cfg, title, subtitle)


def predict(
    model_path: str | Path,
    studies: Sequence[str | Path],
    backend: str | None = None,
    heatmaps_dir: str | Path | None = None,
) -> PredictReport:
    """Predict every breast (one CC + one MLO) found under `studies`; bad files become rejects."""
    from .data.dicom import preprocess_with_geometry
    from .data.folder import load_folder

    if backend is not None and backend not in BACKENDS:
        raise PredictError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    source = resolve_model(model_path)
    runner = make_runner(source, backend)
    report = PredictReport(str(model_path), runner.backend, source.threshold)
    pairs = []
    seen: set[Path] = set()
    for study in studies:
        sp = Path(study)
        if not sp.exists():
            report.rejects.append({"path": str(sp), "reason": "no such file or folder"})
            continue
        idx = load_folder(sp)
        report.rejects.extend(r.to_dict() for r in idx.rejects)
        for p in idx.pairs:
            if p.cc.resolve() not in seen:  # the same file given twice (nested arguments) is predicted once
                seen.add(p.cc.resolve())
                pairs.append(p)
    out_dir = Path(heatmaps_dir) if heatmaps_dir is not None else None
    h, w = source.cfg.img_size
    with runner:
        if out_dir is not None and not runner.has_selection:
            raise PredictError(
                f"{source.path}: the {runner.backend} model has no kept-window outputs for --heatmaps "
                "(export with --with-selection, or use the checkpoint)"
            )
        for pair in pairs:
            arrays, geos = {}, {}
            try:
                for view, path in (("cc", pair.cc), ("mlo", pair.mlo)):
                    arrays[view], geos[view] = preprocess_with_geometry(path, source.settings)
            except XprError as exc:  # header fine, pixels not (truncated, no decoder, empty breast)
                report.rejects.append({"path": str(path), "reason": f"breast {pair.laterality} skipped: {exc}"})
                continue
            cc = arrays["cc"].reshape(1, 1, h, w)
            mlo = arrays["mlo"].reshape(1, 1, h, w)
            prob_arr, sel = runner.infer(cc, mlo, selection=out_dir is not None)
            prob = float(prob_arr[0])
            decision = _decision(prob, source.threshold, source.class_names)
            res = BreastResult(pair.study_id, pair.laterality, prob, decision, str(pair.cc), str(pair.mlo))
            if out_dir is not None:
                png = heatmap_png(out_dir, pair, prob, decision, source.threshold, sel, source.cfg, geos)
                res.heatmap = str(png)
            report.breasts.append(res)
    return report


# ---- the demo step ---------------------------------------------------------------------------
def _bad_study(folder: Path, example: Path) -> Path:
    """A study folder a PACS export might really contain: a non-DICOM file and a truncated image."""
    from .io import write_bytes

    write_bytes(folder / "README.bin", b"exported by a PACS; not an image\n")
    raw = example.read_bytes()
    write_bytes(folder / "truncated.dcm", raw[: len(raw) * 2 // 3])  # pixel data cut short
    return folder


def demo_step(ctx: Any) -> dict[str, Any]:
    """`xpr demo` step: predict the held-out studies (plus a broken one) with heatmaps; compare with eval."""
    from .io import write_json

    data = Path(ctx.artifacts["data"])
    ckpt = ctx.artifacts["checkpoint"]
    out = Path(ctx.out) / "predict"
    ev = ctx.artifacts.get("eval")
    eval_probs = {(b["study"], b["laterality"]): float(b["prob"]) for b in (ev.breasts if ev is not None else [])}
    folders = sorted({data / "images" / s for s, _ in eval_probs}) or sorted((data / "images").iterdir())[:4]
    bad = _bad_study(out / "inbox-broken-study", next(folders[0].iterdir()))
    rep = predict(ckpt, [*folders, bad], backend="eager", heatmaps_dir=out / "heatmaps")
    # VinDr's study id is the images/<study_id>/ folder; predict names studies by StudyInstanceUID
    by_breast = {(Path(b.cc).parent.name, b.laterality): b.prob for b in rep.breasts}
    common = sorted(set(by_breast) & set(eval_probs))
    vs_eval = max((abs(by_breast[k] - eval_probs[k]) for k in common), default=None)
    summary: dict[str, Any] = {
        "breasts": len(rep.breasts),
        "rejects": len(rep.rejects),
        "max_abs_diff_vs_eval": vs_eval,
        "heatmaps": str(out / "heatmaps"),
    }
    bundle = ctx.artifacts.get("bundle")
    if bundle is not None:  # the exported graph on the same studies
        bundle_dir = Path(getattr(bundle, "path", bundle))
        onnx = predict(bundle_dir, folders, backend="onnx")
        onnx_probs = {(Path(b.cc).parent.name, b.laterality): b.prob for b in onnx.breasts}
        summary["onnx_graph"] = str(resolve_model(bundle_dir).manifest.get("model"))  # type: ignore[union-attr]
        summary["max_abs_diff_onnx_vs_eager"] = max(
            (abs(onnx_probs[k] - by_breast[k]) for k in onnx_probs if k in by_breast), default=None
        )
    path = out / "predictions.json"
    write_json(path, {**rep.to_dict(), "compared": summary})
    ctx.artifacts["predictions"] = path
    return {**summary, "predictions": str(path)}
