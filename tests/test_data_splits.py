"""Patient-level splits: grouped, stratified, disjoint, reproducible from a file."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from xpr_deploy.data import BreastPair, SplitFile, load_dataset, make_folds, make_holdout
from xpr_deploy.data.errors import SplitError


def _pairs(n_patients: int, seed: int = 0) -> list[BreastPair]:
    """Patients with 1-2 breasts, about a third malignant (no files needed for splitting)."""
    import random

    rng = random.Random(seed)
    out = []
    for i in range(n_patients):
        sides = ["L", "R"] if rng.random() < 0.6 else [rng.choice("LR")]
        for s in sides:
            label = int(rng.random() < 0.33)
            out.append(
                BreastPair(
                    study_id=f"P{i:04d}",
                    patient_id=f"P{i:04d}",
                    laterality=s,
                    cc=Path("cc"),
                    mlo=Path("mlo"),
                    label=label,
                    raw_label=str(label),
                )
            )
    return out


def test_kfold_grouped_stratified_disjoint():
    pairs = _pairs(200)
    split = make_folds(pairs, k=5, seed=3)
    patient = {p.key: p.patient_id for p in pairs}
    label = {p.key: p.label for p in pairs}
    test_sets = [set(f["test"]) for f in split.folds]
    # every breast in exactly one test fold; train = the rest
    assert Counter(k for t in test_sets for k in t) == Counter(p.key for p in pairs)
    for f in split.folds:
        assert set(f["train"]) | set(f["test"]) == set(patient) and not set(f["train"]) & set(f["test"])
    # no patient in two folds
    owner: dict[str, int] = {}
    for i, t in enumerate(test_sets):
        for k in t:
            assert owner.setdefault(patient[k], i) == i, f"patient {patient[k]} in folds {owner[patient[k]]} and {i}"
    # stratified: each fold's positive rate close to the overall one, sizes balanced
    overall = sum(label.values()) / len(label)
    for t in test_sets:
        rate = sum(label[k] for k in t) / len(t)
        assert abs(rate - overall) < 0.08, (rate, overall)
        assert abs(len(t) - len(pairs) / 5) <= 0.15 * len(pairs) / 5


def test_holdout_8_2(synth_cbis):
    ds = load_dataset(synth_cbis)
    split = make_holdout(ds.pairs, test_fraction=0.2, seed=0, label_rule=ds.label_rule)
    f = split.folds[0]
    groups = {p.key: p.patient_id for p in ds.pairs}
    assert not {groups[k] for k in f["train"]} & {groups[k] for k in f["test"]}
    assert {p.label for p in split.select(ds.pairs, 0, "test")} == {0, 1}  # both classes in test

    pairs = _pairs(300, seed=1)
    s = make_holdout(pairs, 0.2, seed=5)
    n_test = len(s.folds[0]["test"])
    assert 0.15 * len(pairs) < n_test < 0.25 * len(pairs)
    test = s.select(pairs, 0, "test")
    overall = sum(p.label for p in pairs) / len(pairs)
    assert abs(sum(p.label for p in test) / len(test) - overall) < 0.08


def test_split_file_roundtrip_and_reproducible(tmp_path):
    pairs = _pairs(40)
    a = make_folds(pairs, k=5, seed=11, label_rule="vindr:birads>=4")
    assert make_folds(pairs, k=5, seed=11).folds == a.folds
    assert make_folds(pairs, k=5, seed=12).folds != a.folds
    path = tmp_path / "splits.json"
    a.write(path)
    b = SplitFile.read(path)
    assert b.folds == a.folds and b.label_rule == "vindr:birads>=4" and b.kind == "kfold" and b.k == 5
    assert [p.key for p in b.select(pairs, 2, "train")] == a.folds[2]["train"]


def test_split_errors(tmp_path):
    pairs = _pairs(3)
    with pytest.raises(SplitError, match="cannot fill"):
        make_folds(pairs, k=5)
    unlabelled = [BreastPair("s", "s", "L", Path("a"), Path("b"), -1, "")]
    with pytest.raises(SplitError, match="unlabelled"):
        make_holdout(unlabelled)
    # a tampered file that puts one patient on both sides is refused
    good = make_holdout(_pairs(20), seed=0)
    d = good.to_dict()
    moved = d["folds"][0]["test"][0]
    d["folds"][0]["train"] = [*d["folds"][0]["train"], moved]
    with pytest.raises(SplitError, match="both train and test"):
        SplitFile.from_dict(d)
    with pytest.raises(SplitError, match="not in the dataset"):
        good.select(_pairs(5, seed=9)[:1], 0, "train")
