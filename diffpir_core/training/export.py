"""Turn a training run into a shippable prior: EMA weights as safetensors plus a model card JSON.

The card holds what ``load_prior`` needs (``config``: the ``create_model`` kwargs) and what a reader
needs to trust the file: training data, held-out images, steps, final loss, training time, sha256.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import torch

from diffpir_core.models.betas import BETA_END, BETA_START, NUM_TRAIN_TIMESTEPS
from diffpir_core.models.checkpoint import save_prior
from diffpir_core.models.files import sha256_file
from diffpir_core.training.data import HELD_OUT_IMAGES
from diffpir_core.training.trainer import LOG_NAME, load_checkpoint

FINAL_LOSS_WINDOW = 500
"""The card's ``final_loss`` is the mean training loss over this many last steps (single batches are noisy)."""

SAMPLE_SIZE = 64
"""Image size the demo prior is meant to sample at (it is trained on smaller crops; the UNet is convolutional)."""


def _final_losses(run_dir: Path, step: int) -> dict[str, float]:
    """Mean loss, mse and vlb over the last FINAL_LOSS_WINDOW steps of the run's log (the latest entry
    per step wins, so windows re-logged after a resume count once)."""
    entries: dict[int, dict[str, float]] = {}
    log = run_dir / LOG_NAME
    if log.is_file():
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            if entry["step"] <= step:
                entries[int(entry["step"])] = entry
    recent = [e for s, e in entries.items() if s > step - FINAL_LOSS_WINDOW]
    if not recent:
        return {}
    return {key: sum(e[key] for e in recent) / len(recent) for key in ("loss", "mse", "vlb")}


def export_prior(
    run_dir: Path,
    weights_path: Path,
    card_path: Path | None = None,
    *,
    name: str = "demo",
    description: str = "small guided-diffusion prior trained by diffpir-flow on images bundled with scikit-image",
) -> dict[str, Any]:
    """Write the EMA weights of ``run_dir``'s checkpoint to ``weights_path`` (safetensors, float32, the
    create_model kwargs in its metadata, so ``load_prior(path)`` needs nothing else) and the model card
    to ``card_path`` (default: same name, ``.json``); return the card."""
    run_dir, weights_path = Path(run_dir), Path(weights_path)
    card_path = Path(card_path) if card_path is not None else weights_path.with_suffix(".json")
    ckpt = load_checkpoint(run_dir)
    weights = {k: v.detach().float().contiguous() for k, v in ckpt["ema"].items()}
    config = ckpt["config"]
    save_prior(weights, weights_path, config["model"], metadata={"name": name})
    losses = _final_losses(run_dir, ckpt["step"])
    card = {
        "name": name,
        "description": description,
        "config": config["model"],
        "architecture": "guided-diffusion UNet (openai/guided-diffusion create_model), learned variance",
        "num_params": sum(v.numel() for v in weights.values()),
        "weights": "EMA of the training weights",
        "image_size": SAMPLE_SIZE,
        "train_crop": config["crop"],
        "data": list(config["images"]),
        "data_source": "skimage.data (bundled with the scikit-image wheel; grayscale replicated to RGB)",
        "held_out": list(HELD_OUT_IMAGES),
        "augmentation": "random downscale (short side {}-{} px), random crop, flips, 90-degree rotations".format(
            *config["short_sides"]
        ),
        "objective": "DDPM epsilon MSE + learned-variance VLB with stop-grad on the mean "
        "(improved-DDPM hybrid, lambda=0.001)",
        "schedule": {
            "kind": "linear",
            "num_timesteps": NUM_TRAIN_TIMESTEPS,
            "beta_start": BETA_START,
            "beta_end": BETA_END,
        },
        "optimizer": {
            "kind": "Adam",
            "lr": config["lr"],
            "warmup_steps": config["warmup_steps"],
            "grad_clip": config["grad_clip"],
            "batch_size": config["batch_size"],
        },
        "ema_decay": config["ema_decay"],
        "seed": config["seed"],
        "steps": ckpt["step"],
        "final_loss": losses.get("loss"),
        "final_mse": losses.get("mse"),
        "final_vlb": losses.get("vlb"),
        "final_loss_window_steps": FINAL_LOSS_WINDOW,
        "training_seconds": round(ckpt["elapsed_seconds"], 1),
        "trained_on": ckpt["device"],
        "torch_version": torch.__version__,
        "exported_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "sha256": sha256_file(weights_path),
    }
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return card
