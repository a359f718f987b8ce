"""`xpr predict`: per-breast malignancy probability and decision for folders of DICOM studies.

A thin front over the study pipeline (`pipeline.StudyPipeline`: index → select → preprocess →
runner → writers). The model comes through the runner layer (`xpr_deploy.runners`): a checkpoint
runs eager, a bundle is verified whole before its graph or engine is loaded, and the backend runs
with the settings `xpr validate` certifies. Bad files and breasts that cannot be answered never
stop a run: they become rejects with a one-line reason; images the selection leaves out are listed
in `not_used` with the rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .pipeline import PREFER, StudyPipeline
from .results import BreastResult, PredictReport, SelectionArrays, device_identity, heatmap_png, write_dicom_results
from .runners import BACKENDS, ModelSource, open_source

__all__ = [
    "BACKENDS",
    "PREFER",
    "BreastResult",
    "ModelSource",
    "PredictReport",
    "SelectionArrays",
    "StudyPipeline",
    "device_identity",
    "heatmap_png",
    "open_source",
    "predict",
    "write_dicom_results",
]


def predict(
    model_path: str | Path,
    studies: Sequence[str | Path],
    backend: str | None = None,
    heatmaps_dir: str | Path | None = None,
    *,
    operating_point: str | None = None,
    dicom_out: str | Path | None = None,
    input_ids: Sequence[str] | None = None,
    prefer: str = "acquired",
    strict: bool = False,
    sr: str = "tid1500",
    seg: str = "binary",
    triton: str | None = None,
    triton_model: str | None = None,
) -> PredictReport:
    """Predict every breast (the CC and MLO the selection chooses) found under `studies`.

    `operating_point`: youden, sens=0.90, ... (None: the model's default); `dicom_out`: a folder for
    the DICOM results (SRs per study and heatmap Segmentations per image, `dicom_out`; `sr`:
    tid1500 | mammo-cad | both, `seg`: binary | fractional | both); `prefer`: acquired or synthesized 2D when a study
    holds both; `strict`: every choice is a rejection; `triton`: the model runs on that Triton server
    (`triton_model`: its name there). Output names carry a short hash of the input
    (`input_ids`, default: each folder's resolved path), so the same study in two folders never
    overwrites the other's results."""
    with StudyPipeline(model_path, backend, operating_point=operating_point, heatmaps_dir=heatmaps_dir,
                       dicom_out=dicom_out, prefer=prefer, strict=strict, sr=sr, seg=seg, triton=triton,
                       triton_model=triton_model) as pipeline:  # fmt: skip
        return pipeline.run(studies, input_ids)
