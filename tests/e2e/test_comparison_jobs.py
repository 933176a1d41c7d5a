"""The shipped comparison jobs load, and their input is the held-out demo tiles (never seen by the demo prior)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffpir_core.runs.job import load_job
from diffpir_core.training import held_out_tiles

JOBS = Path(__file__).resolve().parents[2] / "jobs"


@pytest.mark.parametrize("name", ["compare-demo.yaml", "sweep-demo.yaml"])
def test_comparison_job_reads_the_shipped_held_out_tiles(name: str) -> None:
    job = load_job(JOBS / name)
    assert job.is_comparison()
    files = sorted(Path(job.input).glob("*.png"))
    assert [f.stem for f in files] == ["astronaut_0", "coffee_2"]
    tiles = held_out_tiles()
    for f in files:
        assert np.array_equal(np.asarray(Image.open(f).convert("RGB")), tiles[f.stem]), f"{f} is not the held-out tile"
