"""The temporary Prefect server of ``diffpir run``, tied to the CLI process, and SIGTERM handled like Ctrl-C.

With no ``PREFECT_API_URL``, Prefect 3.9 starts a temporary server as a child process
(``prefect.server.api.server.SubprocessASGIServer``, one per process, port ``None``) and stops it at exit
through ``atexit``. A SIGTERM (Kubernetes, systemd, ``timeout``) or SIGKILL of the CLI skips ``atexit``
and the server (≈ 230 MB) is left running. :func:`start_temporary_server` starts that same singleton
before any flow runs, so every Prefect client in the process reuses it, with its process asking the
kernel for SIGKILL when its parent dies (Linux ``PR_SET_PDEATHSIG``); elsewhere Prefect's own start is
used unchanged.

:func:`stop_when_recorded` stops it at the end of a run in the right order, watching only that run's task runs. The
server writes task-run states
from the events the client sends (its ``task_run_recorder`` service, one database commit per event); on a
loaded machine it lags behind the flow, and a SIGTERM while it commits cancels that commit: it logged
"Error flushing 1 events" with two tracebacks, twice, at the end of successful runs. So the client's event
and log queues are drained first, then the server is given time to record every task run, then stopped.
"""

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1
PORT_TRIES = 3


def _death_signal() -> Callable[[], None]:
    """A ``preexec_fn`` for the forked child: the kernel sends it SIGKILL when this process dies (and it exits
    at once should this process already be gone)."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # loaded here, not in the child
    parent = os.getpid()

    def in_child() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return in_child


def _watched_uvicorn(server: Any) -> subprocess.Popen[Any]:
    """Prefect's ``_run_uvicorn_command``, with the child killed by the kernel when this process dies."""
    real_popen = subprocess.Popen
    preexec = _death_signal()

    def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
        return real_popen(*args, preexec_fn=preexec, **kwargs)

    import prefect.server.api.server as server_module

    # The module's own ``subprocess`` name, for this one call: the arguments stay exactly Prefect's.
    shim = types.SimpleNamespace(
        **{name: getattr(subprocess, name) for name in dir(subprocess) if not name.startswith("__")}
    )
    shim.Popen = popen
    saved = server_module.subprocess
    server_module.subprocess = shim  # type: ignore[assignment]
    try:
        return type(server)._run_uvicorn_command(server)
    finally:
        server_module.subprocess = saved


def start_temporary_server() -> Any | None:
    """Start Prefect's temporary server now, watched by the kernel; None when a server is configured
    (``PREFECT_API_URL``) or ephemeral mode is off (then Prefect decides, as without this call).

    Prefect picks a random free port and then starts the server on it; two runs starting at once can pick the same
    one, and the server that loses the bind race exits while its client finds the winner's server healthy and uses
    it (one run's records in the other's database, lost when it stops). On Linux the socket listening on the port
    is checked to be our server's own (``/proc``), else it is stopped and another port tried."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_ALLOW_EPHEMERAL_MODE

    if PREFECT_API_URL.value() or not PREFECT_SERVER_ALLOW_EPHEMERAL_MODE.value():
        return None
    from prefect.server.api.server import SubprocessASGIServer

    linux = sys.platform.startswith("linux")
    taken: list[int] = []
    for _ in range(PORT_TRIES):
        server = SubprocessASGIServer()
        if server.running:
            return server
        if linux:
            server._run_uvicorn_command = lambda server=server: _watched_uvicorn(server)  # type: ignore[method-assign]
        try:
            server.start()
        except RuntimeError:  # Prefect found no free port after ours lost one: say why below
            if not taken:
                raise
            break
        if not linux or _listens_on(server.server_process.pid, server.port):
            return server
        taken.append(server.port)
        server.stop()  # another process's server answers on this port: ours lost the bind
    raise RuntimeError(
        f"the temporary Prefect server found another process's server on each port it chose ({taken}): other runs "
        "are starting at the same moment; run again, or share one server (`prefect server start`, then set "
        "PREFECT_API_URL)"
    )


def _listens_on(pid: int, port: int) -> bool:
    """True when process ``pid`` holds the socket listening on 127.0.0.1:``port`` (Linux ``/proc``)."""
    address = f"0100007F:{port:04X}"
    inodes = set()
    with open("/proc/net/tcp") as table:
        for line in list(table)[1:]:
            fields = line.split()
            if fields[1] == address and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    try:
        held = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    except (FileNotFoundError, ProcessLookupError):
        return False
    return bool(inodes & held)


def _run_flow_ids(client: Any, roots: list[Any]) -> list[str]:
    """The flow runs ``roots`` and their sub-flow runs at any depth, as the server has recorded them."""
    ids = [str(root) for root in roots]
    frontier = list(ids)
    while frontier:
        children = client._client.post(
            "/flow_runs/filter", json={"flow_runs": {"parent_flow_run_id": {"any_": frontier}}, "limit": 200}
        ).json()
        frontier = [run["id"] for run in children if run["id"] not in ids]
        ids += frontier
    return ids


def _task_run_counts(client: Any, roots: list[Any]) -> tuple[int, int]:
    """(task runs, task runs not yet in a final state) of the flow runs ``roots`` and their sub-flows, as the server
    has
    recorded them. Task runs of other flow runs (earlier processes killed mid-run leave theirs Running forever in
    the same database) are not this run's to wait for."""
    from prefect.client.schemas.objects import TERMINAL_STATES, StateType

    unfinished_types = [t.value for t in StateType if t not in TERMINAL_STATES]
    mine = {"flow_run_id": {"any_": _run_flow_ids(client, roots)}}
    total = client._client.post("/task_runs/count", json={"task_runs": mine}).json()
    unfinished = client._client.post(
        "/task_runs/count", json={"task_runs": {**mine, "state": {"type": {"any_": unfinished_types}}}}
    ).json()
    return int(total), int(unfinished)


def stop_when_recorded(server: Any, flow_run_ids: list[Any], timeout_s: float = 15.0, poll_s: float = 0.5) -> None:
    """Stop the temporary ``server`` once it has recorded what this process sent: the client's event and log
    queues drained, then every task run of the flow runs ``flow_run_ids`` (and their sub-flows) final and their number
    unchanged for one poll (at most ``timeout_s`` in all: a lagging record costs a Running badge, not a stall)."""
    from prefect.client.orchestration import get_client
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    deadline = time.monotonic() + timeout_s
    EventsWorker.drain_all(timeout=timeout_s)
    APILogWorker.drain_all(timeout=max(0.0, deadline - time.monotonic()))
    last = None
    import httpx

    with get_client(sync_client=True) as client:
        while flow_run_ids and time.monotonic() < deadline:
            try:
                counts = _task_run_counts(client, flow_run_ids)
            except httpx.HTTPError:  # the server no longer answers: nothing left to wait for
                break
            if counts[1] == 0 and counts == last:
                break
            last = counts
            time.sleep(poll_s)
    server.stop()


def cancel_runs(roots: list[Any], message: str) -> None:
    """Mark the flow runs ``roots``, their sub-flow runs and their task runs that are not final Cancelled."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import TERMINAL_STATES, StateType
    from prefect.states import Cancelled

    unfinished = {"type": {"any_": [t.value for t in StateType if t not in TERMINAL_STATES]}}
    with get_client(sync_client=True) as client:
        ids = _run_flow_ids(client, roots)
        for run in client._client.post(
            "/flow_runs/filter", json={"flow_runs": {"id": {"any_": ids}, "state": unfinished}}
        ).json():
            client.set_flow_run_state(run["id"], Cancelled(message=message), force=True)
        tasks = {"task_runs": {"flow_run_id": {"any_": ids}, "state": unfinished}, "limit": 200}
        for run in client._client.post("/task_runs/filter", json=tasks).json():
            client.set_task_run_state(run["id"], Cancelled(message=message), force=True)


def in_worker_thread(run: Callable[[], T]) -> T:
    """``run()`` in a thread while this (the main) thread waits, so that Ctrl-C and SIGTERM reach it at once: in the
    main thread Prefect's flow engine turns SIGTERM into a crash of the flow run after its running tasks end."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = run()
        except BaseException as err:  # handed to the main thread as it is
            outcome["error"] = err

    thread = threading.Thread(target=target, name="diffpir-run", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.2)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as an interrupt so that it takes Ctrl-C's path."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` in the main thread (a flow run in
    :func:`in_worker_thread` cannot install Prefect's own bridge there)."""

    def handler(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
