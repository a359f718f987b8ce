"""One sample = one breast with one CC and one MLO chosen by the selection rules (`selection.py`);
a breast that cannot be answered is a Reject with a reason, an image left out is a NotUsed with its reason."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .selection import Instance, NotUsed, Policy, ViewChoice, choose, dedupe, describe_not_used
from .views import VIEWS


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
    cc_uid: str = ""  # the SOP Instance UIDs used ('' when only a CSV row named the image)
    mlo_uid: str = ""
    notes: list[str] = field(default_factory=list)  # what the selection says with the answer

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
    instance: Instance | None = None  # the header as selection reads it (None: known from a CSV only)

    def as_instance(self) -> Instance:
        if self.instance is not None:
            return self.instance
        sop = str(self.meta.get("sop_instance_uid") or self.meta.get("image_id") or self.path)
        return Instance(self.path, sop, self.study_id, self.laterality, self.view)


@dataclass
class DatasetIndex:
    """The pairs of a dataset, what was rejected and why, and the label rule used."""

    root: Path
    format: str
    label_rule: str
    pairs: list[BreastPair] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    not_used: list[NotUsed] = field(default_factory=list)  # images the selection left out, with why

    @property
    def positives(self) -> int:
        return sum(1 for p in self.pairs if p.label == 1)

    def decisions(self) -> dict[str, dict[str, Any]]:
        """The images used by every breast where the selection had something to decide (a choice was
        made, or its study holds images not used): breast key -> CC / MLO path and SOP Instance UID, notes."""
        studies = {n.study for n in self.not_used}
        out: dict[str, dict[str, Any]] = {}
        for p in self.pairs:
            if p.notes or p.study_id in studies:
                out[p.key] = {"cc": str(p.cc), "cc_sop_uid": p.cc_uid, "mlo": str(p.mlo), "mlo_sop_uid": p.mlo_uid}
                out[p.key]["notes"] = list(p.notes)
        return out

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
            "not_used": [n.to_dict() for n in self.not_used],
            "selection": self.decisions(),
            "notes": list(self.notes),
        }


def _group_by_breast(
    records: Iterable[ImageRecord], key_of: Any, left_out: list[NotUsed]
) -> tuple[dict[Any, list[tuple[ImageRecord, Instance]]], list[NotUsed]]:
    """Drop duplicate instances (recorded as not used), then group the rest by breast key."""
    items = [(r, r.as_instance()) for r in records]
    unique, dupes = dedupe(inst for _, inst in items)
    left_out.extend(dupes)
    kept = {id(i) for i in unique}
    groups: dict[Any, list[tuple[ImageRecord, Instance]]] = defaultdict(list)
    for r, inst in items:
        if id(inst) in kept:
            groups[key_of(r)].append((r, inst))
    return groups, dupes


def _why_unusable(
    choices: dict[str, ViewChoice], imgs: list[ImageRecord], here: list[NotUsed], policy: Policy
) -> str | None:
    """Why a breast's view choices give no pair (ambiguous, a view missing, or not clean under --strict)."""
    problems = [c.problem for c in choices.values() if c.problem]
    if problems:
        return f"breast ambiguous: {'; '.join(problems)}"
    missing = [v for v in VIEWS if choices[v].used is None]
    if missing:
        counts = Counter(r.view for r in imgs)
        files = ", ".join(sorted(str(r.path) for r in imgs))
        why = f"; not used: {describe_not_used(here)}" if here else ""
        return (
            f"breast unpaired: no usable {' or '.join(missing)} "
            f"({counts['CC']} CC and {counts['MLO']} MLO: {files}){why}"
        )
    if policy.strict:
        fallback = [n for c in choices.values() if c.fallback for n in c.notes]
        if here or fallback:
            what = "; ".join(filter(None, [describe_not_used(here), *fallback]))
            return f"breast not clean (--strict): {what}"
    return None


def _breast_label(cc: ImageRecord, mlo: ImageRecord, rule_label: Any) -> tuple[int, str] | str:
    """The breast's 0/1 label and raw label, or why it has none (the views disagree, or the rule's BadLabel)."""
    from .errors import BadLabel

    raws = {r.raw_label for r in (cc, mlo) if r.raw_label is not None}
    if len(raws) > 1:
        return f"breast label contradictory between views: {sorted(raws)}"
    raw = raws.pop() if raws else ""
    try:
        return int(rule_label(raw)), raw
    except BadLabel as exc:
        return f"breast label: {exc}"


def _breast_pair(cc: ImageRecord, mlo: ImageRecord, label: int, raw: str, choices: dict[str, ViewChoice]) -> BreastPair:
    """The chosen CC and MLO as one training/prediction unit, with their metadata and selection notes."""
    meta = {"cc": cc.meta, "mlo": mlo.meta} if (cc.meta or mlo.meta) else {}
    return BreastPair(
        study_id=cc.study_id,
        patient_id=cc.patient_id,
        laterality=cc.laterality,
        cc=cc.path,
        mlo=mlo.path,
        label=label,
        raw_label=raw,
        official_split=cc.official_split or mlo.official_split,
        meta=meta,
        cc_uid=cc.instance.sop_uid if cc.instance is not None else "",
        mlo_uid=mlo.instance.sop_uid if mlo.instance is not None else "",
        notes=[n for v in VIEWS for n in choices[v].notes],
    )


def pair_images(
    records: Iterable[ImageRecord],
    rule_label: Any,
    rejects: list[Reject],
    breast_key: Any = None,
    *,
    policy: Policy | None = None,
    not_used: list[NotUsed] | None = None,
) -> list[BreastPair]:
    """Group images by breast and choose one CC and one MLO per breast by the selection rules.

    `records` are images that passed the exclusions (`selection.exclusion`); `not_used` collects
    the images left out (and already holds those excluded earlier: with `policy.strict` any of
    them in a breast's study and side rejects that breast). `rule_label(raw)` maps a breast's raw
    label to 0/1 and may raise BadLabel (the breast is then rejected). `breast_key(record)`
    defaults to (study_id, laterality).
    """
    policy = policy or Policy()
    left_out = not_used if not_used is not None else []
    earlier = list(left_out)  # excluded before pairing: they count against a breast under --strict
    key_of = breast_key or (lambda r: (r.study_id, r.laterality))
    groups, dupes = _group_by_breast(records, key_of, left_out)
    pairs: list[BreastPair] = []
    for key in sorted(groups, key=str):
        imgs = [r for r, _ in groups[key]]
        record_of = {id(inst): r for r, inst in groups[key]}
        study, lat = imgs[0].study_id, imgs[0].laterality
        where = f"{study}/{lat}"
        choices: dict[str, ViewChoice] = {
            v: choose([inst for r, inst in groups[key] if r.view == v], v, policy) for v in VIEWS
        }
        chosen_out = [n for c in choices.values() for n in c.not_used]
        left_out.extend(chosen_out)
        here = [n for n in earlier + dupes if n.study == study and n.laterality in (lat, "")] + chosen_out
        why = _why_unusable(choices, imgs, here, policy)
        if why is not None:
            rejects.append(Reject(where, why))
            continue
        cc, mlo = (record_of[id(choices[v].used)] for v in VIEWS)
        labelled = _breast_label(cc, mlo, rule_label)
        if isinstance(labelled, str):
            rejects.append(Reject(where, labelled))
            continue
        pairs.append(_breast_pair(cc, mlo, *labelled, choices))
    return pairs
