"""``diffpir run`` of a small local job in a subprocess, with its own temporary Prefect server: exit 0 and no
traceback anywhere in its output, the server's shutdown included (a server stopped while it still records task runs
can log tracebacks), and with ``PREFECT_API_URL`` set but empty (Prefect's events client then fails on every event)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image


@pytest.mark.timeout(1200)
def test_a_successful_run_prints_no_traceback(tmp_path: Path):
    rng = np.random.default_rng(0)
    images = tmp_path / "in"
    images.mkdir()
    for i in range(
        24
    ):  # 24 one-image shards: enough task-run events that the server is still recording them at the end
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(images / f"im{i:02d}.png")
    job = {
        "input": str(images),
        "output": str(tmp_path / "out"),
        "task": {"kind": "sr", "scale": 4, "noise_sigma": 0.05},
        "prior": "demo",
        "shard_size": 1,
        "batch_size": 1,
        "device": "cpu",
        "sampler": {"iter_num": 1},
        "threads": 1,
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    env = dict(
        os.environ, PREFECT_API_URL=""
    )  # exported but empty, as shell profiles leave it: no server, one of its own
    env |= {
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
    }
    diffpir = Path(sys.executable).with_name("diffpir")
    done = subprocess.run(
        [str(diffpir), "run", str(tmp_path / "job.yaml")], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "completed: restored 24 image(s), quarantined 0; 24 shard(s) run" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-6000:]
    assert "Error flushing" not in done.stderr
    assert "EventsWorker" not in done.stderr and "stopped service" not in done.stderr, done.stderr[-6000:]


_STALE_RUN = """
import sys, time
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.states import Running
from diffpir_flow.cli.server import start_temporary_server, stop_when_recorded

server = start_temporary_server()

@task
def one() -> int:
    return 1

@flow
def killed() -> None:
    pass

@flow
def mine() -> int:
    return one()

with get_client(sync_client=True) as client:  # what a killed process leaves: its flow run's task run Running forever
    stale = client.create_flow_run(killed, state=Running())
    client.create_task_run(one, flow_run_id=stale.id, dynamic_key="0", state=Running())
state = mine(return_state=True)
watched = [stale.id] if sys.argv[1] == "stale" else [state.state_details.flow_run_id]
started = time.monotonic()
stop_when_recorded(server, watched, timeout_s=float(sys.argv[2]))
print(f"waited {time.monotonic() - started:.2f}")
"""


def _waited(tmp_path: Path, watch: str, timeout_s: float) -> float:
    (tmp_path / "prefect").mkdir(parents=True)
    env = dict(os.environ, PREFECT_API_URL="", PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_UI_ENABLED="false")
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "300"
    done = subprocess.run(
        [sys.executable, "-c", _STALE_RUN, watch, str(timeout_s)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return float(done.stdout.split("waited ")[-1])


@pytest.mark.timeout(900)
def test_the_end_of_run_wait_ignores_task_runs_of_killed_processes(tmp_path: Path):
    """A task run left Running by an earlier, killed process in the same Prefect database does not hold up the end
    of this run (it held every later run for the whole 60 s bound); the run's own unfinished task runs still do,
    up to the bound."""
    assert _waited(tmp_path / "mine", "mine", 30.0) < 15.0
    assert _waited(tmp_path / "stale", "stale", 3.0) >= 3.0  # the stale run, watched, is waited for until the bound


@pytest.mark.timeout(900)
def test_a_failure_is_printed_once_and_log_lines_never_share_the_bar_line(tmp_path: Path):
    """A shard that fails for good (33x33 images are no multiple of the SR scale 2): its reason reaches the terminal
    once, in the run's last lines (it used to be printed four times), and every log line starts a line of its own."""
    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray(np.zeros((33, 33, 3), np.uint8)).save(images / "odd.png")
    job = {
        "input": str(images),
        "output": str(tmp_path / "out"),
        "task": {"kind": "sr", "scale": 2},
        "prior": "demo",
        "device": "cpu",
        "sampler": {"iter_num": 1},
        "threads": 1,
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    env = dict(os.environ, PREFECT_API_URL="", PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_UI_ENABLED="false")
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "300"
    diffpir = Path(sys.executable).with_name("diffpir")
    done = subprocess.run(
        [str(diffpir), "run", str(tmp_path / "job.yaml")], env=env, capture_output=True, text=True, timeout=900
    )
    printed = done.stdout + done.stderr
    assert done.returncode == 1, printed[-3000:]
    assert printed.count("not a multiple of the SR scale 2") == 1, printed[-6000:]
    assert "failed: 1 shard(s) failed:\n  shard 33x33/000000: ValueError (permanent)" in done.stderr
    for line in printed.replace("\r", "\n").splitlines():
        assert "| INFO " not in line or line[:2].isdigit(), line  # a log line never follows the bar on its line
