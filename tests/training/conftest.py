"""Fixtures of the training tests: a tiny UNet config that trains a step in milliseconds."""

import pytest

from diffpir_core.training import DEMO_MODEL_CONFIG, TrainConfig

TINY_MODEL = {
    **DEMO_MODEL_CONFIG,
    "image_size": 16,
    "num_channels": 32,
    "channel_mult": "1,2",
    "attention_resolutions": "8",
    "num_head_channels": 32,
}


@pytest.fixture
def tiny_config() -> TrainConfig:
    """Six steps of a two-level UNet on 16 px patches of one small bundled image."""
    return TrainConfig(
        model=TINY_MODEL,
        images=("microaneurysms",),
        crop=16,
        batch_size=2,
        steps=6,
        warmup_steps=2,
        checkpoint_every=2,
        log_every=2,
        seed=3,
    )
