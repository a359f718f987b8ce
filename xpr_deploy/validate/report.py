"""The parity report (`xpr validate`): per-block and per-candidate results, the tolerance each candidate
was held to (declared by its backend in the runner registry), and what is written to parity.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import XprError


class ParityError(XprError):
    """Validation could not run (no model to compare against, unreadable data)."""


@dataclass
class BlockParity:
    view: str
    stage: int
    block: int
    k: int
    windows: int
    min_jaccard: float
    min_margin: float  # smallest (s_K - s_K+1) / s_K over the samples, reference scores
    ties: int  # samples whose kept set differs only across a near-tie
    flips: int  # samples whose kept set differs beyond the tie epsilon
    mean_jaccard: float | None = None  # over the samples


@dataclass
class CandidateParity:
    name: str
    status: str  # pass | fail | skipped
    reason: str = ""
    max_abs_logits: float | None = None  # over samples without selection ties
    max_abs_prob: float | None = None
    max_abs_logits_all: float | None = None  # over every sample
    max_abs_prob_all: float | None = None
    tie_samples: int = 0
    decision_flips: int | None = None
    delta_auc: float | None = None
    gate: str = ""
    runner: dict[str, Any] = field(default_factory=dict)  # backend, provider, precision as predict runs it
    served: bool = False  # the configuration `xpr predict` uses for this bundle by default
    blocks: list[BlockParity] = field(default_factory=list)

    @property
    def selection_flips(self) -> int:
        return sum(b.flips for b in self.blocks)

    @property
    def selection_ties(self) -> int:
        return sum(b.ties for b in self.blocks)

    @property
    def min_jaccard(self) -> float | None:
        return min((b.min_jaccard for b in self.blocks), default=None)


@dataclass
class ParityReport:
    samples: int
    inputs: str
    threshold: float
    #: candidate name -> its gate (output, atol, tie_eps, exact), as its backend declares it
    tolerances: dict[str, dict[str, Any]]
    candidates: list[CandidateParity]
    reference: str = "eager-fp32"
    #: SHA-256 of the bundle files this report certifies (graphs, engines; not parity.json itself,
    #: whose insertion re-seals the manifest): what a reader checks the report against
    validated_files: dict[str, str] = field(default_factory=dict)
    #: dynamic-batch bundles: each candidate run in batches of max_batch against itself sample by sample
    batch_invariance: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.candidates) and all(b["ok"] for b in self.batch_invariance)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reference": self.reference,
            "validated_files": self.validated_files,
            "samples": self.samples,
            "inputs": self.inputs,
            "threshold": self.threshold,
            "tolerances": self.tolerances,
            "batch_invariance": self.batch_invariance,
            "candidates": [
                {
                    **{k: v for k, v in asdict(c).items() if k != "blocks"},
                    "selection_flips": c.selection_flips,
                    "selection_ties": c.selection_ties,
                    "min_jaccard": c.min_jaccard,
                    "blocks": [asdict(b) for b in c.blocks],
                }
                for c in self.candidates
            ],
        }


def write_parity_report(report: ParityReport, path: str | Path) -> None:
    from ..io import write_json

    write_json(path, report.to_dict())
