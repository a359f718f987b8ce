"""`xpr train`: weighted CE, AdamW + cosine, pruning warm-up, AMP on CUDA, DDP, best-by-AUC, resume.

Library entry point: `train(TrainConfig) -> TrainResult`. The epoch loop itself (`fit`) only needs
torch datasets yielding `(cc [1,H,W], mlo [1,H,W], label)`, so it is usable without the DICOM layer.
Its pieces live beside it, one concern each: `recipe` (seeding, class weights, lr and keep schedules,
AMP), `validation` (`predict_probs`, validation metrics) and `resume` (the interrupted run's
settings, `check_resume_overrides`); their names are re-exported here.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..errors import ConfigError
from ..io import folder_lock, recover_dir, write_text
from ..model.xpruning import XPruning, build_model
from ..version import __version__
from . import distributed as D
from .checkpoint import META, git_commit, load_state_dict, read_meta, save_checkpoint, utc_now
from .config import TrainConfig
from .recipe import amp_context, class_weights, keep_for_epoch, lr_lambda, seed_everything, target_keep
from .resume import check_resume_overrides, resume_config
from .validation import predict_probs, predict_probs_distributed, validation_metrics

__all__ = [
    "EpochRecord",
    "FitState",
    "TrainConfig",
    "TrainResult",
    "amp_context",
    "check_resume_overrides",
    "class_weights",
    "fit",
    "keep_for_epoch",
    "lr_lambda",
    "predict_probs",
    "predict_probs_distributed",
    "seed_everything",
    "target_keep",
    "train",
    "train_step",
    "validation_metrics",
]


@dataclass
class EpochRecord:
    epoch: int  # 1-based, epochs completed
    train_loss: float
    lr: float
    keep: list[float]
    seconds: float
    throughput: float  # breasts per second (all ranks)
    val: dict[str, Any] | None = None
    best: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    run_dir: Path
    best_dir: Path
    last_dir: Path
    best_epoch: int
    best_metrics: dict[str, Any] | None
    history: list[EpochRecord]
    wall_seconds: float
    finished: bool  # False when stopped early (`stop_after`)


# ---- the epoch loop -------------------------------------------------------------------------


@dataclass
class FitState:
    """What `--resume` restores (besides the weights)."""

    epoch: int = 0  # epochs completed
    best_score: float = -math.inf
    best_loss: float = math.inf  # validation loss of the best epoch: breaks AUC ties (small val sets saturate)
    best_epoch: int = 0
    history: list[EpochRecord] = field(default_factory=list)

    def improved_by(self, score: float, loss: float) -> bool:
        """Higher score wins; an equal score wins with a lower loss (small validation sets reach AUC 1.0 early)."""
        return (score, -loss) > (self.best_score, -self.best_loss)


class _Progress:
    """A rich progress bar on rank 0 (loss, throughput); silent elsewhere or when disabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._p: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._p = Progress(
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}"),
                TextColumn("{task.fields[rate]:.1f} breasts/s"),
                TimeElapsedColumn(),
            )
            self._p.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._p is not None:
            self._p.__exit__(*exc)

    def task(self, epoch: str, total: int) -> Any:
        return self._p.add_task("train", total=total, epoch=epoch, loss=math.nan, rate=0.0) if self._p else None

    def update(self, task: Any, **kw: Any) -> None:
        if self._p is not None:
            self._p.update(task, **kw)

    def log(self, msg: str) -> None:
        if self._p is not None:
            self._p.console.print(msg, highlight=False)


def _rng_state() -> dict[str, Any]:
    st: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    random.setstate((3, tuple(int(x) for x in st["python"]), None))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def train_step(
    net: nn.Module,
    cc: torch.Tensor,
    mlo: torch.Tensor,
    y: torch.Tensor,
    *,
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    ctx: Any,
    weights: torch.Tensor,
    params: Sequence[torch.Tensor],
    grad_clip: float,
) -> torch.Tensor:
    """One optimizer step of the recipe (autocast forward, weighted CE in FP32, scaled backward, clip);
    its own function so that bench/gpu.py times and sizes exactly the step `fit` takes."""
    with ctx:
        logits = net(cc, mlo)
    loss = F.cross_entropy(logits.float(), y, weight=weights)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(opt)
    scaler.update()
    return loss


@dataclass
class _Optim:
    """The optimisation recipe of one `fit` call: what every step and every `last` checkpoint needs."""

    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler  # enabled only where fp16 autocast needs loss scaling
    ctx: Any
    weights: torch.Tensor
    params: list[nn.Parameter]

    def train_state(self, state: FitState) -> dict[str, Any]:
        """What RUN/last keeps besides the weights, so that `--resume` continues the same run."""
        return {
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": _rng_state(),
            "fit": {
                "epoch": state.epoch,
                "best_score": state.best_score,
                "best_loss": state.best_loss,
                "best_epoch": state.best_epoch,
                "history": [r.to_dict() for r in state.history],
            },
        }

    def restore(self, train_state: dict[str, Any]) -> None:
        """Continue a resumed run where RUN/last stopped: optimizer, schedule, loss scale and RNG streams."""
        self.opt.load_state_dict(train_state["optimizer"])
        self.sched.load_state_dict(train_state["scheduler"])
        if self.scaler.is_enabled() and train_state.get("scaler"):
            self.scaler.load_state_dict(train_state["scaler"])
        _set_rng_state(train_state["rng"])


def _train_loader(
    train_set: Dataset[Any], cfg: TrainConfig, info: D.DistInfo
) -> tuple[DistributedSampler[Any], DataLoader[Any]]:
    """Each rank reads its own shard, reshuffled per epoch from `cfg.seed` (also with one process)."""
    sampler: DistributedSampler[Any] = DistributedSampler(
        train_set, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=cfg.seed
    )
    loader = DataLoader(
        train_set,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.workers,
        pin_memory=info.device.type == "cuda",
        persistent_workers=cfg.workers > 0,
    )
    return sampler, loader


def _optim(
    model: XPruning, train_labels: Sequence[int], cfg: TrainConfig, device: torch.device, steps_per_epoch: int
) -> _Optim:
    """The recipe's AdamW + warm-up/cosine schedule, class weights and AMP context, sized to the loader."""
    weights = class_weights(train_labels, model.cfg.num_classes).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_lambda(total, round(cfg.lr_warmup_epochs * steps_per_epoch), cfg.min_lr_ratio)
    )
    ctx, need_scaler = amp_context(device, cfg.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=need_scaler)
    return _Optim(opt, sched, scaler, ctx, weights, params)


def _train_epoch(
    net: nn.Module,
    loader: DataLoader[Any],
    o: _Optim,
    cfg: TrainConfig,
    info: D.DistInfo,
    bar: _Progress,
    task: Any,
    epoch: int,
    keep: list[float],
) -> EpochRecord:
    """One pass over this rank's shard; its record holds the loss and throughput of all ranks together."""
    device = info.device
    t0 = time.perf_counter()
    loss_sum, seen = 0.0, 0
    for cc, mlo, y in loader:
        cc, mlo, y = cc.to(device), mlo.to(device), y.to(device).long()
        loss = train_step(net, cc, mlo, y, opt=o.opt, scaler=o.scaler, ctx=o.ctx, weights=o.weights, params=o.params,
                          grad_clip=cfg.grad_clip)  # fmt: skip
        o.sched.step()
        loss_sum += float(loss.detach()) * len(y)
        seen += len(y)
        dt = time.perf_counter() - t0
        bar.update(task, advance=1, loss=loss_sum / seen, rate=seen * info.world_size / max(dt, 1e-9))
    seconds = time.perf_counter() - t0
    tot = D.all_gather_objects((loss_sum, seen))
    return EpochRecord(
        epoch=epoch + 1,
        train_loss=sum(a for a, _ in tot) / max(1, sum(b for _, b in tot)),
        lr=float(o.opt.param_groups[0]["lr"]),
        keep=keep,
        seconds=seconds,
        throughput=sum(b for _, b in tot) / max(seconds, 1e-9),
    )


def _validate_epoch(
    model: XPruning, val_set: Dataset[Any] | None, rec: EpochRecord, o: _Optim, cfg: TrainConfig, info: D.DistInfo
) -> tuple[str, float, float]:
    """Validation at the target keep (SPEC §2); returns the selection criterion, its score and the validation loss.

    Without a validation split the last epoch is the best one (score = epoch)."""
    model.set_keep(target_keep(model.cfg))
    if val_set is None or len(val_set) == 0:  # type: ignore[arg-type]
        return "last_epoch", float(rec.epoch - 1), 0.0
    probs, labels = predict_probs_distributed(model, val_set, info, cfg.batch_size * 2, cfg.workers, cfg.amp)
    rec.val = validation_metrics(probs, labels, o.weights)
    val_loss = float(rec.val["loss"])
    if rec.val["auc"] is not None:
        return "val_auc_then_loss", float(rec.val["auc"]), val_loss
    return "val_loss", -val_loss, val_loss  # one class only in validation: AUC undefined, select on loss


def _save_epoch(
    model: XPruning,
    rec: EpochRecord,
    criterion: str,
    state: FitState,
    o: _Optim,
    cfg: TrainConfig,
    run_dir: Path,
    meta_base: dict[str, Any],
    extra_files: dict[str, bytes] | None,
) -> None:
    """Rank 0 after every epoch: RUN/best when it improved, RUN/last (with the resume state), metrics.jsonl."""
    meta = _epoch_meta(meta_base, cfg, rec, criterion, state)
    if rec.best:
        save_checkpoint(run_dir / "best", model, {**meta, "kind": "best"}, extra_files=extra_files)
    save_checkpoint(
        run_dir / "last", model, {**meta, "kind": "last"}, train_state=o.train_state(state), extra_files=extra_files
    )
    write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r.to_dict()) + "\n" for r in state.history))


def fit(
    model: XPruning,
    train_set: Dataset[Any],
    train_labels: Sequence[int],
    val_set: Dataset[Any] | None,
    cfg: TrainConfig,
    run_dir: Path,
    meta_base: dict[str, Any],
    info: D.DistInfo | None = None,
    state: FitState | None = None,
    train_state: dict[str, Any] | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> TrainResult:
    """Train `model` for `cfg.epochs` epochs, writing RUN/last, RUN/best and RUN/metrics.jsonl (rank 0)."""
    t_start = time.perf_counter()
    info = info or D.DistInfo(0, 1, 0, torch.device("cpu"))
    device = info.device
    model.to(device)
    sampler, loader = _train_loader(train_set, cfg, info)
    steps_per_epoch = len(loader)
    o = _optim(model, train_labels, cfg, device, steps_per_epoch)
    state = state or FitState()
    if train_state is not None:
        o.restore(train_state)

    net: nn.Module = model
    if info.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    stopped = False
    epochs_this_call = 0
    with _Progress(cfg.progress and info.is_main) as bar:
        for epoch in range(state.epoch, cfg.epochs):
            if cfg.stop_after is not None and epochs_this_call >= cfg.stop_after:
                stopped = True
                break
            keep = keep_for_epoch(model.cfg, epoch, cfg.prune_warmup)
            model.set_keep(keep)
            sampler.set_epoch(epoch)
            net.train()
            task = bar.task(f"{epoch + 1}/{cfg.epochs}", steps_per_epoch)
            rec = _train_epoch(net, loader, o, cfg, info, bar, task, epoch, keep)
            criterion, score, val_loss = _validate_epoch(model, val_set, rec, o, cfg, info)
            if state.improved_by(score, val_loss):
                state.best_score, state.best_loss, state.best_epoch, rec.best = score, val_loss, epoch + 1, True
            state.epoch = epoch + 1
            state.history.append(rec)
            epochs_this_call += 1
            if info.is_main:
                _save_epoch(model, rec, criterion, state, o, cfg, run_dir, meta_base, extra_files)
                bar.log(_epoch_line(rec))
            D.barrier()

    model.set_keep(target_keep(model.cfg))
    best_rec = next((r for r in state.history if r.epoch == state.best_epoch), None)
    return TrainResult(
        run_dir=run_dir,
        best_dir=run_dir / "best",
        last_dir=run_dir / "last",
        best_epoch=state.best_epoch,
        best_metrics=best_rec.val if best_rec else None,
        history=state.history,
        wall_seconds=time.perf_counter() - t_start,
        finished=not stopped and state.epoch >= cfg.epochs,
    )


def _epoch_line(rec: EpochRecord) -> str:
    s = f"epoch {rec.epoch}: loss {rec.train_loss:.4f}  lr {rec.lr:.2e}  {rec.throughput:.1f} breasts/s"
    if rec.val:
        auc = rec.val["auc"]
        s += f"  val AUC {auc:.3f}" if auc is not None else "  val AUC n/a"
        s += f"  val loss {rec.val['loss']:.4f}"
    return s + ("  [best]" if rec.best else "")


def _epoch_meta(
    base: dict[str, Any], cfg: TrainConfig, rec: EpochRecord, criterion: str, state: FitState
) -> dict[str, Any]:
    val = rec.val or {}
    return {
        **base,
        "epoch": rec.epoch,
        "metrics": {"train_loss": rec.train_loss, "val": rec.val},
        "selection": {"criterion": criterion, "best_epoch": state.best_epoch},
        "threshold": float(val.get("threshold", 0.5)) if val else 0.5,
        "threshold_method": val.get("threshold_method", "fixed-0.5") if val else "fixed-0.5",
        "operating_points": dict(val.get("operating_points") or {}),
        "operating_point": val.get("operating_point"),
        "train_config": cfg.to_dict(),
        "toolkit_version": __version__,
        "created_utc": utc_now(),
    }


# ---- data plumbing + the library entry point --------------------------------------------------


def _labels(pairs: Sequence[Any]) -> list[int]:
    return [int(p.label) for p in pairs]


def train(cfg: TrainConfig) -> TrainResult:
    """Train X-Pruning on a dataset folder (VinDr / CBIS layout) into `cfg.out` (see checkpoint.py)."""
    cfg.validate()
    run_dir = Path(cfg.out)
    info = D.init_distributed(cfg.device)
    try:
        # rank 0 holds the run folder: a second `xpr train --out RUN` is refused at once (exit 2)
        with folder_lock(run_dir, "another xpr train") if info.is_main else contextlib.nullcontext():
            return _train_locked(cfg, run_dir, info)
    finally:
        D.cleanup()


def _train_locked(cfg: TrainConfig, run_dir: Path, info: D.DistInfo) -> TrainResult:
    from . import datasplit

    train_state: dict[str, Any] | None = None
    if cfg.resume:
        cfg, train_state = resume_config(cfg, run_dir)
    elif (recover_dir(run_dir / "last") / META).exists():
        raise ConfigError(f"{run_dir}: already holds a training run (use --resume, or another --out)")
    mcfg = cfg.model_config()
    seed_everything(cfg.seed)

    data = datasplit.prepare(cfg, mcfg, run_dir, write=False)
    # the model (and a --pretrained file) before the first file is written: a refused file leaves no run
    model = build_model(mcfg, pretrained=cfg.pretrained)
    if info.is_main:
        datasplit.write_split_files(run_dir, data.split_files)
    D.barrier()
    state: FitState | None = None
    if train_state is not None:
        last = run_dir / "last"
        meta = read_meta(last)
        model.load_state_dict(load_state_dict(last, meta))
        fs = train_state["fit"]
        state = FitState(
            epoch=int(fs["epoch"]),
            best_score=float(fs["best_score"]),
            best_loss=float(fs.get("best_loss", math.inf)),
            best_epoch=int(fs["best_epoch"]),
            history=[EpochRecord(**r) for r in fs["history"]],
        )
    meta_base = {
        "label_rule": data.label_rule,
        "preprocess": data.preprocess,
        "split": data.split_meta,
        "data": {"root": str(cfg.data), "format": data.format, "n_train": len(data.train), "n_val": len(data.val)},
        "git_commit": git_commit(),
        "world_size": info.world_size,
        "class_weights": class_weights(_labels(data.train), mcfg.num_classes).tolist(),
    }
    if info.is_main and cfg.progress:
        print(
            f"training {mcfg.name} on {len(data.train)} breasts (validation {len(data.val)}, "
            f"test {len(data.test)}) on {info.device} x{info.world_size}",
            flush=True,
        )
    return fit(
        model,
        data.train_set,
        _labels(data.train),
        data.val_set if len(data.val) else None,
        cfg,
        run_dir,
        meta_base,
        info=info,
        state=state,
        train_state=train_state,
        extra_files=data.split_files,
    )
