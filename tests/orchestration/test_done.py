"""The one done decision, end to end, and data verified where it is read.

- A per-image mask file replaced: `diffpir status` shows its shard pending and `diffpir run` restores exactly it.
- A restored shard damaged behind the store's back (4 bytes flipped, size and mtime kept): status still lists it
  done (it reads no data), `diffpir export` refuses it naming the shard and the fix, `diffpir verify` finds it and
  forgets it, a re-run restores it.
- The damaged shared measurements of a comparison: a newly added variant fails naming the shard instead of
  restoring from damaged data; a re-run repairs it.
"""

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from diffpir_core.io import DatasetStore
from diffpir_core.runs.plan import read_plans
from diffpir_flow.cli.app import app
from diffpir_flow.flows.run import run


def _flip(path: Path) -> None:
    """Flip 4 bytes in the middle of ``path``, keeping its size and modification time (silent disk corruption)."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4] = bytes(b ^ 0xFF for b in data[middle : middle + 4])
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns


def _shard_object(store: str, array: str, index: int) -> Path:
    """The data object of shard ``index`` of ``array`` in the 32x32 group of a local store."""
    (path,) = (Path(store) / "groups" / "32x32" / array / "c").glob(f"{index}/*/*/*")
    return path


def _states(runner: CliRunner, out: Path) -> list[str]:
    result = runner.invoke(app, ["status", str(out), "--json"])
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.output)["jobs"]
    return [shard["state"] for shard in entry["shards"]]


def test_a_replaced_mask_file_makes_its_shard_pending_and_the_run_restores_exactly_it(
    make_job, image_writer, tmp_path: Path
) -> None:
    folder, masks, out = tmp_path / "images", tmp_path / "masks", tmp_path / "out"
    image_writer(folder, 8)
    masks.mkdir()
    for i in range(8):
        mask = np.full((32, 32), 255, np.uint8)
        mask[8 + i : 20 + i, 4:28] = 0  # a band to fill in, a little lower for each image
        Image.fromarray(mask).save(masks / f"img{i:03d}.png")
    job = make_job(
        folder, out, mode="restore", metrics=None, task={"kind": "inpaint", "mask": str(masks), "noise_sigma": 0.02}
    )
    job_file = tmp_path / "job.yaml"
    job_file.write_text(job.to_yaml())
    runner = CliRunner()
    first = runner.invoke(app, ["run", str(job_file)])
    assert first.exit_code == 0, first.output
    assert _states(runner, out) == ["done", "done"]
    plan = read_plans(str(out), {})[0]
    store = DatasetStore.open(plan.output_store)
    before = [store.read_array(ref, plan.restored_array) for ref in store.shards()]

    other = np.full((32, 32), 255, np.uint8)
    other[:, 10:22] = 0
    Image.fromarray(other).save(masks / "img005.png")  # shard 1 (images 4-7) has another mask now
    assert _states(runner, out) == ["done", "pending"]
    again = runner.invoke(app, ["run", str(job_file)])
    assert again.exit_code == 0, again.output
    assert "1 shard(s) run, 1 already done" in again.output, again.output
    assert _states(runner, out) == ["done", "done"]
    after = [store.read_array(ref, plan.restored_array) for ref in store.shards()]
    np.testing.assert_array_equal(after[0], before[0])
    assert not np.array_equal(after[1][1], before[1][1])  # img005 restored with its new mask


def test_a_damaged_restored_shard_is_refused_by_export_found_by_verify_and_restored_by_a_rerun(
    make_job, images_8: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    job = make_job(images_8, out)
    assert run(job=job, return_state=True).is_completed()
    plan = read_plans(str(out), {})[0]
    store = DatasetStore.open(plan.output_store)
    clean = store.read_array(store.shards()[1], plan.restored_array)
    _flip(_shard_object(plan.output_store, plan.restored_array, 1))

    runner = CliRunner()
    assert _states(runner, out) == ["done", "done"]  # status lists records, it reads no data: the documented trade-off
    export = runner.invoke(app, ["export", str(out), str(tmp_path / "png")])
    assert export.exit_code != 0, export.output
    assert "32x32/000001" in export.output and "damaged" in export.output and "diffpir verify" in export.output, (
        export.output
    )
    assert not (tmp_path / "png" / "img004.png").exists() and (tmp_path / "png" / "img000.png").exists()

    kept = runner.invoke(app, ["verify", str(out), "--keep"])
    assert kept.exit_code == 1 and "shard 32x32/000001" in kept.output, kept.output
    assert _states(runner, out) == ["done", "done"]
    verify = runner.invoke(app, ["verify", str(out)])
    assert verify.exit_code == 1, verify.output
    assert "damaged: job" in verify.output and "restored shard 32x32/000001" in verify.output
    assert "checked 4 shard(s) of 1 job(s): 1 damaged" in verify.output  # 2 restored shards, 2 of measurements
    assert _states(runner, out) == ["done", "pending"]

    again = run(job=job, return_state=True)
    assert (again.result()["restored"], again.result()["skipped"]) == (1, 1)
    assert runner.invoke(app, ["verify", str(out)]).exit_code == 0
    np.testing.assert_array_equal(store.read_array(store.shards()[1], plan.restored_array), clean)
    export = runner.invoke(
        app, ["export", str(out), str(tmp_path / "png"), "--overwrite"]
    )  # the first export wrote some
    assert export.exit_code == 0 and "exported 8 PNGs" in export.output, export.output
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "png" / "img004.png")), clean[0])


def test_damaged_shared_measurements_fail_a_new_variant_naming_the_shard_and_a_rerun_repairs_them(
    make_job, images_8: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    task = {"kind": "inpaint", "mask": "box"}
    first = make_job(images_8, out, variants=[{}], task=task)
    assert run(job=first, return_state=True).is_completed()
    (plan,) = read_plans(str(out), {})
    shared = DatasetStore.open(plan.measurement_store)
    ref = shared.shards()[0]
    clean = shared.read_array(ref, f"{plan.measurement_prefix}/y")
    _flip(_shard_object(plan.measurement_store, f"{plan.measurement_prefix}/y", 0))

    grown = make_job(images_8, out, variants=[{}, {"method": "dpir", "sampler": {"iter_num": 3}}], task=task)
    state = run(job=grown, return_state=True)
    assert state.is_failed(), state.message
    assert "32x32/000000" in state.message and "damaged" in state.message and "run the job again" in state.message, (
        state.message
    )

    again = run(job=grown, return_state=True)
    assert again.is_completed(), again.message
    assert (again.result()["restored"], again.result()["skipped"]) == (1, 3)
    np.testing.assert_array_equal(shared.read_verified(ref, f"{plan.measurement_prefix}/y")[0], clean)
