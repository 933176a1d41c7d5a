"""The deployments/README.md walkthrough, for real on 127.0.0.1: `prefect server start`, a process work
pool, `prefect deploy` from prefect.yaml, a worker, a run that fails (its prior is missing) and the UI's
Retry (`prefect flow-run retry`) that completes it once the prior is there."""

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from diffpir_core.runs.job import parse_job

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def _background(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as out:
        process = subprocess.Popen(
            args, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield process
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _wait_healthy(url: str, server: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"prefect server exited: {log.read_text()[-2000:]}"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.read().strip() == b"true":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"prefect server not healthy after {timeout} s: {log.read_text()[-2000:]}")


@pytest.mark.slow
def test_deployment_walkthrough(make_job, images_8: Path, tiny_prior: Path, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "OMP_NUM_THREADS": "1",
    }
    host, port = url.removeprefix("http://").removesuffix("/api").split(":")
    server_cmd = [PREFECT, "server", "start", "--host", host, "--port", port]
    with _background(server_cmd, env, tmp_path / "server.log") as server:
        _wait_healthy(url, server, tmp_path / "server.log")
        for step in (
            [PREFECT, "work-pool", "create", "diffpir-process", "--type", "process"],
            [PREFECT, "--no-prompt", "deploy", "-n", "local"],
        ):
            done = subprocess.run(step, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stdout + done.stderr
        assert "run/local" in done.stdout

        worker_cmd = [PREFECT, "worker", "start", "--pool", "diffpir-process", "--limit", "1"]
        with _background(worker_cmd, env, tmp_path / "worker.log"), temporary_settings({PREFECT_API_URL: url}):
            # First run: the prior file is not there yet, so the run fails; then the UI's Retry completes it.
            prior = tmp_path / "later" / tiny_prior.name
            job = make_job(images_8, tmp_path / "deployed", name="deployed", prior=str(prior))
            run = run_deployment("run/local", parameters={"job": job.public_dict()}, timeout=240, poll_interval=1)
            assert run.state.is_failed() and "does not exist" in run.state.message, run.state
            assert run.name == "sr2-deployed-evaluate"
            prior.parent.mkdir()
            shutil.copy(tiny_prior, prior)
            retry = subprocess.run(
                [PREFECT, "flow-run", "retry", str(run.id)], env=env, capture_output=True, text=True
            )
            assert retry.returncode == 0, retry.stdout + retry.stderr
            with get_client(sync_client=True) as client:
                deadline = time.monotonic() + 240
                while not (state := client.read_flow_run(run.id).state).is_final():
                    assert time.monotonic() < deadline, state
                    time.sleep(1)
        assert state.is_completed(), f"{state}: {(tmp_path / 'worker.log').read_text()[-3000:]}"
    (summary_file,) = (tmp_path / "deployed").glob("jobs/*/summary.json")
    summary = json.loads(summary_file.read_text())
    assert summary["images"] == 8 and summary["metrics"]["psnr"]["count"] == 8


def test_kubernetes_template_requests_gpus_and_declares_every_placeholder() -> None:
    template = json.loads((REPO / "deployments" / "kubernetes" / "gpu-job-template.json").read_text())
    text = json.dumps(template["job_configuration"])
    placeholders = set(re.findall(r"\{\{ *([a-z_]+) *\}\}", text))
    assert placeholders <= set(template["variables"]["properties"]), placeholders - set(
        template["variables"]["properties"]
    )
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"
    assert template["variables"]["properties"]["gpu_count"]["default"] == 1


def test_prefect_yaml_deploys_the_flows_of_this_repository() -> None:
    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in config["deployments"]}
    assert set(deployments) == {"local", "score", "gpu"}
    for deployment in deployments.values():
        module, name = deployment["entrypoint"].split(
            ":"
        )  # a module path: Dask pickles the flow's objects by module name
        assert f"def {name}(" in Path(importlib.util.find_spec(module).origin).read_text()
        parse_job(deployment["parameters"]["job"])
    assert deployments["local"]["schedules"][0]["cron"] == "0 2 * * *"
    compose = yaml.safe_load((REPO / "deployments" / "dask" / "docker-compose.yaml").read_text())
    assert "GPU=1" in compose["services"]["gpu-workers"]["command"]
