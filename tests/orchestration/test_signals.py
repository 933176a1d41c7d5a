"""SIGTERM and SIGKILL of ``diffpir run`` on Prefect's temporary server: no server outlives the CLI.

The CLI runs here as Kubernetes or systemd would run it: no ``PREFECT_API_URL``, so it starts its own temporary
server (a child process). SIGTERM takes Ctrl-C's path at once (one line, exit 143, the flow run, its sub-flow run and
its unfinished task runs marked Cancelled, none Crashed, the server stopped; a unit whose events the server had not
recorded yet may stay Running there); after SIGKILL the kernel kills the
server with its parent. Either way no server process is left 10 s later, and a re-run restores what was not done.
"""

import os
import signal
import sqlite3
import time
from pathlib import Path

import psutil
import pytest


def _servers(pid: int) -> list[psutil.Process]:
    """The temporary Prefect servers started by process ``pid``."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if "prefect.server.api.server:create_app" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def _records(output: Path) -> list[Path]:
    return list(output.glob("jobs/*/restored.zarr/records/*/restored/*/*.json"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_no_prefect_server_outlives_a_signalled_run(
    signum: int, make_job, image_writer, tmp_path: Path, spawn_cli_run
) -> None:
    images = tmp_path / "images"
    image_writer(images, 12, seed=5)
    output = tmp_path / "out"
    job_file = tmp_path / "job.yaml"
    job_file.write_text(make_job(images, output, shard_size=2, batch_size=2, sampler={"iter_num": 8}).to_yaml())
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),  # a temporary server of its own, as on a fresh machine
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW="ignore",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="90",  # the default 20 s is short on 2 loaded cores
        OMP_NUM_THREADS="1",
    )
    child = spawn_cli_run(job_file, env)
    try:
        deadline = time.monotonic() + 120
        servers: list[psutil.Process] = []
        while not (servers and _records(output)):
            assert child.poll() is None, f"the job ended before the signal: {child.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no server and finished shard in time"
            servers = servers or _servers(child.pid)
            time.sleep(0.1)
        child.send_signal(signum)
        signalled = time.monotonic()
        child.wait(timeout=30)
        exited_after = time.monotonic() - signalled
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    stderr = child.stderr.read().decode()
    if signum == signal.SIGTERM:
        assert child.returncode == 143, stderr[-3000:]
        assert "cancelled by SIGTERM" in stderr.strip().splitlines()[-1]
        assert "Traceback" not in stderr
        with sqlite3.connect(tmp_path / "prefect-home" / "prefect.db") as db:
            states = dict(
                db.execute("SELECT f.name, r.state_type FROM flow_run r JOIN flow f ON f.id = r.flow_id").fetchall()
            )
            tasks = {state for (state,) in db.execute("SELECT state_type FROM task_run")}
        assert states == {"run": "CANCELLED", "run-shards": "CANCELLED"}, states
        assert "CRASHED" not in tasks, tasks  # no unit was waited for until it crashed
        assert exited_after < 8, f"exited {exited_after:.1f} s after SIGTERM"  # no unit was waited for
    else:
        assert child.returncode == -signal.SIGKILL
    _, alive = psutil.wait_procs(servers, timeout=10)
    assert not alive, f"temporary Prefect server(s) still running 10 s after {signal.Signals(signum).name}: {alive}"
