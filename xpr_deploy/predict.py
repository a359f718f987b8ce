"""`xpr predict`: per-breast malignancy probability and decision for folders of DICOM studies.

The model comes through the runner layer (`xpr_deploy.runners`): a checkpoint runs eager, a bundle
is verified whole before its graph or engine is loaded, and the backend runs with the settings
`xpr validate` certifies. Bad files and incomplete breasts never stop a run: they become rejects
with a one-line reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import NUM_STAGES, ModelConfig
from .errors import PredictError, XprError
from .io import input_tag
from .runners import BACKENDS, ModelSource, check_backend, kept_windows, make_runner, open_source, probabilities

if TYPE_CHECKING:
    from .data.dicom import Geometry
    from .train.operating_points import OperatingPoint

#: (view, stage, block) -> kept window indices [B, K]
SelectionArrays = dict[tuple[str, int, int], np.ndarray]
__all__ = ["BACKENDS", "ModelSource", "PredictReport", "open_source", "predict"]


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
    runner: dict[str, Any] = field(default_factory=dict)  # what ran: backend, provider, precision, ...
    bundle_sha256: str | None = None  # the verified bundle's manifest digest
    operating_point: str = "threshold"  # the name of the operating point `threshold` belongs to
    dicom: list[str] = field(default_factory=list)  # DICOM result objects written (--dicom-out)
    notes: list[str] = field(default_factory=list)  # what was left out, one line each

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "backend": self.backend,
            "runner": self.runner,
            "bundle_sha256": self.bundle_sha256,
            "operating_point": self.operating_point,
            "threshold": self.threshold,
            "breasts": [b.to_dict() for b in self.breasts],
            "rejects": list(self.rejects),
            "dicom": list(self.dicom),
            "notes": list(self.notes),
        }


def _decision(prob: float, threshold: float, names: Sequence[str]) -> str:
    return str(names[1] if prob >= threshold else names[0])


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)[:80]


def _display(path: Path) -> np.ndarray:
    """The stored image as a viewer shows it (window, MONOCHROME1 inverted), in [0, 1]."""
    from .data.dicom import decode_stored, read_image, to_display
    from .data.header import pixel_meta

    ds = read_image(path)
    return to_display(decode_stored(ds, str(path)), pixel_meta(ds, str(path)))


def heatmap_png(
    out_dir: Path,
    pair: Any,
    prob: float,
    decision: str,
    point: OperatingPoint,
    sel: SelectionArrays,
    cfg: ModelConfig,
    geos: dict[str, Geometry],
    tag: str = "",
) -> Path:
    """The per-breast selection-map figure (both views, every stage); `tag` names the input."""
    from .heatmap import ViewImage, count_maps, render

    maps = count_maps(sel, cfg)
    lat = pair.laterality
    views = {
        "cc": ViewImage(_display(pair.cc), geos["cc"], f"{lat} CC"),
        "mlo": ViewImage(_display(pair.mlo), geos["mlo"], f"{lat} MLO"),
    }
    title = (
        f"{pair.study_id} · {lat} breast · P(malignant) = {prob:.3f} → {decision} "
        f"(operating point {point.name}, threshold {point.threshold:.3f})"
    )
    keep = ", ".join(f"s{s} {1 - cfg.prune_rates[s - 1]:.0%}" for s in range(1, NUM_STAGES + 1))
    subtitle = f"window selection per stage: how many blocks kept each 7x7 window (keep ratio {keep})"
    name = f"{_safe(pair.study_id)}_{lat}{'_' + tag if tag else ''}.png"
    return render(out_dir / name, views, maps, cfg, title, subtitle)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def predict(
    model_path: str | Path,
    studies: Sequence[str | Path],
    backend: str | None = None,
    heatmaps_dir: str | Path | None = None,
    *,
    operating_point: str | None = None,
    dicom_out: str | Path | None = None,
    input_ids: Sequence[str] | None = None,
    sr: str = "tid1500",
    seg: str = "binary",
) -> PredictReport:
    """Predict every breast (one CC + one MLO) found under `studies`; bad files become rejects.

    `operating_point`: youden, sens=0.90, ... (None: the model's default); `dicom_out`: a folder for
    the DICOM results (an SR per study and a heatmap Segmentation per image, `dicom_out.py`; `sr`:
    tid1500, `seg`: binary | fractional | both).
    Output names carry a short hash of the input (`input_ids`, default: each folder's resolved path),
    so the same study in two folders never overwrites the other's heatmap or DICOM objects."""
    from .data.dicom import preprocess_with_geometry
    from .data.folder import load_folder

    check_backend(backend)
    source = open_source(model_path)
    point = source.operating_point(operating_point)
    selection = heatmaps_dir is not None or dicom_out is not None
    runner = make_runner(source, backend, selection=selection)
    report = PredictReport(str(model_path), runner.backend, point.threshold, bundle_sha256=source.digest,
                           operating_point=point.name)  # fmt: skip
    pairs: list[tuple[str, Path, Any]] = []  # (input id, input folder, pair)
    seen: set[Path] = set()
    for i, study in enumerate(studies):
        sp = Path(study)
        ident = input_ids[i] if input_ids is not None else str(sp.resolve())
        if not sp.exists():
            report.rejects.append({"path": str(sp), "reason": "no such file or folder"})
            continue
        idx = load_folder(sp)
        report.rejects.extend(r.to_dict() for r in idx.rejects)
        report.notes.extend(n for n in idx.notes if n not in report.notes)
        for p in idx.pairs:
            if p.cc.resolve() not in seen:  # the same file given twice (nested arguments) is predicted once
                seen.add(p.cc.resolve())
                pairs.append((ident, sp, p))
    out_dir = Path(heatmaps_dir) if heatmaps_dir is not None else None
    h, w = source.cfg.img_size
    with runner:  # type: ignore[attr-defined]
        report.runner = runner.describe()
        if out_dir is not None and not runner.selection:
            raise PredictError(
                f"{source.path}: the {runner.backend} model has no kept-window outputs for --heatmaps "
                "(export with --with-selection, or use the checkpoint)"
            )
        if dicom_out is not None and not runner.selection:
            report.notes.append(
                f"{source.path}: the {runner.backend} model has no kept-window outputs: SR only, no heatmap objects "
                "(export with --with-selection)"
            )
        results: dict[tuple[str, str], list[Any]] = {}  # (input tag, study) -> BreastDicom (--dicom-out)
        for ident, sp, pair in pairs:
            arrays, geos = {}, {}
            try:
                for view, path in (("cc", pair.cc), ("mlo", pair.mlo)):
                    arrays[view], geos[view] = preprocess_with_geometry(path, source.settings)
            except XprError as exc:  # header fine, pixels not (truncated, no decoder, empty breast)
                report.rejects.append({"path": str(path), "reason": f"breast {pair.laterality} skipped: {exc}"})
                continue
            cc = arrays["cc"].reshape(1, 1, h, w)
            mlo = arrays["mlo"].reshape(1, 1, h, w)
            outputs = runner.infer({source.io.cc: cc, source.io.mlo: mlo})  # type: ignore[attr-defined]
            prob = float(probabilities(outputs, source.io)[0])
            decision = _decision(prob, point.threshold, source.class_names)
            res = BreastResult(pair.study_id, pair.laterality, prob, decision, str(pair.cc), str(pair.mlo))
            sel = kept_windows(outputs, runner.selection, source.cfg) if selection and runner.selection else None
            if out_dir is not None and sel is not None:
                tag = input_tag(ident, _rel(pair.cc, sp), _rel(pair.mlo, sp))
                png = heatmap_png(out_dir, pair, prob, decision, point, sel, source.cfg, geos, tag)
                res.heatmap = str(png)
            if dicom_out is not None:
                key = (input_tag(ident, pair.study_id), pair.study_id)
                results.setdefault(key, []).append(_breast_dicom(pair, prob, decision, sel, source, geos))
            report.breasts.append(res)
    if dicom_out is not None:
        report.dicom = [str(p) for p in write_dicom_results(dicom_out, results, source, point, sr=sr, seg=seg)]
    return report


def _breast_dicom(
    pair: Any, prob: float, decision: str, sel: SelectionArrays | None, source: ModelSource, geos: dict[str, Geometry]
) -> Any:
    from .dicom_out import BreastDicom, read_source, stage_heatmaps

    sources = {"cc": read_source(pair.cc), "mlo": read_source(pair.mlo)}
    maps = stage_heatmaps(sel, source.cfg, geos) if sel is not None else {}
    return BreastDicom(pair.laterality, prob, decision, sources, maps)


def device_identity(source: ModelSource, point: OperatingPoint) -> Any:
    """The SR's observer device: the model's name, xpr's version, the bundle digest (checkpoint: weights SHA-256)."""
    from .dicom_out import DeviceIdentity
    from .version import __version__

    if source.bundle is not None:
        name = source.bundle.name
    else:
        name = f"{source.cfg.name}:{source.checkpoint.name if source.checkpoint else source.path.name}"
    return DeviceIdentity(name, __version__, source.digest or source.weights_sha256, point, source.class_names)


def write_dicom_results(
    out_dir: str | Path,
    results: dict[tuple[str, str], list[Any]],
    source: ModelSource,
    point: OperatingPoint,
    *,
    sr: str = "tid1500",
    seg: str = "binary",
) -> list[Path]:
    """Per (input, study): the SR and the heatmap Segmentations, under OUT/<StudyInstanceUID>/."""
    from .dicom_out import study_objects, write_objects

    device = device_identity(source, point)
    paths: list[Path] = []
    for tag, study in sorted(results):
        paths += write_objects(out_dir, study_objects(results[tag, study], device, sr=sr, seg=seg), tag)
    return paths
