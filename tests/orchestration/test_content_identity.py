"""Content identity end to end: a job re-run after its input images, its kernel file or its stored input changed
restores exactly the affected shards, and every exported file holds the restoration of the image it is named after
(checked pixel-wise against the image restored on its own, and once against a fresh single-image run)."""

import csv
import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from diffpir_core.io import DatasetStore, StoreError, export_images
from diffpir_core.runs.job import Job
from diffpir_core.runs.plan import read_plans
from diffpir_flow.flows.run import run


def _kernel(path: Path, spread: float) -> None:
    grid = np.arange(5) - 2
    np.save(path, np.exp(-(grid[:, None] ** 2 + grid[None] ** 2) / (2 * spread**2)))


def _image(path: Path, seed: int) -> None:
    coarse = np.random.default_rng(seed).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    Image.fromarray(coarse).resize((32, 32), Image.Resampling.BICUBIC).save(path)


def _run(job: Job, restored: int | None = None, skipped: int | None = None) -> dict[str, Any]:
    state = run(job=job, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert restored is None or summary["restored"] == restored, summary
    assert skipped is None or summary["skipped"] == skipped, summary
    return summary


def _check_export(job: Job, folder: Path, destination: Path, restore_alone) -> None:
    """Export the job's results; every source image has exactly one file, holding its own restoration."""
    (plan,) = [p for p in read_plans(job.output, {}) if p.job_hash == job.job_hash()]
    summary = export_images(plan.output_store, str(destination), array=plan.restored_array)
    assert summary.skipped_shards == []
    files = dict(list(csv.reader(io.StringIO((destination / "ids.csv").read_text())))[1:])
    assert sorted(files) == sorted(p.name for p in folder.glob("*.png"))
    for image_id, name in files.items():
        pixels = np.asarray(Image.open(folder / image_id).convert("RGB"))
        exported = np.asarray(Image.open(destination / name))
        np.testing.assert_array_equal(exported, restore_alone(job, image_id, pixels), err_msg=image_id)


def _input_store(job: Job) -> DatasetStore:
    return DatasetStore.open(read_plans(job.output, {})[0].input_store)


def test_reruns_restore_exactly_what_changed_and_every_export_is_its_own_image(
    make_job, image_writer, restore_alone, tmp_path: Path
) -> None:
    folder, out, kernel = tmp_path / "images", tmp_path / "out", tmp_path / "kernel.npy"
    image_writer(folder, 12, seed=5)
    _kernel(kernel, 1.0)

    def job_now() -> Job:  # the same job file; its hash reads the kernel file's bytes
        return make_job(folder, out, task={"kind": "deblur", "kernel": str(kernel), "noise_sigma": 0.05})

    job = job_now()
    _run(job, restored=3, skipped=0)
    _check_export(job, folder, tmp_path / "export-1", restore_alone)

    # One image changed (shard 0), one deleted (shard 1) and one added (it takes the deleted one's row): shard 2 is
    # untouched, so exactly two shards are restored again.
    _image(folder / "img001.png", seed=101)
    (folder / "img006.png").unlink()
    _image(folder / "new_99.png", seed=99)
    summary = _run(job, restored=2, skipped=1)
    assert summary["input_changes"] == {"added": 1, "changed": 1, "repaired": 0, "removed": 1, "unchanged": 10}
    _check_export(job, folder, tmp_path / "export-2", restore_alone)

    alone = tmp_path / "alone"  # a fresh single-image run of the new image agrees with the reference too
    alone.mkdir()
    shutil.copy(folder / "new_99.png", alone / "new_99.png")
    single = make_job(alone, tmp_path / "alone-out", task=job.task.model_dump())
    _run(single, restored=1)
    _check_export(single, alone, tmp_path / "export-alone", restore_alone)
    exported = [np.asarray(Image.open(tmp_path / name / "new_99.png")) for name in ("export-alone", "export-2")]
    np.testing.assert_array_equal(*exported)

    # An ingest from scratch (the input store deleted): rows follow the sorted ids again, new_99.png moves to the end.
    # Results are keyed by image id, so the shards whose rows changed are restored again and nothing is relabelled.
    shutil.rmtree(_input_store(job).uri)
    _run(job, restored=2, skipped=1)
    _check_export(job, folder, tmp_path / "export-3", restore_alone)

    # Stored input pixels damaged: reading them is an error naming the shard; the re-run re-ingests the damaged
    # images and restores nothing, since every result was computed from pixels that matched their hash.
    source = _input_store(job)
    shard_file = Path(source.uri) / "groups" / "32x32" / "images" / "c" / "1" / "0" / "0" / "0"
    damaged = bytearray(shard_file.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    shard_file.write_bytes(bytes(damaged))
    with pytest.raises(StoreError, match="shard 32x32/000001 .* no longer match their sha256"):
        source.read_images(source.shards()[1])
    summary = _run(job, restored=0, skipped=3)
    assert summary["input_changes"]["repaired"] >= 1 and summary["input_changes"]["changed"] == 0
    source.read_images(source.shards()[1])

    # The kernel file's bytes change at the same path, and stored pixels are damaged again: the job has a new hash,
    # everything is restored with the new kernel from re-ingested pixels, and the first job's results survive.
    shard_file.write_bytes(bytes(damaged))
    first_hash = job.job_hash()
    _kernel(kernel, 2.0)
    changed = job_now()
    assert changed.job_hash() != first_hash and changed.task.model_dump() == job.task.model_dump()
    summary = _run(changed, restored=3, skipped=0)
    assert summary["input_changes"]["repaired"] >= 1
    _check_export(changed, folder, tmp_path / "export-4", restore_alone)
    plans = {plan.job_hash: plan for plan in read_plans(str(out), {})}
    assert plans.keys() == {first_hash, changed.job_hash()}
    earlier = export_images(plans[first_hash].output_store, str(tmp_path / "export-first"), array="restored")
    assert (earlier.exported, earlier.skipped_shards) == (12, [])  # the earlier job's results are all still there


def test_a_damaged_dataset_store_given_as_input_fails_the_shard_naming_it(
    make_job, image_writer, tmp_path: Path
) -> None:
    image_writer(tmp_path / "images", 8)
    first = make_job(tmp_path / "images", tmp_path / "out")
    _run(first, restored=2)
    store = Path(_input_store(first).uri)
    given = tmp_path / "given.zarr"
    shutil.copytree(store, given)
    shard_file = given / "groups" / "32x32" / "images" / "c" / "1" / "0" / "0" / "0"
    damaged = bytearray(shard_file.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    shard_file.write_bytes(bytes(damaged))

    state = run(job=make_job(given, tmp_path / "from-store"), return_state=True)
    assert state.is_failed()
    assert "1/2 shard(s) failed: 32x32/000001" in state.message and "no longer match their sha256" in state.message
    assert state.result(raise_on_failure=False)["done"] == 1
