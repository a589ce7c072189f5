"""The fine-tuning recipe: CosFace (partial FC) + 10 x router aux loss, AdamW, polynomial decay with warm-up,
gradient clipping, mixed precision, gradient accumulation, exact resume, DDP, TensorBoard, expert load.

Phases: ``head`` trains the CosFace head on a frozen backbone (eval mode, no gradients); ``full`` trains
everything. ``max_steps`` stops a run early without changing its schedule (whose length comes from
``epochs``), so a stopped run resumed later follows the same curve as one that never stopped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import load_model, save_checkpoint
from ..model import FaceMoE, FaceMoEConfig
from .config import TrainConfig
from .data import StepBatchSampler, TrainDataset, open_source
from .distributed import DistContext, setup, teardown
from .errors import DatasetError, TrainError
from .experts import ExpertLoad
from .head import CosFaceHead
from .module import TrainModule, poly_warmup

__all__ = ["CHECKPOINT_FORMAT", "TrainResult", "train"]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "facemoe-train/1"
LAST = "last.pt"
MODEL = "model.pt"


@dataclass
class TrainResult:
    """What a run did: steps done (this call and in all), per-step losses of this call, files written."""

    step: int
    total_steps: int
    losses: list[float] = field(default_factory=list)
    identity_losses: list[float] = field(default_factory=list)
    images_per_second: float = 0.0
    files: list[Path] = field(default_factory=list)


def _amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode == "fp16" and device.type != "cuda":
        raise TrainError(f"amp fp16 needs a CUDA device, got {device}; use bf16 or off on the CPU")
    return torch.float16 if mode == "fp16" else torch.bfloat16


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".partial")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _load_train_checkpoint(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise TrainError(
            f"{path}: expected a training checkpoint, got an unreadable file ({type(exc).__name__})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"{path}: expected a {CHECKPOINT_FORMAT} training checkpoint, got something else")
    return state


class _Run:
    """One training run's state; built by :func:`train`."""

    def __init__(self, cfg: TrainConfig, ctx: DistContext):
        self.cfg, self.ctx = cfg, ctx
        run = cfg.run
        self.out = Path(run.out_dir)
        source = open_source(cfg.data)
        self.num_classes = source.num_classes
        self.dataset = TrainDataset(source, cfg.augment, run.seed)
        micro_per_epoch = len(source) // (run.batch_size * ctx.world)
        if micro_per_epoch < run.grad_accum:
            raise DatasetError(
                f"expected at least batch_size x processes x grad_accum = "
                f"{run.batch_size * ctx.world * run.grad_accum} images, got {len(source)}"
            )
        self.total_steps = run.epochs * micro_per_epoch // run.grad_accum
        self.stop_at = min(self.total_steps, run.max_steps or self.total_steps)
        last = self.out / LAST
        self.resume_state = _load_train_checkpoint(last) if run.resume and last.is_file() else None

        torch.manual_seed(run.seed)  # same initialisation in every process
        backbone, head_state = self._backbone()
        self.head = CosFaceHead(
            backbone.num_features, self.num_classes, cfg.head.scale, cfg.head.margin, cfg.head.sample_rate
        )
        if head_state is not None:
            self._check_classes(head_state["weight"].shape[0], "the start checkpoint")
            self.head.load_state_dict(head_state)
        self.backbone = backbone
        self.amp_dtype = _amp_dtype(run.amp, ctx.device)
        self.module = TrainModule(backbone, self.head, run.phase, self.amp_dtype).to(ctx.device)
        params = [p for p in self.module.parameters() if p.requires_grad]
        self.clip_params = [p for p in backbone.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            params, lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, poly_warmup(cfg.optim.warmup_steps, self.total_steps, cfg.optim.power)
        )
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=self.amp_dtype == torch.float16)
        self.step = 0
        torch.manual_seed(run.seed + 1 + ctx.rank)  # per-process dropout / sampling streams
        if self.resume_state is not None:
            self._restore(self.resume_state)
        self.model = (
            DistributedDataParallel(
                self.module,
                device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
            if ctx.distributed
            else self.module
        )
        self.load = ExpertLoad(backbone, run.face_size_bins)

    def _check_classes(self, got: int, where: str) -> None:
        if got != self.num_classes:
            raise TrainError(f"{where} has a head for {got} identities, the dataset has {self.num_classes}")

    def _backbone(self) -> tuple[FaceMoE, dict | None]:
        m = self.cfg.model
        if self.resume_state is not None:
            saved = self.resume_state
            model = FaceMoE(FaceMoEConfig(**saved["model_config"]))
            return model, None
        if m.from_run:
            state = _load_train_checkpoint(Path(m.from_run))
            model = FaceMoE(
                FaceMoEConfig(**{**state["model_config"], "drop_path_rate": m.drop_path_rate, "k": m.k})
            )
            model.load_state_dict(state["model"])
            return model, state["head"]
        if m.checkpoint:
            model = load_model(m.checkpoint, k=m.k, drop_path_rate=m.drop_path_rate)
            return model, None
        arch = m.arch.model_dump()
        return FaceMoE(FaceMoEConfig(**arch, k=m.k, drop_path_rate=m.drop_path_rate)), None

    def _restore(self, state: dict) -> None:
        run = self.cfg.run
        self._check_classes(state["head"]["weight"].shape[0], f"{self.out / LAST}")
        for key, now in (
            ("phase", run.phase),
            ("batch_size", run.batch_size),
            ("grad_accum", run.grad_accum),
            ("world", self.ctx.world),
            ("seed", run.seed),
        ):
            if state["run"][key] != now:
                raise TrainError(
                    f"cannot resume {self.out / LAST} exactly: it was written with {key}="
                    f"{state['run'][key]}, this run has {key}={now} (use a new out_dir or resume: false)"
                )
        self.module.backbone.load_state_dict(state["model"])
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        rng = state["rng"][self.ctx.rank]
        torch.set_rng_state(rng["cpu"])
        if self.ctx.device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"], self.ctx.device)
        logger.info("resumed %s at step %d of %d", self.out / LAST, self.step, self.total_steps)

    def _rng_states(self) -> list[dict]:
        mine = {"cpu": torch.get_rng_state()}
        if self.ctx.device.type == "cuda":
            mine["cuda"] = torch.cuda.get_rng_state(self.ctx.device)
        if not self.ctx.distributed:
            return [mine]
        gathered: list = [None] * self.ctx.world
        dist.all_gather_object(gathered, mine)
        return [{k: v.cpu() for k, v in g.items()} for g in gathered]

    def save(self) -> list[Path]:
        rng = self._rng_states()  # a collective: every process takes part
        written = []
        if self.ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            run = self.cfg.run
            _atomic_save(
                {
                    "format": CHECKPOINT_FORMAT,
                    "model_config": self.backbone.cfg.as_dict(),
                    "model": self.backbone.state_dict(),
                    "head": self.head.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "scaler": self.scaler.state_dict(),
                    "step": self.step,
                    "run": {
                        "phase": run.phase,
                        "batch_size": run.batch_size,
                        "grad_accum": run.grad_accum,
                        "world": self.ctx.world,
                        "seed": run.seed,
                    },
                    "rng": rng,
                },
                self.out / LAST,
            )
            written = [self.out / LAST, save_checkpoint(self.backbone, self.out / MODEL)]
        if self.ctx.distributed:
            dist.barrier()
        return written

    def loader(self) -> torch.utils.data.DataLoader:
        run = self.cfg.run
        sampler = StepBatchSampler(
            len(self.dataset),
            run.batch_size,
            self.ctx.world,
            self.ctx.rank,
            run.seed,
            total=self.stop_at * run.grad_accum,
            start=self.step * run.grad_accum,
        )
        return torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=self.cfg.data.num_workers,
            pin_memory=self.ctx.device.type == "cuda",
            generator=torch.Generator().manual_seed(run.seed),
        )

    def _reduce_mean(self, values: list[float]) -> list[float]:
        if not self.ctx.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.ctx.device)
        dist.all_reduce(t)
        return (t / self.ctx.world).tolist()

    def _reduce_counts(self) -> None:
        if self.ctx.distributed:
            for counts in self.load.counts.values():
                t = torch.from_numpy(counts).to(self.ctx.device)
                dist.all_reduce(t)
                counts[:] = t.cpu().numpy()


def _log_experts(writer, summary: dict, step: int) -> None:
    for block, stats in summary.items():
        for e, frac in enumerate(stats["fraction"]):
            writer.add_scalar(f"experts/{block}/e{e}", frac, step)
        writer.add_scalar(f"experts_cv/{block}", stats["cv"], step)
        for size, fracs in stats["by_face_size"].items():
            for e, frac in enumerate(fracs):
                writer.add_scalar(f"experts_by_face_size/{size}/{block}/e{e}", frac, step)


def _worker_reason(exc: DatasetError) -> str:
    """A loader worker's error arrives with its traceback in the message; keep the reason only."""
    last = str(exc).strip().splitlines()[-1]
    prefix = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    return last.removeprefix(prefix)


def train(cfg: TrainConfig) -> TrainResult:
    """Run (or resume) the recipe the config describes; returns what was done. Collective under torchrun."""
    ctx = setup(cfg.run.device)
    try:
        return _train(_Run(cfg, ctx), cfg)
    finally:
        teardown(ctx)


def _train(run: _Run, cfg: TrainConfig) -> TrainResult:
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    ctx, rc = run.ctx, cfg.run
    result = TrainResult(step=run.step, total_steps=run.total_steps)
    if run.step >= run.stop_at:
        logger.info("nothing to do: step %d, stopping at %d", run.step, run.stop_at)
        return result
    writer = SummaryWriter(str(run.out / "tb"), purge_step=run.step) if ctx.is_main else None
    bar = tqdm(total=run.stop_at, initial=run.step, disable=not (rc.progress and ctx.is_main), unit="step")
    run.model.train()
    micro, sums = 0, [0.0, 0.0, 0.0, 0]  # identity, z, balance, micro-batches since the last log
    step_total, step_id = 0.0, 0.0
    images_done, started = 0, time.perf_counter()
    interval_start, interval_images = started, 0
    try:
        for images, labels, face_px in run.loader():
            images = images.to(ctx.device, non_blocking=True)
            labels = labels.to(ctx.device, non_blocking=True)
            run.load.set_batch(face_px.numpy())
            micro += 1
            last_micro = micro % rc.grad_accum == 0
            sync = contextlib.nullcontext() if last_micro or not ctx.distributed else run.model.no_sync()
            with sync:
                id_loss, aux = run.model(images, labels)
                aux_term = cfg.optim.aux_weight * aux if rc.phase == "full" else torch.zeros_like(aux)
                loss = (id_loss + aux_term) / rc.grad_accum
                run.scaler.scale(loss).backward()
            z, bal = run.load.take_losses()
            sums[0] += float(id_loss.detach())
            sums[1] += z
            sums[2] += bal
            sums[3] += 1
            step_total += float(loss.detach())
            step_id += float(id_loss.detach()) / rc.grad_accum
            images_done += len(images) * ctx.world
            if not last_micro:
                continue
            run.scaler.unscale_(run.optimizer)
            if cfg.optim.clip_grad_norm and run.clip_params:
                torch.nn.utils.clip_grad_norm_(run.clip_params, cfg.optim.clip_grad_norm)
            run.scaler.step(run.optimizer)
            run.scaler.update()
            run.optimizer.zero_grad(set_to_none=True)
            run.scheduler.step()
            run.step += 1
            result.losses.append(step_total)
            result.identity_losses.append(step_id)
            step_total = step_id = 0.0
            bar.update(1)
            lr = run.scheduler.get_last_lr()[0]
            if run.step % rc.log_every == 0 or run.step == run.stop_at:
                n = max(sums[3], 1)
                id_mean, z_mean, bal_mean = run._reduce_mean([sums[0] / n, sums[1] / n, sums[2] / n])
                run._reduce_counts()
                now = time.perf_counter()
                speed = (images_done - interval_images) / max(now - interval_start, 1e-9)
                interval_start, interval_images = now, images_done
                bar.set_postfix(
                    id=f"{id_mean:.3f}",
                    z=f"{z_mean:.4f}",
                    bal=f"{bal_mean:.4f}",
                    lr=f"{lr:.2e}",
                    img_s=f"{speed:.1f}",
                )
                if writer is not None:
                    for name, v in (
                        ("loss/identity", id_mean),
                        ("loss/router_z", z_mean),
                        ("loss/balance", bal_mean),
                        ("lr", lr),
                        ("throughput/images_per_s", speed),
                    ):
                        writer.add_scalar(name, v, run.step)
                    _log_experts(writer, run.load.summary(), run.step)
                    writer.flush()
                run.load.reset()
                sums = [0.0, 0.0, 0.0, 0]
            if run.step % rc.save_every == 0 and run.step < run.stop_at:
                run.save()
    except DatasetError as exc:  # raised in a loader worker: keep the original one-line reason
        raise DatasetError(_worker_reason(exc)) from None
    finally:
        bar.close()
        run.load.close()
        if writer is not None:
            writer.close()
    result.step = run.step
    result.images_per_second = images_done / max(time.perf_counter() - started, 1e-9)
    result.files = run.save()
    if ctx.is_main:
        stats = run.out / "expert_load.json"
        tmp = stats.with_name(stats.name + ".partial")
        tmp.write_text(json.dumps(run.load.summary(total=True), indent=1))
        os.replace(tmp, stats)
        result.files.append(stats)
    return result
