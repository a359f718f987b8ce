"""What a prediction run gives back, and the writers of its result files.

- `PredictReport` / `BreastResult`: the JSON answer (`xpr predict --json`): per answered breast the
  probability, the decision and the two SOP Instance UIDs read; the images not used and the
  breasts not answered, each with its reason.
- `heatmap_png`: the per-breast window-selection figure (`--heatmaps`), drawn by `heatmap.py`.
- `breast_dicom` / `write_dicom_results`: the DICOM results (`--dicom-out`): the SR(s) per study (`--sr`) and a
  heatmap Segmentation per image, built by `dicom_out.py`.

The study pipeline (`pipeline.py`) calls these writers, and only it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import NUM_STAGES, ModelConfig
from .io import child_path, uid_name

if TYPE_CHECKING:
    from .data.dicom import Geometry
    from .data.pairs import BreastPair
    from .runners import ModelSource
    from .train.operating_points import OperatingPoint

#: (view, stage, block) -> kept window indices [B, K]
SelectionArrays = dict[tuple[str, int, int], np.ndarray]


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
    cc_uid: str = ""  # the SOP Instance UIDs of the two images read
    mlo_uid: str = ""
    notes: list[str] = field(default_factory=list)  # what the image selection says with this answer

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "study": self.study,
            "laterality": self.laterality,
            "prob": self.prob,
            "decision": self.decision,
            "cc": self.cc,
            "mlo": self.mlo,
            "cc_sop_instance_uid": self.cc_uid,
            "mlo_sop_instance_uid": self.mlo_uid,
        }
        if self.notes:
            d["selection"] = list(self.notes)
        if self.heatmap:
            d["heatmap"] = self.heatmap
        return d


@dataclass
class PredictReport:
    model: str
    backend: str
    threshold: float
    breasts: list[BreastResult] = field(default_factory=list)
    rejects: list[dict[str, str]] = field(default_factory=list)  # files unreadable, breasts not answered
    runner: dict[str, Any] = field(default_factory=dict)  # what ran: backend, provider, precision, ...
    bundle_sha256: str | None = None  # the verified bundle's manifest digest
    operating_point: str = "threshold"  # the name of the operating point `threshold` belongs to
    dicom: list[str] = field(default_factory=list)  # DICOM result objects written (--dicom-out)
    notes: list[str] = field(default_factory=list)  # what was left out, one line each
    not_used: list[dict[str, str]] = field(default_factory=list)  # images the selection left out: path, sop_uid, reason

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
            "not_used": list(self.not_used),
            "dicom": list(self.dicom),
            "notes": list(self.notes),
        }


def decision_of(prob: float, threshold: float, names: Sequence[str]) -> str:
    return str(names[1] if prob >= threshold else names[0])


# ---- heatmap PNG -----------------------------------------------------------------------------
def _display(path: Path) -> np.ndarray:
    """The stored image as a viewer shows it (window, MONOCHROME1 inverted), in [0, 1]."""
    from .data.dicom import decode_stored, read_image, to_display
    from .data.header import pixel_meta

    ds = read_image(path)
    return to_display(decode_stored(ds, str(path)), pixel_meta(ds, str(path)))


def heatmap_png(
    out_dir: Path,
    pair: BreastPair,
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
    study = str(pair.study_id).replace("$", r"\$")  # header text, not matplotlib mathtext
    title = (
        f"{study} · {lat} breast · P(malignant) = {prob:.3f} → {decision} "
        f"(operating point {point.name}, threshold {point.threshold:.3f})"
    )
    keep = ", ".join(f"s{s} {1 - cfg.prune_rates[s - 1]:.0%}" for s in range(1, NUM_STAGES + 1))
    subtitle = f"window selection per stage: how many blocks kept each 7x7 window (keep ratio {keep})"
    name = f"{uid_name(pair.study_id)}_{lat}{'_' + tag if tag else ''}.png"  # a hash unless a valid UID
    return render(child_path(out_dir, name), views, maps, cfg, title, subtitle)


# ---- DICOM results ---------------------------------------------------------------------------
def breast_dicom(
    pair: BreastPair,
    prob: float,
    decision: str,
    sel: SelectionArrays | None,
    source: ModelSource,
    geos: dict[str, Geometry],
) -> Any:
    """One breast's DICOM result input: the headers of the two images read (the SR's evidence) and its heatmaps."""
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
    notes: list[str] | None = None,
    *,
    sr: str = "tid1500",
    seg: str = "binary",
) -> list[Path]:
    """Per (input, study): the SR(s) (`sr`) and the heatmap Segmentations, under OUT/<StudyInstanceUID>/.

    A study whose results cannot be built or written, and values left empty in them, are one line
    each in `notes` (the report's notes: its breasts were answered); the other studies get theirs."""
    from .dicom_out import write_study_results

    done = write_study_results(out_dir, results, device_identity(source, point), sr=sr, seg=seg)
    if notes is not None:
        notes.extend(done.warnings + done.failures)
    return done.paths
