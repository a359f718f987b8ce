"""The data layer: DICOM mammograms in, model-ready breast pairs out (SPEC §3).

Public API (others code against these names):

- `load_dataset(root, format="auto"|"vindr"|"cbis"|"folder", label_rule=None) -> DatasetIndex`
  with `.pairs: list[BreastPair]`, `.rejects: list[Reject]`, `.format`, `.label_rule`
  (e.g. `"vindr:birads>=4"`, `"cbis:pathology"`, `"none"` for folders), `.summary()`.
  Keeps going past bad files: each becomes a `Reject(path, reason)`.
- `BreastPair(study_id, patient_id, laterality, cc, mlo, label, raw_label, official_split, meta)`;
  `.key` = "<study_id>/<L|R>"; `patient_id` is the split group (VinDr: the study). label -1 = unlabelled.
- `PreprocessSettings(img_size=(H, W), ...)` (frozen; `.to_dict()`, `.from_dict()`, `.hash()`,
  `.for_config(model_config)`), `PREPROC_VERSION = "xpr-preproc-1"`.
- `read_image(path) -> pydicom.Dataset` (validated MG For Presentation, greyscale, one frame),
  `preprocess_file(path, settings) -> float32 [H, W]`, `preprocess_dataset(ds, settings)`,
  `preprocess_with_geometry(path_or_ds, settings) -> (array, Geometry)`; `Geometry.flipped`,
  `.crop`, `.model_to_stored(row, col)`, `.stored_box()`, `.paste(heatmap)` map model pixels back
  to the stored image. `preprocess_array(stored, PixelMeta, settings)` runs the bare contract.
- `make_holdout(pairs, test_fraction=0.2, seed=0)`, `make_folds(pairs, k=5, seed=0)` -> `SplitFile`
  (`.folds[i]["train"/"test"]` breast keys, `.select(pairs, fold, part)`, `.write(path)`,
  `SplitFile.read(path)`).
- `PreparedCache(dir).load(path, settings)`; `xpr_deploy.data.torchdata.PairDataset(pairs, settings, cache)`.
- `prepare_dataset(root, cache, settings, workers=None, progress=None) -> PrepareReport` (`xpr data
  prepare`; `prepare_files(paths, ...)` for a list of files): a pool of forkserver workers, resumable,
  counts `prepared` / `reused` / `rejected` / `failed`.
- Image selection (`selection.py`): `Policy(prefer="acquired"|"synthesized", strict=False)`; every
  loader keeps one instance per SOP Instance UID, leaves out what is not a screening CC/MLO and
  chooses per breast (`DatasetIndex.not_used: list[NotUsed(path, sop_uid, reason)]`,
  `BreastPair.cc_uid` / `.mlo_uid` / `.notes`).
- View names and DICOM view codes, one table for the reader and `synth`: `xpr_deploy.data.views`
  (`VIEWS = ("CC", "MLO")`, `VIEW_CODES`, `view_of_code(code_value, code_meaning)`).
- `write_synthetic(out, breasts, format="vindr"|"cbis", size=(H, W), seed=0, positive_fraction=0.5)`.
- Header values: `xpr_deploy.data.header` parses every attribute the pipeline reads, once, into
  checked types (`parse_header(ds, path) -> ImageHeader`, `pixel_meta(ds, path) -> PixelMeta`);
  unusable values are `InvalidValue` naming the attribute, standard fallbacks are named warnings
  (`warnings_of(ds)`, surfaced as index notes). `load_dataset(..., decode=True)` / `check_dataset(...,
  decode=True)` also run the preprocessing on every file (`xpr data check --decode`).
- Errors: `xpr_deploy.data.errors` (DicomError and its subclasses: TruncatedFile, InvalidValue,
  UnsupportedImage, UnsupportedTransferSyntax, MissingDecoder, DecodeError, ...; BadLabel, DatasetError, SplitError).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .cache import PreparedCache
from .cbis import find_csvs, load_cbis
from .dicom import (
    PREPROC_VERSION,
    Geometry,
    PixelMeta,
    PreprocessSettings,
    preprocess_array,
    preprocess_dataset,
    preprocess_file,
    preprocess_with_geometry,
    read_image,
)
from .errors import BadLabel, DatasetError
from .folder import load_folder
from .labels import label_rule as label_rule_for
from .pairs import BreastPair, DatasetIndex, Reject
from .prepare import PrepareReport, Progress, prepare_files
from .selection import NotUsed, Policy
from .splits import SplitFile, make_folds, make_holdout
from .synth import write_synthetic
from .vindr import BREAST_CSV, load_vindr

FORMATS = ("auto", "vindr", "cbis", "folder")

__all__ = [
    "FORMATS",
    "PREPROC_VERSION",
    "BreastPair",
    "DatasetIndex",
    "Geometry",
    "NotUsed",
    "PixelMeta",
    "Policy",
    "PrepareReport",
    "PreparedCache",
    "PreprocessSettings",
    "Reject",
    "SplitFile",
    "check_dataset",
    "detect_format",
    "load_dataset",
    "make_folds",
    "make_holdout",
    "prepare_dataset",
    "prepare_files",
    "preprocess_array",
    "preprocess_dataset",
    "preprocess_file",
    "preprocess_with_geometry",
    "read_image",
    "write_synthetic",
]


def detect_format(root: str | Path) -> str:
    """vindr if the breast-level CSV is there, cbis if case-description CSVs are, else folder."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: not found")
    if root.is_dir() and (root / BREAST_CSV).exists():
        return "vindr"
    if root.is_dir() and find_csvs(root):
        return "cbis"
    return "folder"


def load_dataset(
    root: str | Path,
    format: str = "auto",
    label_rule: str | None = None,
    *,
    verify: bool = True,
    decode: bool = False,
    policy: Policy | None = None,
) -> DatasetIndex:
    """Index a dataset: pairs, rejects (with reasons), images not used (with the selection rule) and
    the label rule used.

    `verify` checks every file's header and pixel data length (no decoding); `decode` also runs the
    preprocessing on each file's pixels (slow), so that no file of a pair fails later in training.
    `policy`: the image selection (`selection.Policy`: prefer acquired or synthesized 2D, strict)."""
    if format not in FORMATS:
        raise DatasetError(f"unknown format {format!r}: choose one of {', '.join(FORMATS)}")
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: not found")
    fmt = detect_format(root) if format == "auto" else format
    try:
        label_rule_for(label_rule, fmt)
    except BadLabel as exc:
        raise BadLabel(f"{root}: {exc}") from None
    if fmt == "vindr":
        return load_vindr(root, label_rule, verify=verify or decode, decode=decode, policy=policy)
    if fmt == "cbis":
        return load_cbis(root, label_rule, verify=verify or decode, decode=decode, policy=policy)
    return load_folder(root, label_rule, decode=decode, policy=policy)


def check_dataset(
    root: str | Path,
    format: str = "auto",
    label_rule: str | None = None,
    seed: int = 0,
    k: int = 5,
    *,
    decode: bool = False,
    policy: Policy | None = None,
) -> dict[str, Any]:
    """`xpr data check`: the dataset summary plus hold-out and k-fold split counts.

    Every file's header and native pixel data length are checked; `decode` also decodes and
    preprocesses every file (what `train` does), for the compressed streams a header cannot vouch for."""
    from .errors import SplitError

    ds = load_dataset(root, format, label_rule, decode=decode, policy=policy)
    out = ds.summary()
    splits: dict[str, Any] = {}
    labelled = [p for p in ds.pairs if p.label in (0, 1)]
    if labelled:
        try:
            splits["holdout"] = make_holdout(labelled, seed=seed).counts(labelled)[0]
        except SplitError as exc:
            splits["holdout"] = {"error": str(exc)}
        try:
            splits["folds"] = make_folds(labelled, k=k, seed=seed).counts(labelled)
        except SplitError as exc:
            splits["folds"] = {"error": str(exc)}
    out["splits"] = splits
    official: dict[str, int] = {}
    for p in ds.pairs:
        if p.official_split:
            official[p.official_split] = official.get(p.official_split, 0) + 1
    out["official_split"] = official
    return out


def prepare_dataset(
    root: str | Path,
    cache: str | Path,
    settings: PreprocessSettings,
    format: str = "auto",
    label_rule: str | None = None,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
) -> PrepareReport:
    """`xpr data prepare`: index the dataset, then prepare both images of every pair (`prepare_files`)."""
    import time

    t0 = time.perf_counter()
    ds = load_dataset(root, format, label_rule)
    index_seconds = time.perf_counter() - t0
    paths = [p for pair in ds.pairs for p in (pair.cc, pair.mlo)]
    rep = prepare_files(paths, cache, settings, workers=workers, progress=progress)
    bad = {r["path"] for r in rep.rejected + rep.failed}
    rep.pairs = len(ds.pairs)
    rep.pairs_ready = sum(1 for pair in ds.pairs if str(pair.cc) not in bad and str(pair.mlo) not in bad)
    rep.index_rejects = [r.to_dict() for r in ds.rejects]
    rep.index_seconds = index_seconds
    return rep
