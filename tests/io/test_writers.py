"""One writer per shard, for real: concurrent writer processes on a Dask LocalCluster, and a writer killed
mid-shard."""

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from distributed import Client, LocalCluster

from diffpir_core.io import DatasetStore, ShardRef, ingest

IDENTITY = {"job": "writers", "code": "test"}
REPO_ROOT = Path(__file__).resolve().parents[2]  # writer processes import this checkout's diffpir_core


def _expected_output(ref: ShardRef, shape: tuple[int, ...]) -> np.ndarray:
    """Distinct, incompressible content per shard, reproducible anywhere from the shard's rows."""
    return np.random.default_rng(ref.start * 7919 + len(ref.group)).integers(
        0, 256, (ref.size, *shape), dtype=np.uint8
    )


@pytest.fixture
def many_shards(tmp_path, encode_image) -> str:
    rng = np.random.default_rng(1)
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(24):
        (root / f"{i:03d}.png").write_bytes(encode_image(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)))
    return str(root)


# Without a dashboard the scheduler still serves its health routes on 127.0.0.1:8787, or on a free port (with this
# warning) when another local cluster holds 8787.
@pytest.mark.filterwarnings("ignore:Port 8787 is already in use")
def test_shards_written_concurrently_by_dask_worker_processes(many_shards, s3_bucket, s3_options):
    uri = f"{s3_bucket}/s.zarr"
    ingest(many_shards, uri, shard_size=4, store_storage_options=s3_options)
    DatasetStore.open(uri, s3_options, writable=True).create_array("32x32", "restored", (32, 32, 3), "uint8")
    refs = DatasetStore.open(uri, s3_options).shards()
    assert len(refs) == 6

    def write_one(ref: ShardRef) -> int:
        import os

        from diffpir_core.io import DatasetStore

        store = DatasetStore.open(uri, s3_options, writable=True)
        checksum = store.write_shard_output(ref, "restored", _expected_output(ref, (32, 32, 3)))
        store.write_record(ref, "restored", checksum=checksum, identity=IDENTITY)
        return os.getpid()

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=2, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        pids = client.gather(client.map(write_one, refs, pure=False))
    assert len(set(pids)) == 2  # two worker processes really wrote, two shards at a time each

    store = DatasetStore.open(uri, s3_options)
    for ref in store.shards():
        np.testing.assert_array_equal(store.read_array(ref, "restored"), _expected_output(ref, (32, 32, 3)))
        assert store.record_matches(ref, "restored", IDENTITY)


WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from diffpir_core.io import DatasetStore

    store = DatasetStore.open(sys.argv[1], writable=True)
    pause_after = int(sys.argv[2])
    for ref in store.shards():
        data = np.random.default_rng(ref.index).integers(0, 256, (ref.size, 256, 256, 3), dtype=np.uint8)
        print("writing", ref.index, flush=True)
        checksum = store.write_shard_output(ref, "restored", data)
        if ref.index == pause_after:
            print("written", ref.index, flush=True)
            time.sleep(60)
        store.write_record(ref, "restored", checksum=checksum, identity={"job": "kill"})
    print("done", flush=True)
    """
)


def _run_writer_until(uri: str, line: str, pause_after: int = -1) -> None:
    """Start a writer process and SIGKILL it as soon as it prints ``line``."""
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, uri, str(pause_after)], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT
    )
    try:
        for output in writer.stdout:
            if output.strip() == line:
                writer.send_signal(signal.SIGKILL)
                break
        assert writer.wait(timeout=60) == -signal.SIGKILL
    finally:
        writer.kill()
        writer.stdout.close()


def test_killed_writer_leaves_no_record_for_unfinished_shards(tmp_path, encode_image):
    rng = np.random.default_rng(2)
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(8):
        (root / f"{i}.png").write_bytes(encode_image(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)))
    uri = str(tmp_path / "s.zarr")
    ingest(str(root), uri, shard_size=2)
    DatasetStore.open(uri, writable=True).create_array("256x256", "restored", (256, 256, 3), "uint8")
    store = DatasetStore.open(uri)
    refs = store.shards()

    _run_writer_until(uri, "writing 2")  # killed while shard 2 is being written (or, on a slow box, just after)
    assert [store.record_matches(ref, "restored", {"job": "kill"}) for ref in refs[:2]] == [True, True]
    for ref in refs[2:]:  # whatever the exact moment of the kill: no record, or a record of complete data
        assert store.read_record(ref, "restored") is None or store.read_verified(ref, "restored")
    assert store.read_record(refs[3], "restored") is None

    _run_writer_until(uri, "written 1", pause_after=1)  # data complete, killed before its record
    assert store.read_record(refs[1], "restored") is None  # the rewrite removed the old record first
    assert store.record_matches(refs[0], "restored", {"job": "kill"})

    subprocess.run(
        [sys.executable, "-c", WRITER, uri, "-1"], check=True, capture_output=True, timeout=120, cwd=REPO_ROOT
    )
    for ref in refs:  # rewriting every shard again is harmless
        assert store.record_matches(ref, "restored", {"job": "kill"})
        expected = np.random.default_rng(ref.index).integers(0, 256, (ref.size, 256, 256, 3), dtype=np.uint8)
        np.testing.assert_array_equal(store.read_array(ref, "restored"), expected)
