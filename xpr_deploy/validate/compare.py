"""xpr's pruning-aware layer over run results: kept-set Jaccard, K/K+1 margins, ties vs flips, |Δ| with and
without tie samples, decision flips, ΔAUC, and the gate per kind of candidate."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..bundle import BlockKey
from ..runners.registry import Gate
from .report import BlockParity, CandidateParity


@dataclass
class RunResult:
    """One runner's outputs over every sample, concatenated: what the pruning-aware layer reads."""

    logits: np.ndarray  # [n, 2] float64
    prob: np.ndarray  # [n] float64
    selection: dict[BlockKey, np.ndarray]  # [n, K]
    scores: dict[BlockKey, np.ndarray] = field(default_factory=dict)  # reference only: [n, N]


def compare_selection(
    ref: RunResult, cand: RunResult, k_of: dict[BlockKey, int], eps: float
) -> tuple[list[BlockParity], set[int]]:
    """Per-block Jaccard / margin / ties / flips, and the samples that saw a tie anywhere.

    Blocks are visited in execution order; once a sample ties in a view, later differences in that
    view (and in stage 4, after the views are fused) descend from the tie and count as ties too.
    """
    blocks, tie_samples = [], set()
    tainted: dict[str, set[int]] = {"cc": set(), "mlo": set()}
    order = sorted(ref.selection, key=lambda kb: (kb[1] == 4, kb[1], kb[0] != "cc", kb[2]))
    for key in order:
        if key not in cand.selection:
            continue
        r, c, sc, k = ref.selection[key], cand.selection[key], ref.scores[key], k_of[key]
        view = key[0]
        jac, margins, ties, flips = [], [], 0, 0
        for i in range(len(r)):
            rs, cs = set(r[i].tolist()), set(c[i].tolist())
            jac.append(len(rs & cs) / len(rs | cs))
            srt = np.sort(sc[i])[::-1]
            top, nxt = srt[k - 1], srt[k] if k < len(srt) else -np.inf
            margins.append(float((top - nxt) / max(abs(top), 1e-12)))
            if rs == cs:
                continue
            upstream = i in tainted[view] or (key[1] == 4 and (i in tainted["cc"] or i in tainted["mlo"]))
            boundary = 0.5 * (top + nxt)
            diff = np.array(sorted(rs ^ cs))
            if upstream or np.all(np.abs(sc[i][diff] - boundary) <= eps * max(abs(boundary), 1e-12)):
                ties += 1
                tie_samples.add(i)
                tainted[view].add(i)
            else:
                flips += 1
        blocks.append(
            BlockParity(
                key[0],
                key[1],
                key[2],
                k,
                sc.shape[1],
                float(min(jac)),
                float(min(margins)),
                ties,
                flips,
                mean_jaccard=float(np.mean(jac)),
            )
        )
    return blocks, tie_samples


def _auc(labels: np.ndarray, p: np.ndarray) -> float | None:
    ok = labels >= 0
    if len(set(labels[ok].tolist())) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels[ok], p[ok]))


def compare(
    name: str,
    ref: RunResult,
    cand: RunResult,
    *,
    k_of: dict[BlockKey, int],
    threshold: float,
    labels: np.ndarray | None,
    gate: Gate,  # the row's, as its backend declares it (runners/registry.py)
    matched: list[bool] | None = None,  # polygraphy's verdict per sample on the gated output
) -> CandidateParity:
    """The pruning-aware layer: kept-set ties vs flips, |Δ| with and without tie samples, decisions, ΔAUC."""
    eps = gate.tie_eps
    blocks, tie_samples = compare_selection(ref, cand, k_of, eps)
    clean = np.array([i not in tie_samples for i in range(len(ref.prob))])
    dl = np.abs(cand.logits - ref.logits).max(axis=1)
    dp = np.abs(cand.prob - ref.prob)
    res = CandidateParity(
        name,
        "pass",
        max_abs_logits=float(dl[clean].max()) if clean.any() else None,
        max_abs_prob=float(dp[clean].max()) if clean.any() else None,
        max_abs_logits_all=float(dl.max()),
        max_abs_prob_all=float(dp.max()),
        tie_samples=len(tie_samples),
        decision_flips=int(np.sum((ref.prob >= threshold) != (cand.prob >= threshold))),
        blocks=blocks,
    )
    if labels is not None:
        a_ref, a_c = _auc(labels, ref.prob), _auc(labels, cand.prob)
        res.delta_auc = None if a_ref is None or a_c is None else a_c - a_ref
    d = dl if gate.output == "logits" else dp
    if matched is None:  # no polygraphy verdict given: the same elementwise rule on the arrays
        matched = [bool(x <= gate.atol) for x in d]
    lim = gate.atol
    problems = []
    if res.selection_flips:
        problems.append(f"{res.selection_flips} kept-set flips beyond the tie epsilon {eps:g}")
    if gate.max_decision_flips is not None and (res.decision_flips or 0) > gate.max_decision_flips:
        problems.append(f"{res.decision_flips} decision flips at the threshold (> {gate.max_decision_flips})")
    res.gate = gate.describe()
    if gate.exact:  # exact-arithmetic twin: gate on the samples without a selection tie
        if not clean.any():
            problems.append("every sample has a selection tie: nothing to gate (use trained weights)")
        elif not all(m for m, c in zip(matched, clean, strict=True) if c):
            problems.append(f"max|Δ{gate.output}| {float(d[clean].max()):.3g} > {lim:g}")
    else:  # reduced precision: gate on every sample, ties included
        if not all(matched):
            problems.append(f"max|Δ{gate.output}| {float(d.max()):.3g} > {lim:g}")
    if problems:
        res.status, res.reason = "fail", "; ".join(problems)
    return res


def _skipped(name: str, reason: str, runner: dict[str, Any] | None = None) -> CandidateParity:
    return CandidateParity(name, "skipped", reason, runner=runner or {})


def batch_invariance(name: str, single: RunResult, batched: RunResult, batch: int, atol: float) -> dict[str, Any]:
    """Each sample run inside a batch of `batch` against the same sample run alone (same runner):
    max |Δ| of logits and prob (within `atol`) and kept-window sets (equal, sample by sample)."""
    d_logits = float(np.max(np.abs(single.logits - batched.logits))) if len(single.logits) else 0.0
    d_prob = float(np.max(np.abs(single.prob - batched.prob))) if len(single.prob) else 0.0
    differ = []
    for key, a in single.selection.items():
        b = batched.selection.get(key)
        if b is None:
            continue
        for i in range(len(a)):
            if set(np.asarray(a[i]).tolist()) != set(np.asarray(b[i]).tolist()):
                differ.append(f"{'/'.join(map(str, key))}#{i}")
    ok = d_logits <= atol and not differ
    return {
        "candidate": name, "batch": batch, "samples": len(single.logits), "max_abs_logits": d_logits,
        "max_abs_prob": d_prob, "atol_logits": atol, "kept_sets_differ": differ, "ok": ok,
    }  # fmt: skip
