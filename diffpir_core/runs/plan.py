"""Where a job's data lives, and the identity its shard records must carry to count as done.

Output layout (``<output>`` is the job's ``output``; several jobs may share it)::

    <output>/diffpir-output.json          ownership marker (``diffpir_core.io.outputs``)
    <output>/inputs/<input key>.zarr      the ingested input, one store per (input, ingest options), refreshed in
                                          place (absent when the job's input already is a dataset store)
    <output>/jobs/<job hash[:16]>/        everything of one job:
        job.yaml                          the effective job (secrets redacted)
        run.json                          the JobPlan below, locations relative to <output>
        restored.zarr                     a store aligned with the input's rows on the job's shard grid, holding
            restored                      the restored images, uint8 (N, H, W, 3), with one record per shard
            measurements/<hash>/{y,kernel,mask}   evaluate mode: synthesised measurements
        status/<group>/<shard>.json       attempts and last error of a shard whose attempt failed
        report.md, report.html, metrics.csv, summary.json
    <output>/measurements/<key>.zarr      comparison jobs: the measurements every variant of one task shares
                                          (``measurements/<hash>/{y,kernel,mask}``, synthesised once)
    <output>/comparisons/<hash[:16]>/     comparison jobs: the table of every variant × task (report.md/html,
                                          summary.json, metrics.csv, sweep plots)

A changed job (other λ, other prior, another kernel file's bytes) has another hash, so it writes a folder of its
own and never meets, nor deletes, another job's shards; the records (``diffpir_core.io`` store) decide what is done.
"""

import hashlib
import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from diffpir_core import __version__
from diffpir_core.io import DatasetStore, ShardRef, SizeGroup
from diffpir_core.io.listing import listed
from diffpir_core.io.uris import filesystem, is_local, join, local_path, put_atomic, redact_uri
from diffpir_core.runs.job import Job
from diffpir_core.sampling import ResolvedSampler, get_method

# Bump when the restoration of a shard changes its pixels for the same job (seeding, batching, quantisation).
RESTORE_REVISION = 2
CODE_VERSION = f"{__version__}+r{RESTORE_REVISION}"
_LOCATIONS = ("input_store", "output_store", "measurement_store")
MAX_AUTO_UNIT = 16  # shards per work unit at most when the job leaves dispatch.unit_shards to the flow


def job_folder(job_hash: str) -> str:
    """The folder of one job inside its output: ``jobs/<first 16 hex digits of the job hash>``."""
    return f"jobs/{job_hash[:16]}"


def comparison_folder(job_hash: str) -> str:
    """The folder of a comparison's report inside its output: ``comparisons/<first 16 hex digits of its hash>``."""
    return f"comparisons/{job_hash[:16]}"


def shared_measurement_location(job: Job, input_store: str) -> str:
    """Where the variants of a comparison keep the measurements of ``job``'s task: ``measurements/<key>.zarr``, one
    store per (input, shard grid, task and seed), so every variant of the task restores the same stored data."""
    key = json.dumps(
        {
            "input": redact_uri(input_store),
            "shard_size": job.shard_size,
            "measurement": measurement_hash(job.task_identity(), job.seed),
        },
        sort_keys=True,
    )
    return f"measurements/{hashlib.sha256(key.encode()).hexdigest()[:16]}.zarr"


def input_location(job: Job) -> str:
    """Where the output keeps its ingest of ``job.input``: ``inputs/<key>.zarr``, one store per input and ingest
    options (jobs that differ in anything else, shard size included, share it)."""
    key = json.dumps({"source": redact_uri(job.input), **job.ingest.model_dump(mode="json")}, sort_keys=True)
    return f"inputs/{hashlib.sha256(key.encode()).hexdigest()[:16]}.zarr"


class JobPlan(BaseModel):
    """Everything a shard task needs besides the job: small, picklable, identical for every shard.

    Locations are absolute while the job runs; ``run.json`` (:meth:`to_json`) stores those inside the output
    relative to it, so that a copied or moved output reads back (:meth:`from_json`) as itself.
    """

    model_config = ConfigDict(frozen=True)
    job_hash: str
    title: str
    model_sha256: str
    code_version: str
    device: str
    output: str
    input_store: str
    output_store: str
    restored_array: str
    measurement_prefix: str | None
    planned_at: str
    measurement_store: str | None = None  # where the measurements live when not in output_store (comparisons)
    threads: int | None = (
        None  # torch threads per shard task, fixed at the job's first plan (None: each Dask worker's own)
    )
    variant: str | None = None  # a comparison's variant name (``diffpir export --variant``)
    task: str | None = None  # the task's label, e.g. ``sr4`` (``diffpir export --task``)
    method: str = "diffpir"
    sampler: dict[str, Any] = {}  # the method's config, resolved once when planned (workers never read the prior card)
    sampler_sources: dict[str, str] = {}  # where each of its values came from
    uncertainty: str | None = None  # ``K=4,mean`` of a job with posterior samples (their estimate is ``restored``)

    def sampler_settings(self) -> ResolvedSampler:
        """The sampler settings resolved when the cell was planned (task preset → prior card → job)."""
        config = get_method(self.method).config.model_validate(self.sampler)
        return ResolvedSampler(config, dict(self.sampler_sources), self.method)

    def identity(self, input_checksum: str) -> dict[str, str]:
        """What a shard record must carry: job, model, code and the checksum of the shard's input; with posterior
        samples also their count and the estimate (``restored`` and ``std`` depend on them, a sample does not)."""
        identity = {
            "job_hash": self.job_hash,
            "model_sha256": self.model_sha256,
            "code_version": self.code_version,
            "input": input_checksum,
        }
        if self.uncertainty is not None:
            identity["uncertainty"] = self.uncertainty
        return identity

    @property
    def samples(self) -> int:
        """Posterior samples per image: ``K`` of ``uncertainty``, 1 for a plain job."""
        return 1 if self.uncertainty is None else int(self.uncertainty.split(",")[0].removeprefix("K="))

    @property
    def measurements(self) -> str:
        """The store holding this job's measurements (evaluate mode): its own store, or a comparison's shared one."""
        return self.measurement_store or self.output_store

    @property
    def job_dir(self) -> str:
        """The job's folder (job.yaml, run.json, its store, status and report files)."""
        return join(self.output, job_folder(self.job_hash))

    def status_path(self, ref: ShardRef) -> str:
        """Where the shard's attempt status lives (relative to ``output``)."""
        return f"{job_folder(self.job_hash)}/status/{ref.group}/{ref.index:06d}.json"

    def to_json(self) -> str:
        """The text of ``run.json``: no ``output``, and every location inside it relative to it."""
        prefix = self.output.rstrip("/") + "/"
        data = self.model_dump(exclude={"output"})
        for name in _LOCATIONS:
            uri = data[name]
            if uri is None:
                continue
            data[name] = uri[len(prefix) :] if uri.startswith(prefix) else (local_path(uri) if is_local(uri) else uri)
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str, output: str) -> "JobPlan":
        """The plan in ``run.json`` text, for the output at ``output`` (wherever it was when it was written)."""
        data = json.loads(text)
        for name in _LOCATIONS:
            if data.get(name) is not None and "://" not in data[name] and not data[name].startswith("/"):
                data[name] = join(output, data[name])
        return cls.model_validate({**data, "output": output})


class ShardSelection(BaseModel):
    """Which shards of a job's store a run covers, compactly (a sub-flow parameter, whatever the job's size): every
    shard (``ranges`` None), or ``(group, first index, stop index)`` ranges, e.g. the failed shards to run again."""

    model_config = ConfigDict(frozen=True)
    ranges: tuple[tuple[str, int, int], ...] | None = None

    @classmethod
    def of_keys(cls, keys: list[str]) -> "ShardSelection":
        """The shards named ``<group>/<index>`` (e.g. ``64x64/000003``), consecutive indices merged into ranges."""
        ranges: list[tuple[str, int, int]] = []
        for group, index in sorted({(key.rsplit("/", 1)[0], int(key.rsplit("/", 1)[1])) for key in keys}):
            if ranges and ranges[-1][0] == group and ranges[-1][2] == index:
                ranges[-1] = (group, ranges[-1][1], index + 1)
            else:
                ranges.append((group, index, index + 1))
        return cls(ranges=tuple(ranges))

    @classmethod
    def of(cls, store: DatasetStore, keys: list[str] | None) -> "ShardSelection":
        """All shards of ``store``, or those named in ``keys``; unknown keys are an error naming a few known ones."""
        if keys is None:
            return cls()
        known = {ref.key for ref in store.shards()}
        unknown = sorted(set(keys) - known)
        if unknown:
            raise ValueError(
                f"unknown shard(s) {unknown}; this store has {sorted(known)[:5]}... ({len(known)} shards)"
            )
        return cls.of_keys(keys)

    def resolve(self, store: DatasetStore) -> list[ShardRef]:
        """The selected shards of ``store``, in the store's order."""
        refs = store.shards()
        if self.ranges is None:
            return refs
        return [
            ref
            for ref in refs
            if any(group == ref.group and first <= ref.index < stop for group, first, stop in self.ranges)
        ]


def work_units(
    refs: list[ShardRef], unit_shards: int | None, slots: int, most: int = MAX_AUTO_UNIT
) -> list[list[ShardRef]]:
    """Runs of consecutive shards of one size group, ``unit_shards`` at a time (auto: enough units for 4 per model
    slot,
    at most ``most`` shards each, so that a unit's fixed cost is shared and the slots stay balanced)."""
    size = unit_shards or max(1, min(most, len(refs) // (4 * slots)))
    units: list[list[ShardRef]] = []
    for ref in refs:
        last = units[-1][-1] if units else None
        if last is not None and len(units[-1]) < size and (last.group, last.index + 1) == (ref.group, ref.index):
            units[-1].append(ref)
        else:
            units.append([ref])
    return units


def group_of(store: DatasetStore, ref: ShardRef) -> SizeGroup:
    """The size group a shard belongs to (its image height and width)."""
    return next(group for group in store.groups() if group.name == ref.group)


def measurement_hash(task_identity: dict, seed: int) -> str:
    """Identity of synthesised measurements: task parameters (kernel/mask files by their bytes, see
    ``Job.task_identity``) and seed (the ground truth is checked separately)."""
    return hashlib.sha256(json.dumps({"task": task_identity, "seed": seed}, sort_keys=True).encode()).hexdigest()


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


def write_status(
    plan: JobPlan, ref: ShardRef, storage_options: dict, *, state: str, attempts: int, error: str | None
) -> None:
    """Record the outcome of an attempt (the data record stays the proof of done)."""
    status = {
        "id": ref.key,
        "state": state,
        "attempts": attempts,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "error": error,
    }
    write_text(plan.output, plan.status_path(ref), json.dumps(status), storage_options)


def read_statuses(plan: JobPlan, storage_options: dict, threads: int = 8) -> dict[str, dict]:
    """The last attempt status of every shard that has one, by shard key: one listing of the job's status folder,
    then only the files it holds (a few failed shards, not one lookup per shard)."""
    fs, base = filesystem(plan.output, storage_options)
    folder = join(base, f"{job_folder(plan.job_hash)}/status")
    names = [name for name in listed(fs, folder) if name.endswith(".json")]
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="status-read") as pool:
        texts = pool.map(
            lambda name: read_text(plan.output, f"{job_folder(plan.job_hash)}/status/{name}", storage_options), names
        )
        return {name.removesuffix(".json"): json.loads(text) for name, text in zip(names, texts, strict=True) if text}


def quarantined_images(source: DatasetStore | None, by_shard: Mapping[str, Mapping[str, str]]) -> list[dict[str, str]]:
    """Every image of a job that was left out, with why: ``{"id", "reason", "stage": "ingest"}`` for each file the
    ingest quarantined (``source``'s list; none when the input store cannot be opened), then ``{"id", "reason",
    "stage": "restore", "shard"}`` for each image a finished shard did not restore (restore mode: its kernel or mask
    file missing, unreadable or of the wrong size, or a bad σ cell), from ``by_shard`` (shard key -> id -> reason)."""
    entries = [
        {"id": q.id, "reason": q.reason, "stage": "ingest"}
        for q in (source.quarantine() if source is not None else [])
    ]
    for key, images in sorted(by_shard.items()):
        entries += [{"id": i, "reason": r, "stage": "restore", "shard": key} for i, r in sorted(images.items())]
    return entries


def read_plans(output: str, storage_options: dict) -> list[JobPlan]:
    """The plans of every job in ``output``, the one planned last first; [] when it holds none."""
    fs, base = filesystem(output, storage_options)
    try:
        folders = sorted(fs.ls(join(base, "jobs"), detail=False))
    except FileNotFoundError:
        return []
    plans = []
    for folder in folders:
        text = read_text(output, f"jobs/{folder.rstrip('/').rsplit('/', 1)[-1]}/run.json", storage_options)
        if text is not None:
            plans.append(JobPlan.from_json(text, output))
    return sorted(plans, key=lambda plan: plan.planned_at, reverse=True)


def _describe_plan(plan: JobPlan) -> str:
    named = f"variant {plan.variant!r}, task {plan.task}, " if plan.variant else ""
    return f"{plan.job_hash[:16]} ({named}{plan.title}, planned {plan.planned_at})"


def matching_plans(
    uri: str, storage_options: dict, job: str | None = None, variant: str | None = None, task: str | None = None
) -> list[JobPlan] | None:
    """The plans of the jobs ``uri`` names (a job folder ``<output>/jobs/<hash>``: its own; a job output: all of them)
    whose hash starts with ``job``, variant is ``variant`` and task label is ``task`` (each case-insensitive, when
    given); None when ``uri`` is neither (a dataset store, e.g. a ``restored.zarr``)."""
    text = read_text(uri, "run.json", storage_options)
    if text is not None:
        plans = [JobPlan.from_json(text, uri.rstrip("/").rsplit("/", 2)[0])]
    else:
        fs, base = filesystem(uri, storage_options)
        if not (fs.exists(join(base, "diffpir-output.json")) or fs.isdir(join(base, "jobs"))):
            return None
        plans = read_plans(uri, storage_options)
        if not plans:
            raise ValueError(
                f"{redact_uri(uri)} is a job output but holds no job yet (no jobs/<hash>/run.json); run one first"
            )

    def fits(plan: JobPlan) -> bool:
        return (
            (job is None or plan.job_hash.startswith(job))
            and (variant is None or (plan.variant or "").lower() == variant.lower())
            and (task is None or (plan.task or plan.title.split("-", 1)[0]).lower() == task.lower())
        )

    chosen = [plan for plan in plans if fits(plan)]
    if not chosen:
        asked = ", ".join(f"{k} {v!r}" for k, v in (("hash prefix", job), ("variant", variant), ("task", task)) if v)
        raise ValueError(
            f"no job of {redact_uri(uri)} has {asked}; its jobs: " + "; ".join(_describe_plan(p) for p in plans)
        )
    return chosen


def export_source(
    uri: str, storage_options: dict, job: str | None = None, variant: str | None = None, task: str | None = None
) -> JobPlan | None:
    """The plan of the one job :func:`matching_plans` finds, for ``diffpir export`` (several: a ``ValueError`` listing
    them); None when ``uri`` names no job."""
    chosen = matching_plans(uri, storage_options, job, variant, task)
    if chosen is None:
        return None
    if len(chosen) == 1:
        return chosen[0]
    listed = "; ".join(_describe_plan(plan) for plan in chosen)
    raise ValueError(
        f"{redact_uri(uri)} holds {len(chosen)} such jobs; choose one with --variant NAME and --task LABEL (or --job "
        "PREFIX), "
        f"or export them all with --all: {listed}"
    )
