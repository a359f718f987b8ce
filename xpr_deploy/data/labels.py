"""Label rules: how a BI-RADS or pathology string becomes 0 (benign) / 1 (malignant).

The rule's name (e.g. `vindr:birads>=4`) is written into checkpoints, metrics and manifests, so
that a number can always be traced back to the definition of "malignant" it was computed with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import BadLabel

DEFAULT_RULES = {"vindr": "vindr:birads>=4", "cbis": "cbis:pathology", "folder": "none"}
VINDR_RULES = ("vindr:birads>=4", "vindr:birads>=3", "vindr:birads>=5")
CBIS_PATHOLOGY = {"MALIGNANT": 1, "BENIGN": 0, "BENIGN_WITHOUT_CALLBACK": 0}


def parse_birads(raw: str) -> int:
    """'BI-RADS 4' / 'BIRADS 4' / '4' -> 4; anything else raises BadLabel."""
    m = re.fullmatch(r"\s*(?:BI-?RADS\s*)?([0-6])\s*", str(raw), flags=re.IGNORECASE)
    if not m:
        raise BadLabel(f"unknown BI-RADS value {raw!r}")
    return int(m.group(1))


def parse_pathology(raw: str) -> int:
    """CBIS pathology string -> 0/1; anything else raises BadLabel."""
    key = str(raw).strip().upper()
    if key not in CBIS_PATHOLOGY:
        raise BadLabel(f"unknown pathology {raw!r} (need MALIGNANT, BENIGN or BENIGN_WITHOUT_CALLBACK)")
    return CBIS_PATHOLOGY[key]


@dataclass(frozen=True)
class LabelRule:
    """A named rule; `label(raw)` maps one breast's raw label string to 0/1 (or -1 when unlabelled)."""

    name: str

    @property
    def format(self) -> str:
        return self.name.split(":", 1)[0]

    def label(self, raw: str) -> int:
        if self.name == "none":
            return -1
        if self.name == "cbis:pathology":
            # a breast's raw label lists its abnormalities' pathologies joined by '+'
            return max(parse_pathology(p) for p in str(raw).split("+"))
        birads = parse_birads(raw)
        if birads == 0:
            raise BadLabel(f"BI-RADS 0 (incomplete assessment) has no benign/malignant label: {raw!r}")
        threshold = int(self.name.rsplit(">=", 1)[1])
        return int(birads >= threshold)


def label_rule(name: str | None, fmt: str) -> LabelRule:
    """Resolve `--label-rule` (None: the format's default) and check it suits the format."""
    if name is None or name == "":
        name = DEFAULT_RULES.get(fmt, "none")
    name = name.strip().lower().replace(" ", "")
    aliases = {
        "birads>=4": "vindr:birads>=4",
        "birads>=3": "vindr:birads>=3",
        "birads>=5": "vindr:birads>=5",
        "vindr:birads4-5": "vindr:birads>=4",
        "vindr:birads3-5": "vindr:birads>=3",
        "vindr:birads5": "vindr:birads>=5",
        "pathology": "cbis:pathology",
    }
    name = aliases.get(name, name)
    known = {*VINDR_RULES, "cbis:pathology", "none"}
    if name not in known:
        raise BadLabel(f"unknown label rule {name!r}: choose one of {', '.join(sorted(known))}")
    if name != "none" and name.split(":")[0] != fmt:
        raise BadLabel(f"label rule {name!r} does not apply to a {fmt} dataset")
    return LabelRule(name)
