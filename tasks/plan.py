"""Where a job's data lives, and the identity its shard records must carry to count as done.

Output layout (``<output>`` is the job's ``output``)::

    <output>/job.yaml          the effective job (secrets redacted)
    <output>/run.json          the RunPlan below: job hash, model sha256, code version, store locations
    <output>/input.zarr        the ingested input (absent when the job's input already is a dataset store)
    <output>/restored.zarr     a store aligned with the input's shard grid, holding
        measurements/<hash>/{y,kernel,mask}   evaluate mode: synthesised measurements (one hash per degradation)
        runs/<job hash>/restored             the restored images, uint8 (N, H, W, 3), with one record per shard
    <output>/status/<job hash>/<group>/<shard>.json   attempts and last error of each shard
    <output>/report.md, report.html, metrics.csv, summary.json

Array names carry the job hash, so a changed job (other λ, other prior) writes new arrays and never
meets stale shards; the records (``diffpir_core.io`` store) decide what is done.
"""

import hashlib
import json
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

from diffpir_core import __version__
from diffpir_core.io import DatasetStore, ShardRef, SizeGroup, shard_checksum
from diffpir_core.io.uris import filesystem, join, put_atomic

# Bump when the restoration of a shard changes its pixels for the same job (seeding, batching, quantisation).
RESTORE_REVISION = 1
CODE_VERSION = f"{__version__}+r{RESTORE_REVISION}"


class RunPlan(BaseModel):
    """Everything a shard task needs besides the job: small, picklable, identical for every shard."""

    model_config = ConfigDict(frozen=True)
    job_hash: str
    model_sha256: str
    code_version: str
    device: str
    output: str
    input_store: str
    output_store: str
    restored_array: str
    measurement_prefix: str | None

    def identity(self, input_checksum: str) -> dict[str, str]:
        """What a shard record must carry: job, model, code and the checksum of the shard's input."""
        return {
            "job_hash": self.job_hash,
            "model_sha256": self.model_sha256,
            "code_version": self.code_version,
            "input": input_checksum,
        }

    def status_path(self, ref: ShardRef) -> str:
        """Where the shard's attempt status lives (relative to ``output``)."""
        return f"status/{self.job_hash[:16]}/{ref.group}/{ref.index:06d}.json"


def group_of(store: DatasetStore, ref: ShardRef) -> SizeGroup:
    """The size group a shard belongs to (its image height and width)."""
    return next(group for group in store.groups() if group.name == ref.group)


def input_checksum(source: DatasetStore, ref: ShardRef) -> str:
    """Identity of a shard's input: the checksum of its images' source sha256 column (cheap to read)."""
    return shard_checksum(source.read_array(ref, "sha256"))


def measurement_hash(job_task: dict, seed: int) -> str:
    """Identity of synthesised measurements: task parameters and seed (the ground truth is checked separately)."""
    return hashlib.sha256(json.dumps({"task": job_task, "seed": seed}, sort_keys=True).encode()).hexdigest()


def write_text(output: str, relative: str, text: str, storage_options: dict) -> str:
    """Write ``text`` to ``<output>/<relative>`` atomically; returns the URI."""
    fs, base = filesystem(output, storage_options)
    path = join(base, relative)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    put_atomic(fs, path, text.encode())
    return join(output, relative)


def read_text(output: str, relative: str, storage_options: dict) -> str | None:
    """The text of ``<output>/<relative>``, or None when it does not exist."""
    fs, base = filesystem(output, storage_options)
    try:
        return fs.cat_file(join(base, relative)).decode()
    except FileNotFoundError:
        return None


def write_status(plan: RunPlan, ref: ShardRef, storage_options: dict, *, state: str, attempts: int, error: str | None) -> None:
    """Record the outcome of an attempt (the data record stays the proof of done)."""
    status = {
        "id": ref.key,
        "state": state,
        "attempts": attempts,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "error": error,
    }
    write_text(plan.output, plan.status_path(ref), json.dumps(status), storage_options)


def read_status(plan: RunPlan, ref: ShardRef, storage_options: dict) -> dict | None:
    """The last attempt status of a shard, or None."""
    text = read_text(plan.output, plan.status_path(ref), storage_options)
    return json.loads(text) if text else None
