"""Two `diffpir run` processes starting their temporary Prefect servers at the same moment on the same port."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

_START = """
import sys, time
from pathlib import Path
from prefect.server.api.server import SubprocessASGIServer
import psutil
from diffpir_flow.cli.server import start_temporary_server

def barrier(name):  # both processes reach this point before either goes on
    Path(f"{name}-{index}").touch()
    while not Path(f"{name}-{1 - index}").exists():
        time.sleep(0.05)

index = int(sys.argv[1])
SubprocessASGIServer._port_range = range(PORT, PORT + 1)  # one port: both processes pick it
barrier("imported")
try:
    server = start_temporary_server()
except RuntimeError as err:
    print("refused:", err, flush=True)
    barrier("started")
    sys.exit(3)
barrier("started")  # the other one is up as well (or refused): only now is it known whose server answers
child = server.server_process
own = child.poll() is None and any(c.laddr.port == server.port and c.status == "LISTEN" for c in
psutil.Process(child.pid).net_connections())
print("port", server.port, "own", own, flush=True)
server.stop()
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the server checks its port in Linux /proc")
def test_two_temporary_servers_never_share_a_port(tmp_path: Path) -> None:
    """Both processes pick the same port (Prefect checks it is free, then starts uvicorn on it): the server that loses
    the bind exits, and its process found the other's server healthy and used it, silently. Now a process runs on
    a server listening from its own child, or refuses with what to do."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = _START.replace("PORT", str(port))
    env = {**os.environ, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "150"}  # a loaded machine starts slowly
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(index)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=env,
        )
        for index in range(2)
    ]
    outputs = [run.communicate(timeout=400) for run in runs]
    lines = [out.strip().splitlines()[-1] if out.strip() else err[-2000:] for out, err in outputs]
    served = [line for line in lines if line.startswith("port")]
    assert served == [f"port {port} own True"], lines
    (refused,) = [line for line in lines if line.startswith("refused:")]
    assert "found another process's server on each port it chose" in refused and "PREFECT_API_URL" in refused
