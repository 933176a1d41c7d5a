"""The training loop: Adam on the hybrid loss, EMA weights, checkpoint and exact resume.

All randomness (patches, timesteps, noise) comes from one ``torch.Generator`` seeded by the config and
saved in every checkpoint, so a run stopped at any checkpoint and resumed gives the same weights as an
uninterrupted run (on the same device and thread count). Runs on CPU or GPU unchanged.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from diffpir_core.models import build_unet
from diffpir_core.training.config import TrainConfig
from diffpir_core.training.data import PatchSampler
from diffpir_core.training.objective import DiffusionObjective, LossTerms

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"


@dataclass
class TrainState:
    """Where a run stands: the step reached, wall time spent over all sessions, last logged losses."""

    step: int
    elapsed_seconds: float
    last_log: dict[str, float] | None
    stopped_early: bool


class ConfigMismatchError(RuntimeError):
    """The run directory holds a checkpoint of a different config."""


def build_model(config: TrainConfig) -> torch.nn.Module:
    """The guided-diffusion UNet of ``config.model`` (learned variance: 6 output channels)."""
    return build_unet(**config.model)


class _Ema:
    """Exponential moving average of a module's float tensors, decay warmed up as (1 + n) / (10 + n)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, num_updates: int) -> None:
        decay = min(self.decay, (1.0 + num_updates) / (10.0 + num_updates))
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                self.shadow[key].lerp_(value, 1.0 - decay)
            else:
                self.shadow[key].copy_(value)


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    """The checkpoint of ``run_dir`` (CPU tensors); explains what to do when there is none."""
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: train first with `diffpir train-prior --run-dir {run_dir}`")
    return torch.load(path, map_location="cpu", weights_only=False)


@contextmanager
def _stop_on_sigterm() -> Iterator[threading.Event]:
    """An event set by SIGTERM (in the main thread), so a killed run still writes its checkpoint."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: event.set())
    try:
        yield event
    finally:
        signal.signal(signal.SIGTERM, previous)


def _train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    objective: DiffusionObjective,
    sampler: PatchSampler,
    generator: torch.Generator,
    config: TrainConfig,
    step: int,
    device: torch.device,
) -> LossTerms:
    """One optimizer step on a fresh batch (draw order: patches, timesteps, noise — fixed for resume)."""
    x0 = sampler.sample(config.batch_size, generator).to(device)
    t = objective.sample_timesteps(config.batch_size, generator).to(device)
    noise = torch.randn(x0.shape, generator=generator).to(device)
    for group in optimizer.param_groups:
        group["lr"] = config.lr * min(1.0, (step + 1) / max(1, config.warmup_steps))
    x_t = objective.q_sample(x0, t, noise)
    terms = objective.loss(model(x_t, t), x0, x_t, t, noise)
    optimizer.zero_grad(set_to_none=True)
    terms.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    return terms


def _log_entry(
    step: int, window: list[tuple[float, float, float]], batches_per_s: float, lr: float, elapsed_seconds: float
) -> dict[str, float]:
    """One line of log.jsonl: mean loss terms over the window of steps since the last line."""
    n = len(window)
    return {
        "step": step,
        "loss": sum(w[0] for w in window) / n,
        "mse": sum(w[1] for w in window) / n,
        "vlb": sum(w[2] for w in window) / n,
        "images_per_s": n * batches_per_s,
        "lr": lr,
        "elapsed_seconds": elapsed_seconds,
    }


def train(
    config: TrainConfig,
    run_dir: Path,
    *,
    device: str | torch.device = "cpu",
    max_seconds: float | None = None,
    stop_at: int | None = None,
    progress: bool = True,
) -> TrainState:
    """Train (or resume) the run in ``run_dir`` until ``config.steps``, ``stop_at`` steps, ``max_seconds``
    of wall time in this session, or SIGTERM — whichever comes first — and leave a checkpoint there.

    The global torch RNG (weight init, dropout) is seeded from the config and saved in checkpoints too;
    the caller's RNG state is restored afterwards."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        return _train(config, Path(run_dir), device, max_seconds, stop_at, progress)


def _train(
    config: TrainConfig,
    run_dir: Path,
    device: torch.device,
    max_seconds: float | None,
    stop_at: int | None,
    progress: bool,
) -> TrainState:
    run_dir.mkdir(parents=True, exist_ok=True)
    target = min(config.steps, stop_at) if stop_at is not None else config.steps

    model = build_model(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    step, elapsed_before, last_log = 0, 0.0, None
    ema = _Ema(model, config.ema_decay)
    if (run_dir / CHECKPOINT_NAME).is_file():
        ckpt = load_checkpoint(run_dir)
        if ckpt["config_digest"] != config.digest():
            raise ConfigMismatchError(
                f"{run_dir} holds a checkpoint of another config ({ckpt['config_digest']} != {config.digest()}): "
                "use a new --run-dir, or the same settings as that run"
            )
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        ema.shadow = {k: v.to(device) for k, v in ckpt["ema"].items()}
        generator.set_state(ckpt["rng"])
        torch.set_rng_state(ckpt["torch_rng"])
        if device.type == "cuda":
            torch.cuda.set_rng_state(ckpt["cuda_rng"], device)
        step, elapsed_before, last_log = ckpt["step"], ckpt["elapsed_seconds"], ckpt["last_log"]
    else:
        (run_dir / "config.json").write_text(json.dumps(config.model_dump(mode="json"), indent=2))

    session_start = time.perf_counter()

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - session_start

    def save() -> None:
        _atomic_save(
            {
                "step": step,
                "elapsed_seconds": elapsed(),
                "last_log": last_log,
                "config": config.model_dump(mode="json"),
                "config_digest": config.digest(),
                "device": device.type,
                "model": model.state_dict(),
                "ema": ema.shadow,
                "optimizer": optimizer.state_dict(),
                "rng": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            },
            run_dir / CHECKPOINT_NAME,
        )

    if step >= target:
        return TrainState(step, elapsed_before, last_log, stopped_early=False)
    sampler = PatchSampler(config.images, crop=config.crop, short_sides=config.short_sides)
    objective = DiffusionObjective()
    model.train()
    window: list[tuple[float, float, float]] = []
    window_start = time.perf_counter()
    stopped_early = False
    bar = tqdm(total=target, initial=step, disable=not progress, desc="train-prior", unit="step", dynamic_ncols=True)
    with _stop_on_sigterm() as sigterm, open(run_dir / LOG_NAME, "a") as log:
        while step < target:
            terms = _train_step(model, optimizer, objective, sampler, generator, config, step, device)
            step += 1
            ema.update(model, step)
            window.append((terms.loss.item(), terms.mse.item(), terms.vlb.item()))
            if step % config.log_every == 0 or step == target:
                now = time.perf_counter()
                last_log = _log_entry(
                    step,
                    window,
                    config.batch_size / max(now - window_start, 1e-9),
                    optimizer.param_groups[0]["lr"],
                    elapsed(),
                )
                log.write(json.dumps(last_log) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{last_log['loss']:.4f}", img_s=f"{last_log['images_per_s']:.1f}")
                window, window_start = [], now
            bar.update(1)

            out_of_time = max_seconds is not None and time.perf_counter() - session_start >= max_seconds
            stopped_early = sigterm.is_set() or out_of_time
            if step % config.checkpoint_every == 0 or step == target or stopped_early:
                save()
            if stopped_early:
                break
    bar.close()
    return TrainState(step, elapsed(), last_log, stopped_early)
