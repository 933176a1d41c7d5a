"""What defines a prior-training run. A checkpoint belongs to exactly one config (its hash), so a
resumed run cannot silently continue with different settings."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from diffpir_core.training.data import HELD_OUT_IMAGES, TRAIN_IMAGES

#: guided-diffusion ``create_model`` kwargs of the shipped demo prior: the official architecture
#: (learned variance, scale-shift norm, residual up/down-sampling, attention at 1/8 resolution) at a
#: width that trains on a CPU in a couple of hours. Dropout is off: the run is far too short to overfit.
DEMO_MODEL_CONFIG: dict[str, Any] = {
    "image_size": 64,
    "num_channels": 32,
    "num_res_blocks": 1,
    "channel_mult": "1,2,2,2",
    "learn_sigma": True,
    "class_cond": False,
    "use_checkpoint": False,
    "attention_resolutions": "8",
    "num_heads": 4,
    "num_head_channels": 32,
    "num_heads_upsample": -1,
    "use_scale_shift_norm": True,
    "dropout": 0.0,
    "resblock_updown": True,
    "use_fp16": False,
    "use_new_attention_order": False,
}


_NOT_IN_DIGEST = {"steps", "checkpoint_every", "log_every"}


class TrainConfig(BaseModel):
    """Settings of one training run (everything that changes the weights it produces)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: dict[str, Any] = Field(
        default_factory=lambda: dict(DEMO_MODEL_CONFIG), description="guided-diffusion create_model kwargs"
    )
    images: tuple[str, ...] = Field(default=TRAIN_IMAGES, description="skimage.data images to train on")
    crop: int = Field(default=32, ge=8, description="training patch size (px); the UNet is convolutional")
    short_sides: tuple[int, int] = Field(
        default=(96, 384),
        description="range of image short sides (px) after random downscaling, so patches match the demo's scale",
    )
    batch_size: int = Field(default=16, ge=1)
    lr: float = Field(default=5e-4, gt=0)
    warmup_steps: int = Field(default=100, ge=0, description="linear learning-rate warm-up")
    ema_decay: float = Field(default=0.999, gt=0, lt=1, description="EMA decay (warmed up as (1+n)/(10+n))")
    grad_clip: float = Field(default=1.0, gt=0)
    steps: int = Field(default=100_000, ge=1, description="optimizer steps of the full run")
    seed: int = 0
    checkpoint_every: int = Field(default=100, ge=1)
    log_every: int = Field(default=25, ge=1)

    @field_validator("images")
    @classmethod
    def _no_held_out(cls, images: tuple[str, ...]) -> tuple[str, ...]:
        leaked = sorted(set(images) & set(HELD_OUT_IMAGES))
        if leaked:
            raise ValueError(f"held-out images {leaked} may not be trained on; remove them from 'images'")
        if not images:
            raise ValueError("'images' is empty: name at least one skimage.data image")
        return images

    @field_validator("model")
    @classmethod
    def _learned_sigma(cls, model: dict[str, Any]) -> dict[str, Any]:
        if not model.get("learn_sigma", False):
            raise ValueError("model.learn_sigma must be true: the hybrid loss trains the variance half")
        return model

    def digest(self) -> str:
        """Short hash of the settings that shape the weights, stored in checkpoints to refuse resuming with
        other ones. ``steps`` and the logging/checkpoint intervals are left out: a run may be extended."""
        fields = self.model_dump(mode="json", exclude=_NOT_IN_DIGEST)
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
