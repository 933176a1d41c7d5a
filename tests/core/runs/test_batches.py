"""Shard restoration without Prefect: CUDA out-of-memory halves the batch, results stay the same."""

from pathlib import Path

import numpy as np
import torch

from diffpir_core.models import load_prior
from diffpir_core.runs.batches import inputs_from_arrays, restore_batchwise, synthesise
from diffpir_core.runs.job import parse_job


class OutOfMemoryAbove(torch.nn.Module):
    """Wraps a UNet and raises CUDA's out-of-memory error for batches larger than ``limit``."""

    def __init__(self, unet: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.unet, self.limit, self.batches = unet, limit, []
        self.downsample_factor = getattr(unet, "downsample_factor", None)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.unet(x, t)


def test_out_of_memory_halves_the_batch_and_keeps_the_pixels(tiny_prior: Path, image_writer, tmp_path: Path) -> None:
    images = image_writer(tmp_path / "img", 5)
    ids = sorted(images)
    job = parse_job({"input": "x", "output": "y", "task": {"kind": "sr", "scale": 2}, "sampler": {"iter_num": 2}})
    inputs = inputs_from_arrays(
        job.task, ids, synthesise(job.task, ids, np.stack([images[i] for i in ids]), job.seed, {})
    )
    unet = load_prior(str(tiny_prior)).unet
    config = job.sampler_config()
    expected, size = restore_batchwise(unet, inputs, job.task, config, seed=0, batch_size=5, device="cpu")
    assert size == 5

    limited = OutOfMemoryAbove(unet, limit=2).eval()
    restored, size = restore_batchwise(limited, inputs, job.task, config, seed=0, batch_size=5, device="cpu")
    assert size == 2
    assert limited.batches[0] == 5 and max(limited.batches[1:]) == 2
    np.testing.assert_array_equal(restored, expected)
