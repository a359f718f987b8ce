"""A torch Dataset of breast pairs: (cc [1,H,W], mlo [1,H,W], label) float32 tensors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .cache import PreparedCache
from .dicom import PreprocessSettings, preprocess_file
from .pairs import BreastPair


class PairDataset(Dataset):
    """Reads through a PreparedCache when given one (recommended), else preprocesses on the fly."""

    def __init__(
        self, pairs: Sequence[BreastPair], settings: PreprocessSettings, cache: PreparedCache | str | Path | None = None
    ) -> None:
        self.pairs = list(pairs)
        self.settings = settings
        self.cache = PreparedCache(cache) if isinstance(cache, (str, Path)) else cache

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, path: object) -> torch.Tensor:
        arr = self.cache.load(path, self.settings) if self.cache else preprocess_file(path, self.settings)  # type: ignore[arg-type]
        return torch.from_numpy(arr).unsqueeze(0)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        p = self.pairs[i]
        return self._load(p.cc), self._load(p.mlo), int(p.label)

    def labels(self) -> list[int]:
        return [p.label for p in self.pairs]
