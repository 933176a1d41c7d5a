"""The sections of a job that say how it runs rather than what it restores: runner, ingest, tiling, dispatch and
report options (strict pydantic models: an unknown key is an error naming it)."""

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from diffpir_core.runs.batches import Fit


class Strict(BaseModel):
    """A job section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LocalRunner(Strict):
    """Threads in the flow process; ``max_workers`` shards at a time (1 = one model call at a time)."""

    kind: Literal["local"] = "local"
    max_workers: int = Field(1, ge=1, le=256)


class DaskRunner(Strict):
    """A Dask cluster: an existing scheduler (``address``) or one created for the run (``cluster_class``)."""

    kind: Literal["dask"] = "dask"
    address: str | None = Field(None, description="tcp://host:8786 of a running scheduler")
    cluster_class: str | None = Field(
        None, description="dotted class, e.g. distributed.LocalCluster or dask_cuda.LocalCUDACluster"
    )
    cluster_kwargs: dict[str, Any] = Field(default_factory=dict)
    adapt_kwargs: dict[str, Any] = Field(default_factory=dict, description="e.g. {minimum: 1, maximum: 8}")
    gpus_per_task: int | None = Field(
        None, ge=0, le=16, description="Dask resource GPU per shard task; null = 1 on CUDA devices, else 0"
    )
    gpu_wait_s: float = Field(
        30.0, ge=0.0, description="how long to wait for a worker with enough GPU resources before failing"
    )

    @model_validator(mode="after")
    def _one_target(self) -> "DaskRunner":
        if self.address and (self.cluster_class or self.cluster_kwargs or self.adapt_kwargs):
            raise ValueError(
                "give either address (an existing scheduler) or cluster_class/cluster_kwargs/adapt_kwargs "
                "(a cluster created for the run), not both"
            )
        if self.address and not re.match(r"^(tcp|tls|inproc|ucx)://", self.address):
            raise ValueError(f"address must look like tcp://host:port, got {self.address!r}")
        return self


RunnerSpec = Annotated[LocalRunner | DaskRunner, Field(discriminator="kind")]


class IngestOptions(Strict):
    """How images enter the input store (see docs/store-layout.md)."""

    size_policy: Literal["pad", "native", "center_crop", "resize", "modcrop"] = Field(
        "pad", description="pad: any size, padded for the network and cropped back; see docs/store-layout.md"
    )
    size: int | None = Field(None, ge=8, description="working size for center_crop/resize (square)")
    multiple: int = Field(32, ge=1, description="sizes are made multiples of this (the UNet needs 32)")


class TilingOptions(Strict):
    """How images larger than the prior's training size are restored: overlapping tiles, blended."""

    tile: int | None = Field(
        None, ge=0, description="largest side the network sees; null = the prior's training size, 0 = never tile"
    )
    overlap: int | None = Field(None, ge=0, description="overlap of neighbouring tiles in pixels; null = tile / 4")
    tile_batch: int = Field(8, ge=1, le=1024, description="tiles per network call (bounds the memory)")

    @model_validator(mode="after")
    def _overlap_below_tile(self) -> "TilingOptions":
        if self.tile and self.overlap is not None and self.overlap >= self.tile:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than tile ({self.tile})")
        return self

    def fit(self, pad: bool) -> Fit:
        """These options as the restoration core's :class:`Fit`."""
        return Fit(pad=pad, tile=self.tile, overlap=self.overlap, tile_batch=self.tile_batch)


class DispatchOptions(Strict):
    """How the restore flow hands shards to its runner (never changes a result, so not part of the job hash)."""

    unit_shards: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="shards per work unit (one Prefect task); null = auto (up to 16, 4 units per model slot)",
    )
    window: int | None = Field(
        None, ge=1, le=4096, description="work units submitted at once; null = 2 per model slot"
    )

    def units_in_flight(self, slots: int) -> int:
        """Work units submitted at once for ``slots`` model slots: ``window``, else two per slot (the second one starts
        and reads while the first computes)."""
        return self.window or 2 * slots


class ReportOptions(Strict):
    """What goes into report.md / report.html."""

    samples: int = Field(
        8, ge=0, le=256, description="images shown large: degraded | baseline | restored | truth, with crops"
    )
    extremes: int = Field(4, ge=0, le=50, description="best and worst images by PSNR gain over the baseline (each)")


class UncertaintyOptions(Strict):
    """K posterior samples per image: their estimate and per-pixel standard deviation, calibrated in evaluate mode
    (docs/uncertainty.md)."""

    samples: int = Field(..., description="posterior samples per image, 2 to 64 (each costs the sampler's NFEs)")
    estimate: Literal["mean", "first"] = Field(
        "mean", description="the restored image: mean of the K samples, or sample 0 (the plain job's restoration)"
    )
    calibration: str | None = Field(
        None, description="restore mode: a calibration.json an evaluate job fitted; null = uncalibrated std maps"
    )
    alpha: float = Field(0.1, gt=0.0, lt=1.0, description="at most this share of an image's pixels outside")
    delta: float = Field(0.1, gt=0.0, lt=1.0, description="the guarantee fails on at most this share of images")
    calibration_fraction: float = Field(
        0.25, gt=0.0, lt=1.0, description="evaluate mode: share of images (by id hash) that fit the scale"
    )

    @field_validator("samples", mode="before")
    @classmethod
    def _samples(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool) and 2 <= v <= 64:
            return v
        raise ValueError(
            f"must be a whole number from 2 to 64 (one sample has no spread), got {v!r}; remove `uncertainty` for "
            "a plain restoration"
        )

    def identity(self) -> str:
        """What the job's estimate and std depend on besides the samples: ``K=4,mean``."""
        return f"K={self.samples},{self.estimate}"
