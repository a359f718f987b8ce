"""The one study pipeline: index → select → preprocess → runner → result writers.

Every front uses it: `xpr predict` on folders (`predict.predict`), the DICOMweb path (through
`predict`), and the DICOM node (`xpr listen`, one spooled study folder at a time). The model is
opened once and stays open across studies:

    with StudyPipeline("bundle/", operating_point="youden", dicom_out="out/") as p:
        report = p.run([study_a, study_b])       # or p.run_study(folder, input_id=...)

1. index: every DICOM file of a folder, one instance per SOP Instance UID (`data.folder.load_folder`);
2. select: per breast one screening CC and one MLO by the documented rules (`data.selection`,
   `prefer` acquired or synthesized 2D, `strict`); every image not used is listed with its reason;
3. preprocess: the model's contract on each image (`data.dicom.preprocess_with_geometry`);
4. runner: the verified model through the runner layer (`runners.open_source`, `make_runner`);
5. writers (`results.py`): the JSON report, heatmap PNGs, and per study the DICOM SR (whose
   evidence is the two images read per breast) and Segmentations (`dicom_out.py`).

Bad files and breasts that cannot be answered never stop a run: they become rejects with a
one-line reason, and the other breasts and studies are still answered.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from .data.selection import PREFER, Policy
from .errors import ConfigError, PredictError, XprError
from .io import OutputError, input_tag
from .results import (
    BreastResult,
    PredictReport,
    breast_dicom,
    decision_of,
    heatmap_png,
    write_dicom_results,
)
from .runners import check_backend, kept_windows, make_runner, open_source, probabilities

__all__ = ["PREFER", "StudyPipeline", "predict_studies"]


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


class StudyPipeline:
    """A model opened once, and the studies run through it (a context manager; not thread-safe).

    `model`: checkpoint folder, bundle folder or engine file; `backend`: None = from the model;
    `operating_point`: youden, sens=0.90, ... (None: the model's default); `heatmaps_dir`: a PNG
    per breast; `dicom_out`: an SR per study and a heatmap Segmentation per image; `prefer`:
    "acquired" or "synthesized" 2D when a study holds both; `strict`: any choice rejects the breast;
    `sr`, `seg`: which result SR and heatmap Segmentations (`dicom_out.SR_KINDS`, `SEG_KINDS`);
    `runner`: an inference runner built elsewhere (default: `runners.make_runner` for `backend`);
    `triton`: run the model on this Triton server instead (`triton_model`: its name there).
    """

    def __init__(
        self,
        model: str | Path,
        backend: str | None = None,
        *,
        operating_point: str | None = None,
        heatmaps_dir: str | Path | None = None,
        dicom_out: str | Path | None = None,
        prefer: str = "acquired",
        strict: bool = False,
        sr: str = "tid1500",
        seg: str = "binary",
        runner: Any = None,
        triton: str | None = None,
        triton_model: str | None = None,
    ) -> None:
        from .dicom_out import SEG_KINDS, SR_KINDS

        check_backend(backend)
        if triton is not None:
            if backend not in (None, "triton"):
                raise ConfigError(f"--triton runs the model on the server: it does not go with --backend {backend}")
            backend = "triton"
        if sr not in SR_KINDS or seg not in SEG_KINDS:
            raise ConfigError(
                f"--sr {sr!r} / --seg {seg!r}: choose from {', '.join(SR_KINDS)} / {', '.join(SEG_KINDS)}"
            )
        self.sr, self.seg = sr, seg
        self.policy = Policy(prefer, strict)
        self.model = str(model)
        self.source = open_source(model)
        self.point = self.source.operating_point(operating_point)
        self.heatmaps_dir = Path(heatmaps_dir) if heatmaps_dir is not None else None
        self.dicom_out = Path(dicom_out) if dicom_out is not None else None
        self._want_selection = heatmaps_dir is not None or dicom_out is not None
        # `runner`: one built elsewhere on the runner contract (context manager, `infer(feed)`,
        # `backend`, `selection`, `describe()`), e.g. a remote inference server; default: make_runner
        self.runner: Any = runner or make_runner(
            self.source, backend, selection=self._want_selection, triton=triton, triton_model=triton_model
        )
        self._active = False

    # ---- the model's lifetime ----------------------------------------------------------------
    def __enter__(self) -> StudyPipeline:
        self.runner.__enter__()
        self._active = True
        try:
            if self.heatmaps_dir is not None and not self.runner.selection:
                raise PredictError(
                    f"{self.source.path}: the {self.runner.backend} model has no kept-window outputs for "
                    "--heatmaps (export with --with-selection, or use the checkpoint)"
                )
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Release the runner (idempotent)."""
        if self._active:
            self._active = False
            self.runner.__exit__(None, None, None)

    # ---- studies -----------------------------------------------------------------------------
    def new_report(self) -> PredictReport:
        """An empty report that names the model, the runner and the operating point."""
        report = PredictReport(self.model, self.runner.backend, self.point.threshold,
                               bundle_sha256=self.source.digest, operating_point=self.point.name)  # fmt: skip
        if self._active:
            report.runner = self.runner.describe()
        if self.dicom_out is not None and not self.runner.selection:
            report.notes.append(
                f"{self.source.path}: the {self.runner.backend} model has no kept-window outputs: SR only, "
                "no heatmap objects (export with --with-selection)"
            )
        return report

    def run_study(
        self, folder: str | Path, input_id: str | None = None, *, dicom_out: str | Path | None = None
    ) -> PredictReport:
        """One study folder (e.g. a spooled study of the DICOM node); `input_id` names it in output names;
        `dicom_out` writes this study's DICOM results there instead (the node's per-study folder swap)."""
        if dicom_out is None:
            return self.run([folder], None if input_id is None else [input_id])
        if self.dicom_out is None:
            raise PredictError("StudyPipeline.run_study(dicom_out=...) needs a pipeline opened with dicom_out")
        default, self.dicom_out = self.dicom_out, Path(dicom_out)
        try:
            return self.run([folder], None if input_id is None else [input_id])
        finally:
            self.dicom_out = default

    def run(self, studies: Sequence[str | Path], input_ids: Sequence[str] | None = None) -> PredictReport:
        """Every breast of every folder in `studies`; the DICOM results are written per folder.

        Output names carry a short hash of the input (`input_ids`, default: each folder's resolved
        path), so the same study in two folders never overwrites the other's heatmap or DICOM objects."""
        if not self._active:
            raise PredictError("StudyPipeline.run outside its `with` block (the model is not open)")
        from .data.folder import load_folder

        report = self.new_report()
        seen: set[Path] = set()  # the same file given twice (nested arguments) is predicted once
        for i, study in enumerate(studies):
            sp = Path(study)
            ident = input_ids[i] if input_ids is not None else str(sp.resolve())
            if not sp.exists():
                report.rejects.append({"path": str(sp), "reason": "no such file or folder"})
                continue
            idx = load_folder(sp, policy=self.policy)
            report.rejects.extend(r.to_dict() for r in idx.rejects)
            report.not_used.extend(n.to_dict() for n in idx.not_used)
            report.notes.extend(n for n in idx.notes if n not in report.notes)
            results: dict[tuple[str, str], list[Any]] = {}  # (input tag, study) -> BreastDicom
            for pair in idx.pairs:
                if pair.cc.resolve() in seen:
                    continue
                seen.add(pair.cc.resolve())
                self._breast(report, pair, ident, sp, results)
            if self.dicom_out is not None and results:
                self._write_dicom(report, sp, results)
        return report

    def _write_dicom(self, report: PredictReport, folder: Path, results: dict[tuple[str, str], list[Any]]) -> None:
        """One input folder's DICOM results (SR, Segmentations); a failure of this study's objects is one
        line and the next folder goes on."""
        assert self.dicom_out is not None
        try:
            written = write_dicom_results(
                self.dicom_out, results, self.source, self.point, report.notes, sr=self.sr, seg=self.seg
            )
        except OutputError:  # the output folder itself (full disk, read-only): every study fails alike, exit 2
            raise
        except XprError as exc:
            report.rejects.append({"path": str(folder), "reason": f"DICOM results not written: {exc}"})
            return
        report.dicom.extend(str(p) for p in written)

    def _breast(
        self, report: PredictReport, pair: Any, ident: str, root: Path, results: dict[tuple[str, str], list[Any]]
    ) -> None:
        """Preprocess, infer and hand one breast to the writers; a pixel failure is a one-line reject."""
        from .data.dicom import preprocess_with_geometry

        source = self.source
        h, w = source.cfg.img_size
        arrays, geos = {}, {}
        try:
            for view, path in (("cc", pair.cc), ("mlo", pair.mlo)):
                arrays[view], geos[view] = preprocess_with_geometry(path, source.settings)
        except XprError as exc:  # header fine, pixels not (truncated, no decoder, empty breast)
            report.rejects.append({"path": str(path), "reason": f"breast {pair.laterality} skipped: {exc}"})
            return
        feed = {source.io.cc: arrays["cc"].reshape(1, 1, h, w), source.io.mlo: arrays["mlo"].reshape(1, 1, h, w)}
        outputs = self.runner.infer(feed)
        prob = float(probabilities(outputs, source.io)[0])
        decision = decision_of(prob, self.point.threshold, source.class_names)
        res = BreastResult(pair.study_id, pair.laterality, prob, decision, str(pair.cc), str(pair.mlo),
                           cc_uid=pair.cc_uid, mlo_uid=pair.mlo_uid, notes=list(pair.notes))  # fmt: skip
        sel = None
        if self._want_selection and self.runner.selection:
            sel = kept_windows(outputs, self.runner.selection, source.cfg)
        if self.heatmaps_dir is not None and sel is not None:
            tag = input_tag(ident, _rel(pair.cc, root), _rel(pair.mlo, root))
            png = heatmap_png(self.heatmaps_dir, pair, prob, decision, self.point, sel, source.cfg, geos, tag)
            res.heatmap = str(png)
        if self.dicom_out is not None:
            key = (input_tag(ident, pair.study_id), pair.study_id)
            results.setdefault(key, []).append(breast_dicom(pair, prob, decision, sel, source, geos))
        report.breasts.append(res)


def predict_studies(
    model: str | Path,
    studies: Sequence[str | Path],
    backend: str | None = None,
    *,
    input_ids: Sequence[str] | None = None,
    **options: Any,
) -> PredictReport:
    """Open the model, run `studies` through the pipeline, close it (`options`: StudyPipeline's keywords)."""
    with StudyPipeline(model, backend, **options) as pipeline:
        return pipeline.run(studies, input_ids)
