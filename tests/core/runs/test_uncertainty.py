"""Posterior samples in the run layer, without Prefect: sample 0 is the plain restoration, samples are batch-invariant,
each is its own array with records (a re-run skips them, a larger K computes only the missing ones), the estimate and
std follow from the stored samples, evaluate mode fits and measures a calibration, restore mode takes one or says
"uncalibrated", and bad options are refused before any work."""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from diffpir_core.io import DatasetStore
from diffpir_core.runs.batches import image_seed, sample_seed
from diffpir_core.runs.done import STD_ARRAY, sample_array, sample_identity
from diffpir_core.runs.job import JobError
from diffpir_core.runs.measurements import measurement_inputs
from diffpir_core.runs.plan import JobPlan
from diffpir_core.runs.preflight import cost_lines, preflight
from diffpir_core.runs.prepare import ingest_input, plan_job
from diffpir_core.runs.uncertainty import coverage, coverage_sentence
from diffpir_core.runs.unit import run_unit
from diffpir_core.runs.verify import verify_output


def _run(job: Any) -> tuple[JobPlan, dict[str, dict[str, Any]]]:
    """Ingest, plan and restore every shard of ``job`` in this process; (plan, manifests by shard)."""
    plan = plan_job(job, ingest_input(job)["store"])
    return plan, run_unit(job, plan, DatasetStore.open(plan.output_store).shards())["manifests"]


def _array(plan: JobPlan, name: str) -> dict[str, np.ndarray]:
    """Every image of array ``name`` of a job's store, by id."""
    store = DatasetStore.open(plan.output_store)
    return {i: image for ref in store.shards() for i, image in zip(ref.ids, store.read_array(ref, name), strict=True)}


@pytest.fixture
def images(image_writer, tmp_path: Path) -> Path:
    image_writer(tmp_path / "img", 6)
    return tmp_path / "img"


def test_sample_zero_is_the_plain_restoration_and_the_others_differ(make_job, images: Path, tmp_path: Path) -> None:
    plain, _ = _run(make_job(images, tmp_path / "plain"))
    sampled, _ = _run(make_job(images, tmp_path / "k3", uncertainty={"samples": 3}))
    restored, samples = _array(plain, "restored"), [_array(sampled, sample_array(k)) for k in range(3)]
    for image_id, image in restored.items():
        assert sample_seed(0, image_id, 0) == image_seed(0, image_id)  # the seed plain jobs have always had
        np.testing.assert_array_equal(samples[0][image_id], image)  # bit for bit
        assert not np.array_equal(samples[1][image_id], image)
        assert not np.array_equal(samples[2][image_id], samples[1][image_id])


def test_samples_do_not_depend_on_the_batch_or_the_shard_grid(make_job, images: Path, tmp_path: Path) -> None:
    a, _ = _run(make_job(images, tmp_path / "a", uncertainty={"samples": 3}, shard_size=4, batch_size=2))
    b, _ = _run(make_job(images, tmp_path / "b", uncertainty={"samples": 3}, shard_size=3, batch_size=1))
    for k in range(3):
        first, second = _array(a, sample_array(k)), _array(b, sample_array(k))
        for image_id in first:
            np.testing.assert_array_equal(first[image_id], second[image_id])


def test_estimate_and_std_follow_from_the_stored_samples(make_job, images: Path, tmp_path: Path) -> None:
    plan, _ = _run(make_job(images, tmp_path / "mean", uncertainty={"samples": 3}))
    samples = np.stack([np.stack(list(_array(plan, sample_array(k)).values())) for k in range(3)]) / 255.0
    restored, std = np.stack(list(_array(plan, "restored").values())), np.stack(list(_array(plan, STD_ARRAY).values()))
    np.testing.assert_array_equal(restored, np.rint(samples.mean(axis=0) * 255).astype(np.uint8))
    assert std.dtype == np.float16
    np.testing.assert_array_equal(std, samples.std(axis=0, ddof=1).astype(np.float16))  # unbiased
    first, _ = _run(make_job(images, tmp_path / "first", uncertainty={"samples": 3, "estimate": "first"}))
    for image_id, image in _array(first, "restored").items():
        np.testing.assert_array_equal(image, _array(first, sample_array(0))[image_id])


def test_a_larger_k_computes_only_the_missing_samples_and_a_rerun_nothing(
    make_job, images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    plan, manifests = _run(make_job(images, out, uncertainty={"samples": 2}))
    assert {key: m["samples"] for key, m in manifests.items()} == {
        key: {"computed": [0, 1], "reused": []} for key in manifests
    }
    store = DatasetStore.open(plan.output_store)
    refs = store.shards()
    identity = store.read_record(refs[0], plan.restored_array).identity
    kept = {k: store.read_record(refs[0], sample_array(k), sample_identity(identity, k)) for k in (0, 1)}

    larger, manifests = _run(make_job(images, out, uncertainty={"samples": 4}))
    assert larger.job_dir == plan.job_dir  # the same job folder: K names the records, not the job
    assert {key: m["samples"] for key, m in manifests.items()} == {
        key: {"computed": [2, 3], "reused": [0, 1]} for key in manifests
    }
    for k, record in kept.items():  # samples 0 and 1 were not written again
        assert store.read_record(refs[0], sample_array(k), sample_identity(identity, k)) == record
    fresh, _ = _run(make_job(images, tmp_path / "fresh", uncertainty={"samples": 4}))
    for name in ("restored", STD_ARRAY):
        grown, direct = _array(larger, name), _array(fresh, name)
        for image_id in grown:
            np.testing.assert_array_equal(grown[image_id], direct[image_id])

    _, again = _run(make_job(images, out, uncertainty={"samples": 4}))
    assert {m["status"] for m in again.values()} == {"skipped"}


def test_known_pixels_of_noiseless_inpainting_vary_far_less_than_the_hole(
    make_job, images: Path, tmp_path: Path
) -> None:
    """Not zero: DiffPIR's last step returns the network's x0 without a data step, and the data term's σ is floored
    at 0.001, so known pixels move by a few levels between samples; the hole varies by far more."""
    job = make_job(images, tmp_path / "out", task={"kind": "inpaint", "noise_sigma": 0.0}, uncertainty={"samples": 3})
    plan, _ = _run(job)
    source, out = DatasetStore.open(plan.input_store), DatasetStore.open(plan.output_store)
    ref = out.shards()[0]
    mask = measurement_inputs(job, plan, source, out, ref).params["mask"].numpy().transpose(0, 2, 3, 1)
    std = out.read_array(ref, STD_ARRAY).astype(np.float32)
    known = np.broadcast_to(mask > 0.5, std.shape)
    assert 0 < std[known].max() < std[~known].mean() / 10


def _evaluate(make_job, images: Path, out: Path, **uncertainty: Any) -> tuple[Any, JobPlan]:
    job = make_job(images, out, uncertainty={"samples": 2, **uncertainty})
    return job, _run(job)[0]


def test_evaluate_mode_fits_on_the_calibration_split_and_measures_the_rest(
    make_job, image_writer, tmp_path: Path
) -> None:
    image_writer(tmp_path / "img", 12)
    job, plan = _evaluate(make_job, tmp_path / "img", tmp_path / "out", calibration_fraction=0.5, delta=0.25)
    refs = DatasetStore.open(plan.output_store).shards()
    entry = coverage(job, plan, refs)
    assert entry["calibrated"] and entry["n_calibration"] + entry["n_test"] == 12
    assert entry["n_calibration"] >= 3  # delta 0.25 needs 3
    assert 0 <= entry["image_coverage"] <= 1 and entry["target"]["image_coverage"] == 0.75
    assert entry["covered_images"] == round(entry["image_coverage"] * entry["n_test"])
    saved = json.loads(Path(entry["calibration_file"]).read_text())
    assert saved["scale"] == entry["scale"] > 0 and saved["samples"] == 2 and saved["task"]["kind"] == "sr"
    assert coverage_sentence(entry).startswith(
        f"Calibrated intervals covered ≥ 90% of the pixels on {entry['covered_images']} of {entry['n_test']}"
    )
    few, few_plan = _evaluate(make_job, tmp_path / "img", tmp_path / "few", calibration_fraction=0.25)
    short = coverage(few, few_plan, refs)
    assert not short["calibrated"] and short["needed"] == 9 and "too few calibration images" in short["problem"]
    assert "9" in coverage_sentence(short)


def test_restore_mode_takes_a_matching_calibration_and_refuses_another(make_job, image_writer, tmp_path: Path) -> None:
    image_writer(tmp_path / "img", 12)
    job, plan = _evaluate(make_job, tmp_path / "img", tmp_path / "eval", calibration_fraction=0.5, delta=0.25)
    fitted = coverage(job, plan, DatasetStore.open(plan.output_store).shards())["calibration_file"]
    circular = {"kind": "sr", "scale": 2, "noise_sigma": 0.05, "boundary": "circular"}  # the evaluate job's data step
    restore = {"mode": "restore", "metrics": ["consistency"], "task": circular}
    ok = make_job(tmp_path / "img", tmp_path / "r", **restore, uncertainty={"samples": 2, "calibration": fitted})
    assert not [p for p in preflight(ok)[0] if p.startswith("uncertainty")]
    reflect = make_job(
        tmp_path / "img",
        tmp_path / "r1",
        **{**restore, "task": {**circular, "boundary": "reflect"}},
        uncertainty={"samples": 2, "calibration": fitted},
    )
    (problem,) = [p for p in preflight(reflect)[0] if p.startswith("uncertainty")]
    assert 'task.boundary: calibrated the default (not set), job "reflect"' in problem
    other = make_job(
        tmp_path / "img",
        tmp_path / "r2",
        **restore,
        sampler={"iter_num": 4},
        uncertainty={"samples": 3, "calibration": fitted},
    )
    (problem,) = [p for p in preflight(other)[0] if p.startswith("uncertainty")]
    assert "sampler.iter_num: calibrated 3, job 4" in problem and "samples: calibrated 2, job 3" in problem
    with pytest.raises(ValueError, match="fitted for another job"):
        plan_job(other, ingest_input(other)["store"])  # before any work, whatever the caller checked


def test_restore_mode_without_a_calibration_is_labelled_uncalibrated(make_job, images: Path, tmp_path: Path) -> None:
    job = make_job(images, tmp_path / "r", mode="restore", metrics=["consistency"], uncertainty={"samples": 2})
    plan, _ = _run(job)
    entry = coverage(job, plan, DatasetStore.open(plan.output_store).shards())
    assert entry["calibrated"] is False and entry["label"] == "uncalibrated"
    assert "uncalibrated" in coverage_sentence(entry)


@pytest.mark.parametrize(
    ("uncertainty", "message"),
    [
        ({"samples": 1}, "uncertainty.samples: must be a whole number from 2 to 64"),
        ({"samples": 65}, "uncertainty.samples: must be a whole number from 2 to 64"),
        ({"samples": 2, "estimate": "median"}, "uncertainty.estimate: Input should be 'mean' or 'first'"),
        ({"samples": 2, "calibration": "c.json"}, "uncertainty.calibration: only restore mode"),
        ({"samples": 2, "alpha": 1.5}, "uncertainty.alpha: Input should be less than 1"),
    ],
)
def test_bad_uncertainty_options_are_refused_naming_the_field(
    make_job, images: Path, uncertainty: dict, message: str
) -> None:
    with pytest.raises(JobError) as err:
        make_job(images, uncertainty=uncertainty)
    assert message in str(err.value)


def test_the_cost_is_k_times_the_nfes(make_job, images: Path) -> None:
    (plain,) = cost_lines(make_job(images), [(32, 32)])
    (sampled,) = cost_lines(make_job(images, uncertainty={"samples": 4}), [(32, 32)])
    assert plain.startswith("cost: 3 network calls per image x")
    assert sampled.startswith("cost: 12 network calls per image (4 posterior samples x 3) x")


def test_a_damaged_sample_is_found_by_verify_and_only_it_is_restored_again(
    make_job, images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    plan, _ = _run(make_job(images, out, uncertainty={"samples": 2}))
    (shard_object,) = (Path(plan.output_store) / "groups" / "32x32" / "samples" / "1" / "c").glob("0/*/*/*")
    data = bytearray(shard_object.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard_object.write_bytes(bytes(data))
    found = verify_output(str(out))
    assert [(d["array"], d["shard"]) for d in found.damaged] == [("samples/1", "32x32/000000")]
    _, manifests = _run(make_job(images, out, uncertainty={"samples": 2}))
    assert manifests["32x32/000000"]["samples"] == {"computed": [1], "reused": [0]}
    assert manifests["32x32/000001"]["status"] == "skipped"
    assert verify_output(str(out)).damaged == []
