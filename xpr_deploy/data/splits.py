"""Patient-level hold-out and k-fold splits: grouped, stratified, checked disjoint, stored as JSON.

Groups are `BreastPair.patient_id` (the CBIS patient; the VinDr study). A group is positive if any
of its breasts is; groups of each class are shuffled with the seed and dealt out, so every fold
gets its share of positive patients. Disjointness is checked with an exception, not `assert`.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import write_json
from .errors import SplitError
from .pairs import BreastPair

SPLIT_VERSION = 1


@dataclass
class SplitFile:
    """Breast keys ('<study>/<L|R>') per fold: `folds[i] = {"train": [...], "test": [...]}`."""

    kind: str  # 'holdout' | 'kfold'
    seed: int
    folds: list[dict[str, list[str]]]
    test_fraction: float | None = None
    k: int | None = None
    label_rule: str = ""
    groups: dict[str, str] = field(default_factory=dict)  # breast key -> group (patient/study)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": SPLIT_VERSION,
            "kind": self.kind,
            "seed": self.seed,
            "k": self.k,
            "test_fraction": self.test_fraction,
            "label_rule": self.label_rule,
            "folds": self.folds,
            "groups": self.groups,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SplitFile:
        if d.get("version") != SPLIT_VERSION:
            raise SplitError(f"split file version {d.get('version')!r} is not {SPLIT_VERSION}")
        s = cls(
            kind=d["kind"],
            seed=int(d["seed"]),
            folds=d["folds"],
            test_fraction=d.get("test_fraction"),
            k=d.get("k"),
            label_rule=d.get("label_rule", ""),
            groups=d.get("groups", {}),
        )
        s.check()
        return s

    def write(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def read(cls, path: str | Path) -> SplitFile:
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise SplitError(f"{path}: cannot read split file ({exc})") from None
        try:
            return cls.from_dict(d)
        except (KeyError, TypeError) as exc:
            raise SplitError(f"{path}: malformed split file ({exc})") from None

    def check(self) -> None:
        """No breast and no group on both sides of any fold; k-fold test sets disjoint."""
        seen_test: dict[str, int] = {}
        for i, f in enumerate(self.folds):
            tr, te = set(f["train"]), set(f["test"])
            if tr & te:
                raise SplitError(f"fold {i}: {len(tr & te)} breasts in both train and test")
            if self.groups:
                gtr = {self.groups[k] for k in tr}
                gte = {self.groups[k] for k in te}
                if gtr & gte:
                    raise SplitError(f"fold {i}: group(s) {sorted(gtr & gte)[:3]} in both train and test")
            if self.kind == "kfold":
                for key in te:
                    if key in seen_test:
                        raise SplitError(f"breast {key} in the test part of folds {seen_test[key]} and {i}")
                    seen_test[key] = i

    def select(self, pairs: list[BreastPair], fold: int = 0, part: str = "train") -> list[BreastPair]:
        """The pairs of one part of one fold; every key must exist in `pairs`."""
        if not 0 <= fold < len(self.folds):
            raise SplitError(f"fold {fold} out of range (0..{len(self.folds) - 1})")
        if part not in ("train", "test"):
            raise SplitError(f"part must be train or test, not {part!r}")
        by_key = {p.key: p for p in pairs}
        keys = self.folds[fold][part]
        missing = [k for k in keys if k not in by_key]
        if missing:
            raise SplitError(f"{len(missing)} breasts of the split are not in the dataset (e.g. {missing[0]})")
        return [by_key[k] for k in keys]

    def counts(self, pairs: list[BreastPair]) -> list[dict[str, int]]:
        by_key = {p.key: p for p in pairs}
        out = []
        for f in self.folds:
            row = {}
            for part in ("train", "test"):
                ps = [by_key[k] for k in f[part] if k in by_key]
                row[part] = len(ps)
                row[f"{part}_positives"] = sum(1 for p in ps if p.label == 1)
            out.append(row)
        return out


def _groups(pairs: list[BreastPair]) -> tuple[dict[str, list[BreastPair]], list[list[str]]]:
    """Groups by patient, and group names per stratum [negative groups, positive groups], seeded order later."""
    if not pairs:
        raise SplitError("no pairs to split")
    keys = [p.key for p in pairs]
    if len(set(keys)) != len(keys):
        raise SplitError("duplicate breast keys in the dataset")
    if any(p.label not in (0, 1) for p in pairs):
        raise SplitError("unlabelled pairs cannot be split (label -1)")
    groups: dict[str, list[BreastPair]] = defaultdict(list)
    for p in pairs:
        groups[p.patient_id].append(p)
    strata: list[list[str]] = [[], []]
    for g in sorted(groups):
        strata[max(p.label for p in groups[g])].append(g)
    return groups, strata


def _make(pairs: list[BreastPair], assign: dict[str, int], n: int, kind: str, seed: int, **extra: Any) -> SplitFile:
    by_group = {p.key: p.patient_id for p in pairs}
    folds = []
    for i in range(n):
        test = sorted(p.key for p in pairs if assign[p.patient_id] == i)
        train = sorted(p.key for p in pairs if assign[p.patient_id] != i)
        folds.append({"train": train, "test": test})
    s = SplitFile(kind=kind, seed=seed, folds=folds, groups=by_group, **extra)
    s.check()
    return s


def make_holdout(pairs: list[BreastPair], test_fraction: float = 0.2, seed: int = 0, label_rule: str = "") -> SplitFile:
    """One train/test split (8:2 by default) of patients, stratified by patient label."""
    if not 0.0 < test_fraction < 1.0:
        raise SplitError(f"test_fraction {test_fraction} must be in (0, 1)")
    groups, strata = _groups(pairs)
    if len(groups) < 2:
        raise SplitError(f"{len(groups)} patient(s): need at least 2 for a hold-out split")
    rng = random.Random(seed)
    assign: dict[str, int] = {}
    for names in strata:
        names = list(names)
        rng.shuffle(names)
        n_test = math.floor(len(names) * test_fraction + 0.5) if names else 0
        if len(names) >= 2:
            n_test = min(max(n_test, 1), len(names) - 1)
        for j, g in enumerate(names):
            assign[g] = 0 if j < n_test else 1
    s = _make(pairs, assign, 1, "holdout", seed, test_fraction=test_fraction, label_rule=label_rule)
    if not s.folds[0]["test"] or not s.folds[0]["train"]:
        raise SplitError("hold-out split left one side empty (too few patients)")
    return s


def make_folds(pairs: list[BreastPair], k: int = 5, seed: int = 0, label_rule: str = "") -> SplitFile:
    """k-fold cross-validation over patients; fold i's test part is the i-th group set."""
    if k < 2:
        raise SplitError(f"k = {k}: need at least 2 folds")
    groups, strata = _groups(pairs)
    if len(groups) < k:
        raise SplitError(f"{len(groups)} patients cannot fill {k} folds")
    rng = random.Random(seed)
    assign: dict[str, int] = {}
    sizes = [0] * k
    offset = 0
    for names in strata:
        names = list(names)
        rng.shuffle(names)
        # deal groups round-robin, continuing where the previous stratum stopped, largest groups first
        names.sort(key=lambda g: -len(groups[g]))
        for j, g in enumerate(names):
            assign[g] = (offset + j) % k
            sizes[assign[g]] += len(groups[g])
        offset = (offset + len(names)) % k
    return _make(pairs, assign, k, "kfold", seed, k=k, label_rule=label_rule)
