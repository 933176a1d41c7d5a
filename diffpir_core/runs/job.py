"""The restoration job: one pydantic model that is the job file, the flow parameter and the cache identity.

A job file is YAML with the top-level keys of ``docs/jobs.md``. :func:`load_job` reads it (with
``--set key=value`` overrides), validates it before anything runs and names the offending field in
the error. :meth:`Job.job_hash` is the identity of the *result*: two jobs with the same hash produce
the same restored pixels, so shard records carry it and a re-run reuses only shards whose record
matches. Fields that change how the work is scheduled (runner, batch size, device string, threads, metrics,
storage options, output location) are left out of the hash on purpose.

No Prefect here: the same model is used by the CLI, the flows and plain Python.
"""

import difflib
import functools
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_serializer, field_validator, model_validator

from diffpir_core.io.yaml_files import YamlLimitError, read_bounded_yaml
from diffpir_core.runs.batches import Fit
from diffpir_core.runs.cells import Cell, MethodName, Variant, expand_variants, operator_problem
from diffpir_core.runs.options import (
    DispatchOptions,
    IngestOptions,
    LocalRunner,
    ReportOptions,
    RunnerSpec,
    Strict,
    TilingOptions,
    UncertaintyOptions,
)
from diffpir_core.sampling import METHODS, ResolvedSampler, check_overrides, resolve_job_sampler
from diffpir_core.task_kinds import TaskSpec, default_task
from diffpir_core.tuning.objectives import NOISE_METRICS, noise_problem
from diffpir_core.tuning.space import TuneSpec, tune_problem
from diffpir_core.tuning.tuned import tuned_layer, valid_for

JOB_SCHEMA_VERSION = 1
FULL_REFERENCE_METRICS = frozenset({"psnr", "psnr_y", "ssim", "ssim_y", "lpips", "fid"})
_SECRET_KEYS = re.compile(r"(key|secret|token|password|credential)", re.IGNORECASE)
CREDENTIAL_OPTIONS = frozenset(
    {"key", "secret", "token", "password", "aws_access_key_id", "aws_secret_access_key", "aws_session_token"}
)
"""``storage_options`` names (at any depth, e.g. ``client_kwargs.aws_secret_access_key``) that hold credentials:
never part of the job's JSON, which Prefect stores as flow-run parameters and shows in its UI."""
_TAGGED = ("task", "runner")  # pydantic puts the union tag after these in error locations
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class JobError(ValueError):
    """A job that cannot run: the message names each offending field (``task.scale: ...``)."""


class Job(Strict):
    """A restoration job (the job YAML). Every field has a default except ``input`` and ``output``."""

    input: str = Field(description="image folder, s3://bucket/prefix, or an existing .zarr store")
    output: str = Field(description="output store (restored shards, records, reports), local path or s3://")
    mode: Literal["evaluate", "restore"] = Field(
        "evaluate",
        description="evaluate: ground truth in, degradation synthesised, full-reference metrics; "
        "restore: degraded images in, no-reference checks",
    )
    task: TaskSpec = Field(default_factory=default_task)
    prior: str = Field(
        "demo", min_length=1, description="demo | ffhq_256 | imagenet_256 | a local .safetensors/.pt path"
    )
    method: MethodName = Field("diffpir", description=f"restoration method: {' | '.join(METHODS)} (docs/methods.md)")
    sampler: dict[str, Any] = Field(
        default_factory=dict,
        description="settings of the method's config on top of its preset and the prior card's recommendation",
    )
    variants: list[Variant] | None = Field(
        None,
        description="comparison: methods/settings (or a grid of settings) run on the same measurements (docs/jobs.md)",
    )
    tasks: list[TaskSpec] | None = Field(
        None, description="comparison: the tasks every variant runs on (null = [task])"
    )
    tune: TuneSpec | None = Field(
        None, description="tuning job: search settings of the method on a subset of the images (docs/tuning.md)"
    )
    tuned: str | None = Field(
        None, description="a tuned settings file (a tuning job's tuned.json): its values go under the job's sampler"
    )
    shard_size: int = Field(16, ge=1, le=4096)
    batch_size: int = Field(4, ge=1, le=1024)
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    threads: int | None = Field(
        None,
        description=(
            "torch CPU threads per work unit; null = OMP_NUM_THREADS if set, else the cores split across "
            "concurrent work units"
        ),
    )
    runner: RunnerSpec = Field(default_factory=LocalRunner)
    metrics: (
        list[
            Literal[
                "psnr",
                "psnr_y",
                "ssim",
                "ssim_y",
                "lpips",
                "fid",
                "consistency",
                "discrepancy",
                "sure",
                "niqe",
                "piqe",
            ]
        ]
        | None
    ) = Field(
        None,
        description="null = [psnr, ssim] for evaluate, [consistency, piqe, niqe] for restore; discrepancy and sure "
        "(σ > 0; sure restores every image twice) in both modes (docs/metrics.md)",
    )
    seed: int = Field(0, ge=0)
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "fsspec options for input/output, e.g. {endpoint_url: http://host:8333}. No credentials here (key, "
            "secret, "
            "token): run parameters are stored in Prefect's database. Put them in the worker's environment "
            "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or in a Secret block named by the run's credentials_block"
        ),
        json_schema_extra={"propertyNames": {"not": {"enum": sorted(CREDENTIAL_OPTIONS)}}},
    )
    name: str | None = Field(None, description="dataset label in run names; null = last part of input")
    ingest: IngestOptions = Field(default_factory=IngestOptions)
    tiling: TilingOptions = Field(default_factory=TilingOptions)
    report: ReportOptions = Field(default_factory=ReportOptions)
    uncertainty: UncertaintyOptions | None = Field(
        None, description="K posterior samples per image, their estimate, std and calibration; null = off"
    )
    dispatch: DispatchOptions = Field(default_factory=DispatchOptions)
    retries: int = Field(2, ge=0, le=20, description="retries of a shard after a transient error")
    retry_delay_s: float = Field(5.0, ge=0.0, le=3600.0, description="first retry delay; doubles per retry")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not _DEVICE.match(v):
            raise ValueError(f"must be auto, cpu, cuda or cuda:N, got {v!r}")
        return v

    @field_validator("threads", mode="before")
    @classmethod
    def _threads(cls, v: Any) -> Any:
        if v is None or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1024):
            return v
        raise ValueError(
            f"must be a whole number of threads from 1 to 1024, or null for the default "
            f"(OMP_NUM_THREADS, else cores / concurrent shard tasks), got {v!r}"
        )

    @field_validator("input", "output")
    @classmethod
    def _uri(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("must be a path or URI, got an empty string")
        return v

    @model_validator(mode="before")
    @classmethod
    def _sampler_of_the_method(cls, data: Any) -> Any:
        """``sampler`` checked against the config of ``method`` (a known one; pydantic names an unknown method)."""
        if (
            isinstance(data, dict)
            and isinstance(data.get("sampler"), dict)
            and data.get("method", "diffpir") in METHODS
        ):
            data = {**data, "sampler": check_overrides(data.get("method", "diffpir"), data["sampler"])}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "Job":
        if self.precision != "fp32" and self.device == "cpu":
            raise ValueError(f"precision: {self.precision} needs a GPU; use precision fp32 with device cpu")
        if self.mode == "restore":
            bad = sorted(FULL_REFERENCE_METRICS & set(self.metrics or ()))
            if bad:
                raise ValueError(
                    f"metrics: {bad} need ground truth, which mode restore does not have; "
                    "use [consistency] or mode evaluate"
                )
        if self.uncertainty is not None and self.uncertainty.calibration and self.mode != "restore":
            raise ValueError(
                "uncertainty.calibration: only restore mode takes a calibration file (evaluate mode fits one); "
                "set mode: restore or uncertainty.calibration: null"
            )
        for task in [self.task, *(self.tasks or [])]:
            task.apply_mode_defaults(self.mode)
        for name in sorted(NOISE_METRICS & set(self.metrics or ())):
            if problem := noise_problem(f"metrics: {name}", name, self):
                raise ValueError(problem)
        if self.uncertainty is not None and "sure" in (self.metrics or ()):
            raise ValueError(
                "metrics: sure cannot be scored with uncertainty (its probe restores one sample per image); "
                "drop sure from metrics, or uncertainty"
            )
        self.task.check_mode(self.mode)
        if self.tune is not None and (problem := tune_problem(self)):
            raise ValueError(problem)
        if self.ingest.size_policy in ("center_crop", "resize") and self.ingest.size is None:
            raise ValueError(f"ingest.size: required with ingest.size_policy {self.ingest.size_policy}")
        if self.is_comparison():
            self.cells()  # every variant's settings validated, names unique
            return self
        try:
            self.sampler_settings()  # a tuned file's ValueError names it
        except ValidationError as err:
            raise ValueError("sampler: " + format_validation_error(err).replace("\n", "; ")) from None
        if problem := operator_problem(self.method, self.task, self.storage_options):
            raise ValueError(f"method: {problem}")
        return self

    def is_comparison(self) -> bool:
        """Whether the job lists variants or several tasks (then :meth:`runs` has one job per variant and task)."""
        return self.variants is not None or self.tasks is not None

    def cells(self) -> list[Cell]:
        """The jobs of a comparison, one per variant × task (each a plain job: no variants, one task), in the order
        of ``tasks`` then ``variants``; a variant whose method cannot use a task's operator (DDRM without an SVD)
        has no job and the reason instead. A plain job is its own single run."""
        if not self.is_comparison():
            return [Cell(self.method, self.task.label(), self, method=self.method, settings=self.sampler)]
        base = self.model_dump(exclude={"variants", "tasks", "method", "sampler", "task"})

        def build(method: str, sampler: dict[str, Any], task: TaskSpec) -> "Job":
            return Job.model_validate({**base, "method": method, "sampler": sampler, "task": task})

        tasks = self.tasks or [self.task]
        return expand_variants(
            self.variants or [Variant()], self.method, self.sampler, tasks, self.storage_options, build
        )

    def effective_metrics(self) -> list[str]:
        """The metrics to compute: the configured list or the mode's default."""
        if self.metrics is not None:
            return list(self.metrics)
        return ["psnr", "ssim"] if self.mode == "evaluate" else ["consistency", "piqe", "niqe"]

    def sampler_settings(self) -> ResolvedSampler:
        """The effective settings of the job's method and where each came from: task preset → prior card → the
        ``tuned`` file (read and checked against this job here) → ``sampler`` (:func:`resolve_job_sampler`)."""
        tuned = None
        if self.tuned is not None:
            wanted = valid_for(self.task, self.task_identity(), self.prior, self.method)
            try:
                tuned = (f"tuned {self.tuned}", tuned_layer(self.tuned, wanted, self.storage_options))
            except ValueError as err:
                raise ValueError(f"tuned: {err}") from None
        return resolve_job_sampler(self.task, self.method, self.prior, self.sampler, tuned)

    def sampler_config(self) -> BaseModel:
        """The config of the job's method it samples with (``DiffPIRConfig`` for DiffPIR; see
        :meth:`sampler_settings`)."""
        return self.sampler_settings().config

    def fit(self) -> Fit:
        """How the restoration core fits images to the network (padding by the size policy, tiling)."""
        return self.tiling.fit(pad=self.ingest.size_policy == "pad")

    def local_tasks(self) -> int | None:
        """Shard tasks that run at once in this process: the local runner's ``max_workers``; None on Dask."""
        return self.runner.max_workers if isinstance(self.runner, LocalRunner) else None

    def output_scale(self) -> int:
        """Restored size / stored input size: the task's scale in restore mode (evaluate stores ground truth)."""
        return self.task.output_scale if self.mode == "restore" else 1

    def dataset_name(self) -> str:
        """A short dataset label for run names: ``name`` or the last part of ``input``."""
        if self.name:
            return self.name
        stem = self.input.rstrip("/").rsplit("/", 1)[-1]
        return re.sub(r"\.zarr$", "", stem) or "dataset"

    def task_label(self) -> str:
        """``sr4``, ``deblur-gaussian``, ``inpaint-box``: the task part of run names and reports."""
        return self.task.label()

    def task_identity(self) -> dict[str, Any]:
        """The task's fields (``TaskKind.identity``: a circular boundary is left out, so jobs from before that field
        keep
        their hash) with every kernel/mask file replaced by the digest of its bytes (reads those files)."""
        return {**self.task.identity(), **self.task.content_identity(self.storage_options)}

    def job_hash(self) -> str:
        """sha256 of everything that determines the restored pixels (see the module docstring); kernel and mask
        files count by their bytes, so replacing one at the same path makes a new job. The method enters only when it
        is
        not DiffPIR (DiffPIR jobs keep the hashes they had before methods existed); a comparison's hash is that of its
        runs' hashes."""
        if self.is_comparison():
            runs = [(run.name, run.task, run.job.job_hash() if run.job else run.reason) for run in self.cells()]
            return hashlib.sha256(json.dumps({"schema": JOB_SCHEMA_VERSION, "comparison": runs}).encode()).hexdigest()
        identity = {
            "schema": JOB_SCHEMA_VERSION,
            "input": self.input,
            "mode": self.mode,
            "task": self.task_identity(),
            "prior": self.prior,
            "sampler": self.sampler_config().model_dump(mode="json"),
            "shard_size": self.shard_size,
            "precision": self.precision,
            "seed": self.seed,
            "ingest": self.ingest.model_dump(mode="json"),
            "tiling": self.tiling.model_dump(mode="json"),
        }
        if self.method != "diffpir":
            identity["method"] = self.method
        if self.uncertainty is not None:  # K and the estimate name the records, not the folder (docs/uncertainty.md)
            identity["uncertainty"] = "samples"
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    @field_serializer("storage_options", when_used="json")
    def _storage_options_json(self, options: dict[str, Any]) -> dict[str, Any]:
        """In JSON, ``storage_options`` without credentials (:data:`CREDENTIAL_OPTIONS`): Prefect stores flow-run
        parameters as JSON, so no run or sub-flow run of a job holding credentials in memory records them."""
        return _without_credentials(options)

    def public_dict(self) -> dict[str, Any]:
        """The job as plain data: no credentials, other secret-looking ``storage_options`` replaced by ``***``."""
        data = self.model_dump(mode="json")
        data["storage_options"] = _redact(data["storage_options"])
        return data

    def to_yaml(self, *, redact: bool = True) -> str:
        """The job as YAML (secrets redacted unless ``redact=False``); ``load_job`` reads it back."""
        data = (
            self.public_dict() if redact else {**self.model_dump(mode="json"), "storage_options": self.storage_options}
        )
        return yaml.safe_dump(data, sort_keys=False)


def _without_credentials(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_credentials(v) for k, v in value.items() if k not in CREDENTIAL_OPTIONS}
    return value


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "***" if _SECRET_KEYS.search(str(k)) else _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def format_validation_error(err: ValidationError) -> str:
    """One line per problem: ``task.scale: Input should be less than or equal to 8 (got 16)``."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for i, p in enumerate(e["loc"]) if not (i == 1 and e["loc"][0] in _TAGGED))
        msg = e["msg"].removeprefix("Value error, ")
        got = (
            f" (got {e['input']!r})"
            if e["type"] not in ("missing", "value_error") and not isinstance(e["input"], dict)
            else ""
        )
        if e["type"] == "extra_forbidden" and (
            close := difflib.get_close_matches(str(e["loc"][-1]), _field_names(), n=1)
        ):
            got = f"; did you mean `{close[0]}`?"
        lines.append(f"{loc}: {msg}{got}" if loc else msg)
    return "\n".join(lines)


@functools.cache
def _field_names() -> tuple[str, ...]:
    """Every field name a job can have at any depth (task kinds, runner, sampler of every method included)."""
    schema = Job.model_json_schema()
    models = [schema, *schema.get("$defs", {}).values()]
    return tuple(sorted({name for model in models for name in model.get("properties", {})}))


def parse_job(data: dict[str, Any]) -> Job:
    """Validate plain data into a :class:`Job`; raise :class:`JobError` naming every bad field."""
    if not isinstance(data, dict):
        raise JobError(f"a job must be a mapping of fields (input, output, task, ...), got {type(data).__name__}")
    try:
        return Job.model_validate(data)
    except ValidationError as err:
        raise JobError("invalid job:\n" + format_validation_error(err)) from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to job data; returns a new dict."""
    out = json.loads(json.dumps(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise JobError(f"--set {item!r}: expected key=value, e.g. --set task.scale=4")
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise JobError(f"--set {item!r}: {p} is not a mapping, cannot set {key}")
            node = child
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return out


def load_job(path: str | Path, overrides: list[str] | None = None) -> Job:
    """Read a job YAML file, apply ``--set`` overrides, validate; relative local paths resolve from the file."""
    path = Path(path)
    try:
        data = read_bounded_yaml(path, f"job file {path}") or {}
    except FileNotFoundError:
        raise JobError(f"job file {path} does not exist") from None
    except YamlLimitError as err:
        raise JobError(str(err)) from None
    except yaml.YAMLError as err:
        raise JobError(f"job file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise JobError(f"job file {path} must hold a mapping of fields (input, output, task, ...)")
    data = apply_overrides(_resolve_paths(data, path.parent), overrides or [])
    return parse_job(_resolve_paths(data, Path.cwd()))  # what --set made relative is relative to where it was typed


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """``data`` with its relative local paths (input, output, prior, tuned, task.kernel, task.mask,
    uncertainty.calibration) resolved from ``base``."""
    task, uncertainty = data.get("task"), data.get("uncertainty")
    places = [
        (data, "input"),
        (data, "output"),
        (data, "prior"),
        (data, "tuned"),
        (task, "kernel"),
        (task, "mask"),
        (uncertainty, "calibration"),
    ]
    for node, key in places:
        if isinstance(node, dict) and key in node:
            node[key] = _resolve_relative(node[key], base, always=key in ("input", "output", "tuned", "calibration"))
    return data


def _resolve_relative(value: Any, base: Path, always: bool = False) -> Any:
    """A relative local path (``./x``, ``a/b``, ``x.npy``, ``~/x``; any relative path when ``always``: input and
    output are never names) resolved from ``base``; names (``demo``, ``box``) and URIs unchanged."""
    if not isinstance(value, str) or "://" in value:
        return value
    value = os.path.expanduser(value)
    if Path(value).is_absolute() or (not always and "/" not in value and "." not in value):
        return value
    return str((base / value).resolve())
