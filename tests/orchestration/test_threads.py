"""The ``threads`` job field: validated, left out of the job hash, fixed once per job (recorded in ``run.json``, used
again by a resumed run, and the count each shard ran with in its record), applied in the flow process, in the pool
thread that runs the prior, and in real Dask workers (with glibc's malloc thresholds back to their dynamic values)."""

import ctypes
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from distributed import Client, LocalCluster

from diffpir_core.io import DatasetStore
from diffpir_core.runs import priors
from diffpir_core.runs.job import JobError, parse_job
from diffpir_core.runs.plan import read_plans
from diffpir_core.runs.threads import apply_threads, default_threads, machine_cores, planned_threads, split_cores
from diffpir_flow.flows.run import run
from diffpir_flow.flows.runners import build_task_runner

CLUSTER = {"n_workers": 2, "threads_per_worker": 1, "processes": True, "dashboard_address": None, "host": "127.0.0.1"}


@pytest.fixture(autouse=True)
def _one_thread_after(monkeypatch: pytest.MonkeyPatch):
    """Each test starts without a process setting and leaves the session's one thread behind."""
    monkeypatch.setattr(priors, "_THREADS", None)
    monkeypatch.setattr(priors, "_SLOTS", None)
    yield
    torch.set_num_threads(1)


@pytest.mark.parametrize("bad", [0, -1, 2000, "two", True, 2.5])
def test_bad_threads_are_rejected_naming_the_field_and_the_allowed_values(bad):
    with pytest.raises(
        JobError, match=r"threads: must be a whole number of threads from 1 to 1024, or null for the default"
    ):
        parse_job({"input": "in", "output": "out", "threads": bad})


def test_threads_do_not_change_the_job_hash(make_job, images_8: Path):
    assert (
        make_job(images_8, threads=1).job_hash()
        == make_job(images_8, threads=2).job_hash()
        == make_job(images_8).job_hash()
    )


def test_default_is_omp_num_threads_else_the_free_cores_split_over_concurrent_tasks():
    assert default_threads(4, {"OMP_NUM_THREADS": "3"}) == 3
    assert split_cores(2, cores=8) == 4
    assert split_cores(3, cores=2) == 1
    assert split_cores(1, cores=1.7) == 2
    assert split_cores(1, cores=0.1) == 1  # a fully loaded machine still gets one thread
    assert 1 <= default_threads(1, {"OMP_NUM_THREADS": "zero"}) <= machine_cores()


def test_a_job_keeps_the_threads_of_its_first_run_unless_it_sets_them():
    assert planned_threads(None, None, 2, {"OMP_NUM_THREADS": "3"}) == 3  # first run: the default
    assert planned_threads(None, 3, 2, {"OMP_NUM_THREADS": "1"}) == 3  # later runs: the recorded count
    assert planned_threads(2, 3, 2, {}) == 2  # the job's own setting wins
    assert planned_threads(None, None, None, {}) is None  # Dask: each worker host chooses
    assert planned_threads(None, None, None, {"OMP_NUM_THREADS": "2"}) == 2
    assert 1 <= planned_threads(None, None, 1, {}) <= machine_cores()


def test_a_resumed_job_restores_with_the_threads_its_first_run_recorded(
    make_job, images_8: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    job = make_job(images_8, tmp_path / "out")  # threads: null
    assert run(job=job, return_state=True).is_completed()
    (plan,) = read_plans(str(tmp_path / "out"), {})
    assert plan.threads == 1 and json.loads((Path(plan.job_dir) / "run.json").read_text())["threads"] == 1
    out = DatasetStore.open(plan.output_store, writable=True)
    refs = out.shards()
    assert [out.read_record(ref, "restored").metrics["threads"] for ref in refs] == [1, 1]
    uninterrupted = out.read_array(refs[1], "restored")
    out.delete_record(refs[1], "restored")  # as if the run had been killed before the last shard's record

    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the default would now be another count
    assert run(job=job, return_state=True).result()["restored"] == 1
    (plan,) = read_plans(str(tmp_path / "out"), {})
    assert plan.threads == 1 and out.read_record(refs[1], "restored").metrics["threads"] == 1
    np.testing.assert_array_equal(out.read_array(refs[1], "restored"), uninterrupted)


def test_configure_process_sets_the_threads_and_model_slots(make_job, images_8: Path, monkeypatch: pytest.MonkeyPatch):
    build_task_runner(make_job(images_8, threads=2))  # builds the runner only: no process setting
    assert priors.shard_threads() is None
    assert priors.configure_process(make_job(images_8, threads=2)) == 2
    assert (priors.shard_threads(), torch.get_num_threads()) == (2, 2)
    assert priors.configure_process(make_job(images_8, threads=2), threads=1) == 1  # the plan's count wins
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    priors.configure_process(make_job(images_8, runner={"kind": "local", "max_workers": 2}))
    assert (priors.shard_threads(), torch.get_num_threads()) == (1, 1)
    with priors.model_slot(), priors.model_slot():  # two slots: a third would wait
        assert not priors._SLOTS.acquire(blocking=False)
    priors.configure_process(make_job(images_8, runner={"kind": "dask"}))
    with priors.model_slot(), priors.model_slot(), priors.model_slot():  # Dask: a worker's threads are its slots
        assert priors._SLOTS is None


def test_a_pool_thread_gets_the_process_threads_when_it_asks_for_the_prior(tiny_prior: Path, make_job, images_8: Path):
    def at(threads: int) -> int:
        apply_threads(threads)
        torch.ones(256, 256) @ torch.ones(256, 256)
        return torch.get_num_threads()

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(at, 2).result() == 2
        priors.configure_process(make_job(images_8), 1)
        assert pool.submit(torch.get_num_threads).result() == 2  # OpenMP: the pool thread kept its own count
        sha = priors.prior_sha256(str(tiny_prior))
        assert (
            pool.submit(lambda: (priors.get_prior(str(tiny_prior), sha, "cpu"), torch.get_num_threads())[1]).result()
            == 1
        )


def _mmapped_blocks_for_a_1mib_tensor() -> int:
    """How many new mmap-ed malloc blocks one 1 MiB tensor takes (glibc's mallinfo2): 1 with a 128 KiB threshold."""

    class Mallinfo2(ctypes.Structure):
        names = (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
        _fields_ = [(n, ctypes.c_size_t) for n in names]

    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = Mallinfo2
    before = mallinfo2().hblks
    tensor = torch.empty(1 << 18)  # 1 MiB of float32
    blocks = mallinfo2().hblks - before
    del tensor
    return blocks


def _has_mallinfo2() -> bool:
    return sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "mallinfo2")


def test_dask_workers_get_the_threads_and_heap_allocation(make_job, images_8: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    runner = build_task_runner(make_job(images_8, runner={"kind": "dask", "cluster_kwargs": CLUSTER}))
    with runner:
        client = runner.client
        threads = client.run(priors.shard_threads)
        assert len(threads) == 2 and all(1 <= n <= max(1, machine_cores() // 2) for n in threads.values()), threads
        assert set(client.run(torch.get_num_threads).values()) == set(threads.values())
        if _has_mallinfo2():
            assert set(client.run(_mmapped_blocks_for_a_1mib_tensor).values()) == {0}
    assert "OMP_NUM_THREADS" not in os.environ  # the nannies' environment did not leak into this process
    explicit = build_task_runner(
        make_job(images_8, threads=2, runner={"kind": "dask", "cluster_kwargs": {**CLUSTER, "n_workers": 1}})
    )
    with explicit:
        assert set(explicit.client.run(priors.shard_threads).values()) == {2}


@pytest.mark.skipif(not _has_mallinfo2(), reason="needs glibc's mallinfo2")
def test_a_plain_dask_worker_mmaps_every_tensor_over_128_kib():
    """The cause of the slowdown the plugin fixes: the nanny's MALLOC_TRIM_THRESHOLD_ turns off glibc's dynamic mmap
    threshold."""
    with LocalCluster(**{**CLUSTER, "n_workers": 1}) as cluster, Client(cluster) as client:
        assert set(client.run(_mmapped_blocks_for_a_1mib_tensor).values()) == {1}
        assert set(client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")).values()) == {"65536"}
