"""From a dataset folder to train / validation / test pair lists and torch datasets, with split files.

The outer split (8:2 hold-out or k-fold, patient level, from `xpr_deploy.data.splits`) decides the
test breasts; model selection uses a patient-level validation slice of the *training* part, so the
test breasts never influence the checkpoint. Both splits are written into the run folder
(`split.json`, `val_split.json`) and copied into every checkpoint, which makes `xpr eval --split test`
work from the checkpoint alone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import ModelConfig
from ..errors import ConfigError

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from ..data import BreastPair, SplitFile
    from .config import TrainConfig

SPLIT = "split.json"
VAL_SPLIT = "val_split.json"


@dataclass
class PreparedData:
    format: str
    label_rule: str
    preprocess: dict[str, Any]
    split: SplitFile
    fold: int
    val_split: SplitFile | None
    train: list[BreastPair]
    val: list[BreastPair]
    test: list[BreastPair]
    train_set: Dataset[Any]
    val_set: Dataset[Any]
    split_files: dict[str, bytes] = field(default_factory=dict)  # name -> JSON bytes (copied into checkpoints)
    rejects: int = 0

    @property
    def split_meta(self) -> dict[str, Any]:
        return {
            "kind": self.split.kind,
            "fold": self.fold,
            "seed": self.split.seed,
            "files": {name: hashlib.sha256(b).hexdigest() for name, b in self.split_files.items()},
            "n_train": len(self.train),
            "n_val": len(self.val),
            "n_test": len(self.test),
        }


def split_bytes(split: SplitFile) -> bytes:
    return (json.dumps(split.to_dict(), indent=2) + "\n").encode()


def labelled_pairs(root: str | Path, data_format: str = "auto", label_rule: str | None = None) -> tuple[Any, list[Any]]:
    """(DatasetIndex, pairs with a 0/1 label); unlabelled data cannot be trained or scored."""
    from ..data import load_dataset

    index = load_dataset(root, data_format, label_rule)
    pairs = [p for p in index.pairs if p.label in (0, 1)]
    if not pairs:
        raise ConfigError(f"{root}: no labelled breast pairs ({len(index.rejects)} rejected files/breasts)")
    return index, pairs


def make_outer_split(cfg: TrainConfig, pairs: list[Any], label_rule: str) -> tuple[SplitFile, int]:
    from ..data import SplitFile, make_folds, make_holdout

    if cfg.split_file:
        split = SplitFile.read(cfg.split_file)
        fold = cfg.fold or 0
        if not 0 <= fold < len(split.folds):
            raise ConfigError(f"{cfg.split_file}: has {len(split.folds)} fold(s), --fold {fold} is out of range")
        return split, fold
    if cfg.fold is not None:
        return make_folds(pairs, cfg.folds, cfg.seed, label_rule=label_rule), cfg.fold
    return make_holdout(pairs, cfg.holdout, cfg.seed, label_rule=label_rule), 0


def prepare(cfg: TrainConfig, mcfg: ModelConfig, run_dir: Path, write: bool = True) -> PreparedData:
    """Index the data, split it (or re-read the run's splits when resuming) and build the datasets."""
    from ..data import PreparedCache, PreprocessSettings, SplitFile, make_holdout
    from ..data.torchdata import PairDataset

    index, pairs = labelled_pairs(cfg.data, cfg.data_format, cfg.label_rule)
    if cfg.resume and (run_dir / SPLIT).is_file():
        split, fold = SplitFile.read(run_dir / SPLIT), cfg.fold or 0
        val_split = SplitFile.read(run_dir / VAL_SPLIT) if (run_dir / VAL_SPLIT).is_file() else None
    else:
        split, fold = make_outer_split(cfg, pairs, index.label_rule)
        val_split = None
        if cfg.val_fraction > 0:
            train_part = split.select(pairs, fold, "train")
            val_split = make_holdout(train_part, cfg.val_fraction, cfg.seed + 1, label_rule=index.label_rule)
    train_part = split.select(pairs, fold, "train")
    test = split.select(pairs, fold, "test")
    if val_split is not None:
        train, val = val_split.select(train_part, 0, "train"), val_split.select(train_part, 0, "test")
    else:
        train, val = train_part, []
    files = {SPLIT: split_bytes(split)}
    if val_split is not None:
        files[VAL_SPLIT] = split_bytes(val_split)
    if write:
        write_split_files(run_dir, files)
    settings = PreprocessSettings.for_config(mcfg)
    cache = PreparedCache(cfg.cache) if cfg.cache else None
    return PreparedData(
        format=index.format,
        label_rule=index.label_rule,
        preprocess=settings.to_dict(),
        split=split,
        fold=fold,
        val_split=val_split,
        train=train,
        val=val,
        test=test,
        train_set=PairDataset(train, settings, cache),
        val_set=PairDataset(val, settings, cache),
        split_files=files,
        rejects=len(index.rejects),
    )


def write_split_files(run_dir: Path, files: dict[str, bytes]) -> None:
    """RUN/split.json (+ val_split.json): what the run trains and validates on."""
    from ..io import write_bytes

    for name, blob in files.items():
        write_bytes(run_dir / name, blob)


def pairs_for_split(meta: dict[str, Any], pairs: list[Any], part: str) -> list[Any]:
    """The breasts of `part` (test | val | train | all) of the run a checkpoint came from."""
    from ..data import SplitFile

    if part == "all":
        return pairs
    ckpt = Path(meta["checkpoint_dir"])
    fold = int(meta.get("split", {}).get("fold", 0))
    split_path = next((p for p in (ckpt / SPLIT, ckpt.parent / SPLIT) if p.is_file()), None)
    if split_path is None:
        raise ConfigError(f"{ckpt}: no {SPLIT} beside the checkpoint; use --split all")
    split = SplitFile.read(split_path)
    if part == "test":
        return split.select(pairs, fold, "test")
    train_part = split.select(pairs, fold, "train")
    val_path = split_path.parent / VAL_SPLIT
    if not val_path.is_file():
        if part == "train":
            return train_part
        raise ConfigError(f"{ckpt}: the run had no validation split")
    val_split = SplitFile.read(val_path)
    if part in ("val", "train"):
        return val_split.select(train_part, 0, "test" if part == "val" else "train")
    raise ConfigError(f"--split must be test, val, train or all, not {part!r}")
