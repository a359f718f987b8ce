"""One sample = one breast with exactly one CC and one MLO; everything else is a Reject with a reason."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class BreastPair:
    """One breast: its CC and MLO files and its label under the dataset's label rule.

    `patient_id` is the split group: the CBIS patient, or the VinDr study (VinDr has no patient id).
    `label` is -1 for unlabelled data (plain folders).
    """

    study_id: str
    patient_id: str
    laterality: str  # 'L' | 'R'
    cc: Path
    mlo: Path
    label: int
    raw_label: str
    official_split: str = ""  # the dataset's own train/test tag, if any
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. VinDr image ids, lesion boxes

    @property
    def key(self) -> str:
        """Stable breast id used in split files: '<study_id>/<L|R>'."""
        return f"{self.study_id}/{self.laterality}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cc"], d["mlo"] = str(self.cc), str(self.mlo)
        return d


@dataclass
class Reject:
    """A file or breast left out, with the reason (JSON-able)."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass
class ImageRecord:
    """One image known to belong to a breast (before pairing)."""

    path: Path
    study_id: str
    patient_id: str
    laterality: str
    view: str
    raw_label: str | None = None
    official_split: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class DatasetIndex:
    """The pairs of a dataset, what was rejected and why, and the label rule used."""

    root: Path
    format: str
    label_rule: str
    pairs: list[BreastPair] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def positives(self) -> int:
        return sum(1 for p in self.pairs if p.label == 1)

    def summary(self) -> dict[str, Any]:
        studies = {p.study_id for p in self.pairs}
        patients = {p.patient_id for p in self.pairs}
        return {
            "root": str(self.root),
            "format": self.format,
            "label_rule": self.label_rule,
            "studies": len(studies),
            "patients": len(patients),
            "breasts": len(self.pairs) + sum(1 for r in self.rejects if r.reason.startswith("breast ")),
            "pairs": len(self.pairs),
            "positives": self.positives,
            "negatives": sum(1 for p in self.pairs if p.label == 0),
            "unlabelled": sum(1 for p in self.pairs if p.label < 0),
            "rejects": [r.to_dict() for r in self.rejects],
            "notes": list(self.notes),
        }


def pair_images(
    records: Iterable[ImageRecord], rule_label: Any, rejects: list[Reject], breast_key: Any = None
) -> list[BreastPair]:
    """Group images by breast and keep breasts with exactly one CC and one MLO.

    `rule_label(raw)` maps a breast's raw label to 0/1 and may raise BadLabel (the breast is then
    rejected). `breast_key(record)` defaults to (study_id, laterality).
    """
    from .errors import BadLabel

    key_of = breast_key or (lambda r: (r.study_id, r.laterality))
    groups: dict[Any, list[ImageRecord]] = defaultdict(list)
    for r in records:
        groups[key_of(r)].append(r)
    pairs: list[BreastPair] = []
    for key in sorted(groups, key=str):
        imgs = groups[key]
        views = Counter(r.view for r in imgs)
        where = f"{imgs[0].study_id}/{imgs[0].laterality}"
        if views["CC"] != 1 or views["MLO"] != 1:
            files = ", ".join(sorted(str(r.path) for r in imgs))
            what = "unpaired" if 0 in (views["CC"], views["MLO"]) else "ambiguous"
            rejects.append(Reject(where, f"breast {what}: {views['CC']} CC and {views['MLO']} MLO ({files})"))
            continue
        cc = next(r for r in imgs if r.view == "CC")
        mlo = next(r for r in imgs if r.view == "MLO")
        raws = {r.raw_label for r in imgs if r.raw_label is not None}
        if len(raws) > 1:
            rejects.append(Reject(where, f"breast label contradictory between views: {sorted(raws)}"))
            continue
        raw = raws.pop() if raws else ""
        try:
            label = int(rule_label(raw))
        except BadLabel as exc:
            rejects.append(Reject(where, f"breast label: {exc}"))
            continue
        meta = {"cc": cc.meta, "mlo": mlo.meta} if (cc.meta or mlo.meta) else {}
        pairs.append(
            BreastPair(
                study_id=cc.study_id,
                patient_id=cc.patient_id,
                laterality=cc.laterality,
                cc=cc.path,
                mlo=mlo.path,
                label=label,
                raw_label=raw,
                official_split=cc.official_split or mlo.official_split,
                meta=meta,
            )
        )
    return pairs
