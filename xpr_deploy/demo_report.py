"""The demo's final report: one Markdown file that says what ran and links every artefact it made.

Links are relative to the report, so the output folder can be moved or zipped and still read.
Every file under the folder is listed (nothing the demo wrote goes unmentioned); the steps the
demo records, the predictions and the heatmaps get their own sections above that list.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from . import __version__
from .io import write_text

REPORT_NAME = "REPORT.md"
MAX_INLINE_HEATMAPS = 4
#: a folder with more files than this is one line (link, count, size) in the artefact list
MAX_LISTED = 12


@dataclass
class StepRecord:
    """One demo step as the report shows it."""

    name: str
    ok: bool = True
    seconds: float | None = None
    detail: str = ""  # one line: the headline number, or why it was skipped / failed
    artefacts: list[str] = field(default_factory=list)  # paths (absolute or relative to the output folder)
    skipped: bool = False


def _link(target: Path, root: Path, text: str | None = None) -> str:
    try:
        rel = target.resolve().relative_to(root.resolve())
    except ValueError:
        rel = target
    return f"[{text or rel.as_posix()}]({quote(rel.as_posix())})"


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _cell(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _step(s: StepRecord | Mapping[str, Any]) -> StepRecord:
    if isinstance(s, StepRecord):
        return s
    return StepRecord(
        name=str(s.get("name", "?")),
        ok=bool(s.get("ok", True)),
        seconds=s.get("seconds"),
        detail=str(s.get("detail", "") or ""),
        artefacts=[str(a) for a in s.get("artefacts", []) or []],
        skipped=bool(s.get("skipped", False)),
    )


def _steps_section(steps: Sequence[StepRecord], root: Path) -> list[str]:
    lines = ["## Steps", "", "| step | status | time | result | artefacts |", "| --- | --- | --- | --- | --- |"]
    for s in steps:
        status = "skipped" if s.skipped else ("ok" if s.ok else "**failed**")
        secs = f"{s.seconds:.1f} s" if s.seconds is not None else ""
        links = []
        for a in s.artefacts:
            p = Path(a)  # steps record paths as they used them: absolute, cwd-relative or root-relative
            if not p.is_absolute() and not p.exists():
                p = root / a
            links.append(_link(p, root) if p.exists() else f"{_cell(a)} (missing)")
        lines.append(f"| {_cell(s.name)} | {status} | {secs} | {_cell(s.detail)} | {'<br>'.join(links)} |")
    return [*lines, ""]


def _predictions_section(pred: Mapping[str, Any], root: Path) -> list[str]:
    breasts = list(pred.get("breasts", []))
    rejects = list(pred.get("rejects", []))
    thr = pred.get("threshold")
    head = f"## Predictions ({pred.get('backend', '?')} backend"
    point = pred.get("operating_point")
    at = f"operating point {point}, " if point else ""
    head += f", {at}threshold {float(thr):.3f})" if thr is not None else ")"
    lines = [head, ""]
    if breasts:
        lines += ["| study | breast | P(malignant) | decision | heatmap |", "| --- | --- | --- | --- | --- |"]
        for b in breasts:
            hm = b.get("heatmap")
            link = _link(Path(hm), root, "PNG") if hm else ""
            lines.append(
                f"| {_cell(b.get('study', ''))} | {_cell(b.get('laterality', ''))} | {float(b['prob']):.4f} "
                f"| {_cell(b.get('decision', ''))} | {link} |"
            )
    else:
        lines.append("No breast could be read.")
    if rejects:
        lines += ["", f"Skipped ({len(rejects)}):", ""]
        for r in rejects:
            path, reason = str(r.get("path", "")), str(r.get("reason", ""))
            reason = reason[len(path) + 2 :] if reason.startswith(f"{path}: ") else reason
            lines.append(f"- `{_cell(path)}`: {_cell(reason)}")
    shown = [b["heatmap"] for b in breasts if b.get("heatmap")][:MAX_INLINE_HEATMAPS]
    if shown:
        lines += [
            "",
            "Window-selection maps (per stage, how many blocks kept each 7x7 window; gray = never kept):",
            "",
        ]
        for hm in shown:
            p = Path(hm)
            try:
                rel = p.resolve().relative_to(root.resolve()).as_posix()
            except ValueError:
                rel = p.as_posix()
            lines += [f"![{p.stem}]({quote(rel)})", ""]
    return [*lines, ""]


def _files(root: Path, report: Path) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p != report and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _tree_lines(folder: Path, files: list[Path], root: Path, depth: int = 0) -> list[str]:
    """Files directly in `folder`, then its sub-folders: the top two levels always open, deeper
    folders with many files as one line (link, count, size)."""
    indent = "  " if depth else ""  # one flat list under each top-level folder
    lines = [f"{indent}- {_link(p, root)} ({_size(p.stat().st_size)})" for p in files if p.parent == folder]
    subs: dict[Path, list[Path]] = {}
    for p in files:
        if p.parent != folder:
            subs.setdefault(folder / p.relative_to(folder).parts[0], []).append(p)
    for sub, inside in sorted(subs.items()):
        if depth == 0:
            lines.append(f"- **{_link(sub, root)}/**")
            lines += _tree_lines(sub, inside, root, depth + 2)
        elif len(inside) > MAX_LISTED:
            total = sum(p.stat().st_size for p in inside)
            lines.append(f"{indent}- {_link(sub, root)}/ ({len(inside)} files, {_size(total)})")
        else:
            lines += _tree_lines(sub, inside, root, depth + 1)
    return lines


def _files_section(root: Path, report: Path) -> list[str]:
    files = _files(root, report)
    lines = ["## Every artefact", ""]
    if not files:
        return [*lines, "(none)", ""]
    return [*lines, *_tree_lines(root, files, root), ""]


def build_report(
    out: str | Path,
    steps: Sequence[StepRecord | Mapping[str, Any]] = (),
    predictions: Mapping[str, Any] | None = None,
    title: str = "xpr demo",
    notes: Sequence[str] = (),
) -> str:
    """The Markdown text of the report for the output folder `out`."""
    root = Path(out)
    recs = [_step(s) for s in steps]
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    failed = [s.name for s in recs if not s.ok and not s.skipped]
    lines = [f"# {title}", "", f"xpr {__version__} · written {now} · output folder `{root}`", ""]
    if recs:
        verdict = f"**{len(failed)} step(s) failed:** {', '.join(failed)}" if failed else "All steps ran."
        lines += [verdict, ""]
    lines += list(notes) + ([""] if notes else [])
    if recs:
        lines += _steps_section(recs, root)
    if predictions is not None:
        lines += _predictions_section(predictions, root)
    lines += _files_section(root, root / REPORT_NAME)
    return "\n".join(lines).rstrip() + "\n"


def _load_predictions(p: Mapping[str, Any] | str | Path | None) -> Mapping[str, Any] | None:
    if isinstance(p, (str, Path)):
        data: dict[str, Any] = json.loads(Path(p).read_text())
        return data
    return p


def write_demo_report(
    out: str | Path,
    steps: Sequence[StepRecord | Mapping[str, Any]] = (),
    predictions: Mapping[str, Any] | str | Path | None = None,
    title: str = "xpr demo",
    notes: Sequence[str] = (),
) -> Path:
    """Write `<out>/REPORT.md`; `predictions` may be a PredictReport dict or the path of its JSON."""
    root = Path(out)
    pred = _load_predictions(predictions)
    dest = root / REPORT_NAME
    write_text(dest, build_report(root, steps, pred, title, notes))
    return dest


def _fact(key: str, v: Any) -> str | None:
    if isinstance(v, bool) or v is None or isinstance(v, (int, str)):
        return f"{key} {v}"
    if isinstance(v, float):
        return f"{key} {v:.4g}"
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, float)) for x in v):
        return f"{key} [{', '.join(f'{x:.3g}' for x in v)}]"
    return None


def step_from_demo(rec: Mapping[str, Any], root: Path, max_facts: int = 10) -> StepRecord:
    """A `run_demo` record (name, ok, seconds, error | summary keys) as a report row."""
    skip = {"name", "ok", "seconds", "error"}
    arts: list[str] = []
    facts: list[str] = []
    for k, v in rec.items():
        if k in skip:
            continue
        if isinstance(v, str) and ("/" in v or "\\" in v) and Path(v).exists():
            arts.append(v)
        elif isinstance(v, Mapping):  # one level down, e.g. bench: {"eager": {"median_ms": ...}}
            facts += [f for kk, vv in v.items() if (f := _fact(f"{k}.{kk}", vv)) is not None]
        elif (f := _fact(k, v)) is not None:
            facts.append(f)
    detail = str(rec.get("error") or ", ".join(facts[:max_facts]) + (", ..." if len(facts) > max_facts else ""))
    return StepRecord(str(rec.get("name", "?")), bool(rec.get("ok", True)), rec.get("seconds"), detail, arts)
