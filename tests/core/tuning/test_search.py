"""The search of a tuning job without Prefect: the study rebuilt from trial records proposes the same next trial
every time (what resume relies on), the median pruner judges against the finished trials, the subset is stable."""

import pytest

from diffpir_core.runs.job import parse_job
from diffpir_core.tuning.search import TrialRecord, next_params, should_prune, trial_record
from diffpir_core.tuning.space import Subset

JOB = {
    "input": "/data/in",
    "output": "/data/out",
    "task": {"kind": "sr", "scale": 4, "noise_sigma": 0.05},
    "tune": {
        "params": {"lambda_": {"low": 0.5, "high": 30, "log": True}, "iter_num": {"choices": [10, 20]}},
        "trials": 8,
    },
}


def _record(number: int, lam: float, value: float, state: str = "complete") -> TrialRecord:
    return TrialRecord(
        number=number,
        params={"lambda_": lam, "iter_num": 10},
        state=state,
        value=value,
        intermediate={0: value},
        images=8,
        job_hash=f"{number:064d}",
        seconds=1.0,
    )


def test_the_next_trial_depends_only_on_the_finished_ones() -> None:
    job = parse_job(JOB)
    records = [_record(0, 1.0, 22.0), _record(1, 10.0, 24.0), _record(2, 3.0, 23.0)]
    first = next_params(job, records)
    assert next_params(job, records) == first  # a resumed run proposes the interrupted trial again
    assert next_params(job, records[:2]) != first
    assert 0.5 <= first["lambda_"] <= 30 and first["iter_num"] in (10, 20)
    other_seed = parse_job({**JOB, "tune": {**JOB["tune"], "seed": 1}})
    assert next_params(other_seed, records) != first


def test_median_pruning_judges_against_the_finished_trials() -> None:
    job = parse_job(JOB)
    records = [_record(0, 1.0, 22.0), _record(1, 10.0, 24.0), _record(2, 3.0, 23.0)]
    params = {"lambda_": 5.0, "iter_num": 20}
    assert should_prune(job, records, params, 0, 22.5)  # below the median (23) of the finished trials' first stage
    assert not should_prune(job, records, params, 0, 23.5)
    assert not should_prune(parse_job({**JOB, "tune": {**JOB["tune"], "prune": False}}), records, params, 0, 1.0)


def test_a_trial_record_holds_the_objective_of_its_stages() -> None:
    job = parse_job(JOB)
    first, rest = [{"psnr": 20.0}, {"psnr": 22.0}], [{"psnr": 24.0}, {"psnr": 26.0}]
    complete = trial_record(job, 0, {"lambda_": 2.0}, [first, rest], False, "h", 1.0)
    assert (complete.state, complete.value, complete.intermediate, complete.images) == ("complete", 23.0, {0: 21.0}, 4)
    pruned = trial_record(job, 1, {"lambda_": 2.0}, [first], True, "h", 1.0)
    assert (pruned.state, pruned.value, pruned.intermediate, pruned.images) == ("pruned", 21.0, {0: 21.0}, 2)
    failed = trial_record(job, 2, {"lambda_": 2.0}, [first, [{"psnr": None}]], False, "h", 1.0)
    assert (failed.state, failed.value) == ("failed", None)


def test_the_subset_is_picked_by_id_whatever_the_order() -> None:
    ids = [f"img{i:03d}.png" for i in range(40)]
    picked = Subset(count=8).pick(ids)
    assert picked == Subset(count=8).pick(list(reversed(ids))) and len(set(picked)) == 8
    assert Subset(count=9).pick(ids)[:8] != ids[:8]
    with pytest.raises(ValueError, match=r"tune.subset.ids: 1 id\(s\) not in the input: \['nope.png'\]"):
        Subset(ids=["img000.png", "nope.png"]).pick(ids)
    with pytest.raises(ValueError, match="tune.subset.count: 50 images asked for, the input has 40"):
        Subset(count=50).pick(ids)


def test_the_first_trial_runs_the_jobs_own_values_when_they_lie_in_the_space() -> None:
    on_card = {**JOB, "tune": {"params": {"lambda_": {"low": 0.5, "high": 30}, "zeta": {"low": 0.1, "high": 1.0}}}}
    assert next_params(parse_job(on_card), []) == {"lambda_": 2.0, "zeta": 1.0}  # the demo card's SR values
    outside = {**on_card, "sampler": {"zeta": 0.05}}
    assert next_params(parse_job(outside), [])["zeta"] != 0.05
