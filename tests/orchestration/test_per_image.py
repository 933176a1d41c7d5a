"""Per-image degradations in restore mode and exporting a job's results, end to end.

A deblur job with a kernel folder on S3 (SeaweedFS): kernels of two sizes, one missing and one unreadable file; an
inpainting job with a mask manifest (CSV) carrying per-image noise σ, one missing mask file and one of the wrong
size. Bad images are quarantined with their reasons, the others restored at full size with their own kernel, mask
and σ (checked pixel-wise against the core restoring them alone), and exports leave the quarantined rows out.
"""

import csv
import io
import json
from pathlib import Path

import numpy as np
import s3fs
import torch
from PIL import Image
from typer.testing import CliRunner

from diffpir_core.io import DatasetStore, export_images
from diffpir_core.io.degradation_files import pad_kernels
from diffpir_core.models import load_prior
from diffpir_core.runs.batches import ShardInputs, restore_batchwise
from diffpir_core.runs.plan import read_plans
from diffpir_core.runs.report import write_job_report
from diffpir_flow.cli.app import app
from diffpir_flow.flows.run import run


def _gaussian(size: int, spread: float) -> np.ndarray:
    grid = np.arange(size) - size // 2
    kernel = np.exp(-(grid[:, None] ** 2 + grid[None] ** 2) / (2 * spread**2))
    return (kernel / kernel.sum()).astype(np.float32)


def _alone(job, image_id: str, pixels: np.ndarray, params: dict, sigma: float | None = None) -> np.ndarray:
    """What the core restores for this one image with these operator parameters (batch of one)."""
    unet = load_prior(job.prior, device="cpu").unet
    y = torch.from_numpy(pixels.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    inputs = ShardInputs([image_id], y, params, None if sigma is None else [sigma])
    restored, _ = restore_batchwise(
        unet, inputs, job.task, job.sampler_config(), seed=job.seed, batch_size=1, device="cpu", fit=job.fit()
    )
    return restored[0]


def _ids_csv(folder: Path) -> dict[str, str]:
    return dict(list(csv.reader(io.StringIO((folder / "ids.csv").read_text())))[1:])


def test_deblur_with_a_kernel_folder_on_s3(make_job, image_writer, s3_bucket, tmp_path: Path) -> None:
    bucket, options = s3_bucket
    fs = s3fs.S3FileSystem(**options)
    images = image_writer(tmp_path / "blurred", 4)
    for name in images:
        fs.pipe_file(f"{bucket}/blurred/{name}", (tmp_path / "blurred" / name).read_bytes())
    small, large = _gaussian(5, 0.8), _gaussian(9, 2.5)
    buffer = io.BytesIO()
    np.save(buffer, small)
    fs.pipe_file(f"{bucket}/kernels/img000.npy", buffer.getvalue())
    png = io.BytesIO()
    Image.fromarray(np.round(large / large.max() * 255).astype(np.uint8)).save(png, format="PNG")
    fs.pipe_file(f"{bucket}/kernels/img001.png", png.getvalue())
    fs.pipe_file(f"{bucket}/kernels/img002.npy", b"not a kernel")  # unreadable; img003 has none
    job = make_job(
        f"{bucket}/blurred",
        f"{bucket}/out",
        mode="restore",
        metrics=None,
        storage_options=options,
        task={"kind": "deblur", "kernel": f"{bucket}/kernels", "noise_sigma": 0.05},
    )
    state = run(job=job, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["restored"] == 1 and sorted(summary["quarantined"]) == ["img002.png", "img003.png"]
    assert "img003" in summary["quarantined"]["img003.png"] and "no file" in summary["quarantined"]["img003.png"]
    assert "img002.npy" in summary["quarantined"]["img002.png"]

    plan = read_plans(f"{bucket}/out", options)[0]
    store = DatasetStore.open(plan.output_store, options)
    (ref,) = store.shards()
    restored = store.read_array(ref, plan.restored_array)
    assert restored.shape == (4, 32, 32, 3) and not restored[2:].any() and restored[:2].std(axis=(1, 2, 3)).min() > 0
    report = json.loads(fs.cat_file(f"{plan.job_dir}/summary.json"))
    assert sorted(q["id"] for q in report["quarantined"]) == ["img002.png", "img003.png"]
    assert report["metrics"]["measurement_rms"]["count"] == 2

    # each image was restored with its own kernel (zero-padded to 9x9, centred: the same blur)
    padded = torch.from_numpy(pad_kernels([small, large / large.sum()]))
    own = _alone(job, "img000.png", images["img000.png"], {"kernel": padded[0]})
    other = _alone(job, "img000.png", images["img000.png"], {"kernel": padded[1]})
    np.testing.assert_array_equal(restored[0], own)
    assert np.abs(restored[0].astype(int) - other).max() > 0
    np.testing.assert_array_equal(pad_kernels([small])[0], small)
    np.testing.assert_allclose(padded[0].sum(), 1.0, rtol=1e-6)
    assert padded[0][4, 4] == small[2, 2]

    exported = export_images(
        plan.output_store, str(tmp_path / "export"), array=plan.restored_array, storage_options=options
    )
    assert exported.exported == 2 and sorted(exported.quarantined) == ["img002.png", "img003.png"]
    assert sorted(_ids_csv(tmp_path / "export")) == ["img000.png", "img001.png"]

    assert run(job=job, return_state=True).result()["skipped"] == 1  # same files: nothing to redo
    fs.pipe_file(f"{bucket}/kernels/img001.png", png.getvalue()[:-1] + b"\x00")  # changed bytes at the same path
    again = run(job=job, return_state=True)
    assert again.result()["restored"] == 1 and read_plans(f"{bucket}/out", options)[0].job_hash == plan.job_hash


def test_inpaint_with_a_mask_manifest_and_exports(make_job, image_writer, tmp_path: Path) -> None:
    folder = tmp_path / "masked"
    images = image_writer(folder, 5)
    masks = tmp_path / "masks"
    masks.mkdir()
    rng = np.random.default_rng(1)
    kept = {}
    for name in ("img000.png", "img001.png", "img004.png"):
        mask = (rng.random((32, 32)) > 0.4).astype(np.uint8)
        kept[name] = mask
        Image.fromarray(mask * 255).save(masks / f"m-{name}")
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(masks / "m-img003.png")
    rows = [
        ("img000.png", "m-img000.png", "0.0"),
        ("img001.png", str(masks / "m-img001.png"), "0.05"),
        ("img002.png", "m-img002.png", ""),  # the file does not exist
        ("img003.png", "m-img003.png", ""),  # 16x16 for a 32x32 image
        ("img004.png", "m-img004.png", ""),  # the task's σ
    ]
    manifest = masks / "manifest.csv"
    manifest.write_text("id,mask_uri,noise_sigma\n" + "".join(",".join(row) + "\n" for row in rows))
    out = tmp_path / "out"
    job = make_job(
        folder,
        out,
        mode="restore",
        metrics=None,
        shard_size=8,
        batch_size=4,
        task={"kind": "inpaint", "mask": str(manifest), "noise_sigma": 0.02},
    )
    state = run(job=job, return_state=True)
    assert state.is_completed(), state.message
    quarantined = state.result()["quarantined"]
    assert sorted(quarantined) == ["img002.png", "img003.png"]
    assert "m-img002.png" in quarantined["img002.png"] and "does not exist" in quarantined["img002.png"]
    assert "16x16" in quarantined["img003.png"] and "32x32" in quarantined["img003.png"]

    plan = read_plans(str(out), {})[0]
    store = DatasetStore.open(plan.output_store)
    (ref,) = store.shards()
    restored = store.read_array(ref, plan.restored_array)
    assert restored.shape == (5, 32, 32, 3) and not restored[[2, 3]].any()
    for index, (name, sigma) in enumerate([("img000.png", 0.0), ("img001.png", 0.05)]):
        mask = torch.from_numpy(kept[name].astype(np.float32))[None, None]
        np.testing.assert_array_equal(
            restored[index], _alone(job, name, images[name], {"mask": mask}, sigma), err_msg=name
        )
    mask4 = torch.from_numpy(kept["img004.png"].astype(np.float32))[None, None]
    np.testing.assert_array_equal(restored[4], _alone(job, "img004.png", images["img004.png"], {"mask": mask4}, 0.02))
    other_sigma = _alone(
        job,
        "img001.png",
        images["img001.png"],
        {"mask": torch.from_numpy(kept["img001.png"].astype(np.float32))[None, None]},
        0.0,
    )
    assert np.abs(restored[1].astype(int) - other_sigma).max() > 0  # the manifest's σ was used

    runner = CliRunner()
    result = runner.invoke(app, ["export", str(out), str(tmp_path / "e1")])  # an output with one job
    assert result.exit_code == 0, result.output
    assert "exported 3 PNGs" in result.output and "quarantined" in result.output
    assert sorted(_ids_csv(tmp_path / "e1")) == ["img000.png", "img001.png", "img004.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "e1" / "img001.png")), restored[1])

    second = make_job(
        folder,
        out,
        mode="restore",
        metrics=None,
        shard_size=8,
        batch_size=4,
        sampler={"iter_num": 2},
        task={"kind": "inpaint", "mask": str(manifest), "noise_sigma": 0.02},
    )
    assert run(job=second, return_state=True).is_completed()
    hashes = sorted(p.job_hash[:16] for p in read_plans(str(out), {}))
    assert len(hashes) == 2
    two = runner.invoke(app, ["export", str(out), str(tmp_path / "e2")])
    assert two.exit_code != 0 and "--job" in two.output and all(h in two.output for h in hashes)
    chosen = runner.invoke(app, ["export", str(out), str(tmp_path / "e2"), "--job", second.job_hash()[:8]])
    assert chosen.exit_code == 0, chosen.output
    job_folder = out / "jobs" / job.job_hash()[:16]
    by_folder = runner.invoke(app, ["export", str(job_folder), str(tmp_path / "e3")])
    assert by_folder.exit_code == 0, by_folder.output
    by_store = runner.invoke(app, ["export", str(job_folder / "restored.zarr"), str(tmp_path / "e4")])
    assert by_store.exit_code == 0, by_store.output
    for name in ("e3", "e4"):
        for image_id in ("img000.png", "img004.png"):
            np.testing.assert_array_equal(
                np.asarray(Image.open(tmp_path / name / image_id)), np.asarray(Image.open(tmp_path / "e1" / image_id))
            )
    assert not (tmp_path / "e4" / "img002.png").exists()


def test_status_counts_images_quarantined_at_ingest_and_by_a_shard(make_job, image_writer, tmp_path: Path) -> None:
    """A mask folder without img001's mask: the shard quarantines img001, and `diffpir status` counts and names it;
    a file the ingest cannot read then counts as well."""
    folder, masks, out = tmp_path / "masked", tmp_path / "masks", tmp_path / "out"
    image_writer(folder, 3)
    masks.mkdir()
    for name in ("img000.png", "img002.png"):
        Image.fromarray(np.full((32, 32), 255, np.uint8)).save(masks / name)
    job = make_job(
        folder, out, mode="restore", metrics=None, task={"kind": "inpaint", "mask": str(masks), "noise_sigma": 0.02}
    )
    assert run(job=job, return_state=True).is_completed()

    runner = CliRunner()
    result = runner.invoke(app, ["status", str(out), "--json"])
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.output)["jobs"]
    assert entry["counts"] == {"done": 1, "failed": 0, "pending": 0, "quarantined": 1}
    (item,) = entry["quarantined"]
    assert (item["id"], item["stage"], item["shard"]) == ("img001.png", "restore", "32x32/000000")
    assert "img001" in item["reason"] and str(masks) in item["reason"], item["reason"]
    text = runner.invoke(app, ["status", str(out)])
    assert "1 done, 0 failed, 0 pending, 1 quarantined image(s)" in text.output, text.output
    assert f"quarantined img001.png (stage restore, shard 32x32/000000): {item['reason']}" in text.output

    (folder / "broken.png").write_bytes(b"not an image")
    assert run(job=job, return_state=True).is_completed()
    (entry,) = json.loads(runner.invoke(app, ["status", str(out), "--json"]).output)["jobs"]
    assert entry["counts"]["quarantined"] == 2
    assert [(q["id"], q["stage"]) for q in entry["quarantined"]] == [
        ("broken.png", "ingest"),
        ("img001.png", "restore"),
    ]


def test_a_job_whose_every_image_is_quarantined_fails(make_job, image_writer, tmp_path: Path) -> None:
    """Masks of the wrong size for every image: the run restores nothing and ends Failed, saying so (it used to
    complete, "1 shard(s) restored"); with one good mask the summary counts restored and quarantined images."""
    folder = tmp_path / "masked"
    image_writer(folder, 3)
    masks = tmp_path / "masks"
    masks.mkdir()
    for name in ("img000", "img001", "img002"):
        Image.fromarray(np.full((16, 16), 255, np.uint8)).save(masks / f"{name}.png")
    job = make_job(
        folder, tmp_path / "out", mode="restore", metrics=None, task={"kind": "inpaint", "mask": str(masks)}
    )
    state = run(job=job, return_state=True)
    assert state.is_failed() and state.message.startswith(
        "every image was quarantined, none restored: restored 0 image(s), quarantined 3"
    )
    assert "16x16" in state.message

    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(masks / "img001.png")
    job_file = tmp_path / "job.yaml"
    job_file.write_text(job.to_yaml())
    result = CliRunner().invoke(app, ["run", str(job_file)])
    assert result.exit_code == 0, result.output
    assert "note: task.mask: 2 of the 3 image(s) checked will be quarantined" in result.output
    assert "completed: restored 1 image(s), quarantined 2 (img000.png: mask" in result.output


def test_an_oversized_kernel_quarantines_its_image_not_its_shard(make_job, image_writer, tmp_path: Path) -> None:
    """A 65x65 kernel for a 32x32 image (restore mode, kernel folder): that image is quarantined with its id, file and
    reason, the other image of the shard is restored, and a re-run completes (the shard failed for good, its message
    naming neither the image nor the file)."""
    folder, kernels = tmp_path / "blurred", tmp_path / "kernels"
    image_writer(folder, 2)
    kernels.mkdir()
    np.save(kernels / "img000.npy", np.ones((65, 65)))
    np.save(kernels / "img001.npy", _gaussian(5, 0.8))
    job = make_job(
        folder, tmp_path / "out", mode="restore", metrics=None, task={"kind": "deblur", "kernel": str(kernels)}
    )
    state = run(job=job, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["images_restored"] == 1 and list(summary["quarantined"]) == ["img000.png"]
    assert summary["quarantined"]["img000.png"] == (
        f"kernel {kernels}/img000.npy is 65x65, larger than its 32x32 image; give a kernel of at most 32x32 pixels "
        "(crop its zero border)"
    )
    plan = read_plans(str(tmp_path / "out"), {})[0]
    store = DatasetStore.open(plan.output_store)
    restored = store.read_array(store.shards()[0], plan.restored_array)
    assert not restored[0].any() and restored[1].std() > 0
    again = run(job=job, return_state=True)
    assert again.is_completed() and again.result()["skipped"] == 1


def test_an_all_black_mask_is_quarantined_and_a_failed_metrics_phase_keeps_the_quarantine(
    make_job, image_writer, tmp_path: Path
) -> None:
    """An all-black mask (no known pixel) quarantines its image with the reason; the shard's metrics run (the
    biharmonic baseline raised numpy's "zero-size array to reduction operation minimum" and failed the job for
    good). A shard whose metrics phase fails after restoring still lists its quarantined images in the report."""
    folder, masks, out = tmp_path / "masked", tmp_path / "masks", tmp_path / "out"
    image_writer(folder, 3)
    masks.mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(masks / "img000.png")
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(masks / "img001.png")  # img002 has no mask
    job = make_job(folder, out, mode="restore", metrics=["consistency"], task={"kind": "inpaint", "mask": str(masks)})
    state = run(job=job, return_state=True)
    assert state.is_completed(), state.message
    quarantined = state.result()["quarantined"]
    assert sorted(quarantined) == ["img000.png", "img002.png"]
    assert quarantined["img000.png"].startswith(f"mask {masks}/img000.png has no known pixel (all black")
    plan = read_plans(str(out), {})[0]
    report = json.loads(Path(plan.job_dir, "summary.json").read_text())
    assert report["failed"] == [] and report["metrics"]["measurement_rms"]["count"] == 1

    (ref,) = DatasetStore.open(plan.input_store).shards()
    write_job_report(job, plan, [], [], {ref.key: "metrics: ValueError (permanent): boom"}, 1.0)
    kept = json.loads(Path(plan.job_dir, "summary.json").read_text())["quarantined"]
    assert sorted(q["id"] for q in kept) == ["img000.png", "img002.png"]
