"""Fixtures of the training tests: a tiny UNet config that trains a step in milliseconds."""

from collections.abc import Iterator

import pytest
import torch

from diffpir_core.training import DEMO_MODEL_CONFIG, TrainConfig

TINY_MODEL = {**DEMO_MODEL_CONFIG, "image_size": 16, "num_channels": 32, "channel_mult": "1,2",
              "attention_resolutions": "8", "num_head_channels": 32}


@pytest.fixture
def tiny_config() -> TrainConfig:
    """Six steps of a two-level UNet on 16 px patches of one small bundled image."""
    return TrainConfig(model=TINY_MODEL, images=("microaneurysms",), crop=16, batch_size=2, steps=6,
                       warmup_steps=2, checkpoint_every=2, log_every=2, seed=3)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: on the shared 2-core CI machine two OpenMP threads spin against each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
