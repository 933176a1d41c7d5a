"""``TaskKind``: everything about one kind of restoration task, in one class per kind.

A kind is the job's ``task`` section (its pydantic fields, validated against what the operators
support) and knows how to turn that section into work: the operator of a batch, the evaluate-mode
recipe that synthesises measurements from ground truth (per-image seeded, docs/algorithm.md §6), the
arrays those measurements are stored in, how restore mode gets the operator parameters, the output
scale, the metric border, the classical baseline, the labels, and each method's preset for the kind (``PRESETS``).
Code outside ``diffpir_core/task_kinds`` only calls these methods; it never branches on a kind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from diffpir_core.operators import BOUNDARIES, Operator, add_noise

AUTO_SIGMA = "auto"
NoiseLevel = Annotated[float, Field(ge=0.0, lt=1.0)] | Literal["auto"]
"""A task's noise level: AWGN std on the [0, 1] scale, or ``auto`` (estimated per image from the measurement,
``diffpir_core.operators.estimate_noise_sigma``; restore mode)."""
SIGMA_DESCRIPTION = "AWGN std on the [0, 1] scale, or auto: estimated per image from the measurement (mode restore)"

ArraySpec = tuple[tuple[int, ...], str]
"""Per-image shape (without the image axis) and dtype of one stored measurement array."""

Presets = Mapping[str, Mapping[str, Any]]
"""A kind's sampler presets: method name -> settings of that method's config."""


def method_presets(**by_method: Mapping[str, Any]) -> Presets:
    """A kind's ``PRESETS``, read-only: ``method_presets(diffpir={...}, dps={...})``."""
    return MappingProxyType({method: MappingProxyType(dict(settings)) for method, settings in by_method.items()})


@dataclass
class GivenData:
    """Restore mode: the operator data of a shard's images, as :meth:`TaskKind.given` finds it.

    ``params`` cover every image (per-image first dim = images, or shared); a quarantined image gets harmless
    placeholder data there and is not restored. ``noise_sigma`` is one σ per image when they differ (a manifest;
    ``auto`` where the image's σ is to be estimated), else None (the task's). ``identity`` is the digest of the
    per-image files' bytes (empty when the task's one file is already in the job hash): it enters the shard's record
    identity, so a changed file re-runs its shard.
    """

    params: dict[str, Tensor]
    quarantined: dict[str, str] = field(default_factory=dict)
    noise_sigma: list[float | str] | None = None
    identity: str = ""


class TaskKind(BaseModel):
    """Base of the task kinds; subclasses set ``kind`` (a ``Literal``), ``PRESETS`` and ``BASELINE``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    kind: str
    noise_sigma: NoiseLevel = Field(0.05, description=SIGMA_DESCRIPTION)

    PRESETS: ClassVar[Presets]
    """Per method, the settings its reference code runs this kind with (fields of the method's config): the first
    layer of a job's sampler settings (``sampling.settings``). A method without an entry runs its defaults."""
    BASELINE: ClassVar[str]
    """Name of the classical method :meth:`baseline` runs (shown in reports)."""

    def label(self) -> str:
        """Short task name for run names, artifact keys and reports (``sr4``, ``deblur-gaussian``)."""
        return self.kind

    def title(self) -> str:
        """Human-readable task for report tables, with the noise level (``sr x4, σ=0.05``, ``σ=auto``)."""
        return f"{self.label().replace('-', ' ')}, σ={self.sigma_text()}"

    def sigma_text(self) -> str:
        """The noise level as shown in titles: ``0.05`` or ``auto``."""
        return self.noise_sigma if self.noise_sigma == AUTO_SIGMA else f"{self.noise_sigma:g}"

    @property
    def known_sigma(self) -> float:
        """The configured σ, or 0.0 for ``auto`` (then each image's estimate replaces it, see ``restore``)."""
        return 0.0 if self.noise_sigma == AUTO_SIGMA else float(self.noise_sigma)

    @property
    def output_scale(self) -> int:
        """How many times larger than the measurement the restored image is (SR: the scale)."""
        return 1

    @property
    def metric_border(self) -> int:
        """Pixels cropped at each border before PSNR/SSIM (the reference crops the SR scale)."""
        return 0

    def check_mode(self, mode: str) -> None:
        """Raise ``ValueError`` naming the field when the task cannot run in ``mode`` (evaluate | restore)."""
        if mode == "evaluate" and self.noise_sigma == AUTO_SIGMA:
            raise ValueError(
                "task.noise_sigma: auto estimates σ from real measurements (mode restore); evaluate mode synthesises "
                "noise of a known level, give it as a number (e.g. 0.05)"
            )

    def apply_mode_defaults(self, mode: str) -> None:
        """Set the fields whose default depends on the job's mode (none here; ``boundary`` in blur kinds)."""

    def identity(self) -> dict[str, Any]:
        """The task's fields as they enter the job hash (all of them here)."""
        return self.model_dump(mode="json")

    def content_identity(self, storage_options: Mapping[str, Any]) -> dict[str, str]:
        """Fields whose value names a file, mapped to the digest of the file's bytes: merged over the task's fields
        in the job hash, so that a file is identified by its content, not its path (none by default)."""
        return {}

    def measurement_arrays(self, height: int, width: int, storage_options: Mapping[str, Any]) -> dict[str, ArraySpec]:
        """The arrays evaluate mode stores for ground truth of ``height``×``width``: ``y`` plus operator data."""
        return {"y": ((height, width, 3), "float32")}

    def synthesise(
        self, truth_u8: np.ndarray, seeds: list[int], storage_options: Mapping[str, Any]
    ) -> dict[str, np.ndarray]:
        """Degrade ground truth (n, H, W, 3) uint8 with one seed per image: ``y`` (n, h, w, 3) float32 in
        [0, 1] with AWGN of ``noise_sigma``, plus the operator arrays of :meth:`measurement_arrays`."""
        y, extra = self.degrade(truth_u8, seeds, storage_options)
        if self.known_sigma > 0:
            y = add_noise(y, self.known_sigma, seeds)
        return {"y": y.permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32), **extra}

    def degrade(
        self, truth_u8: np.ndarray, seeds: list[int], storage_options: Mapping[str, Any]
    ) -> tuple[Tensor, dict[str, np.ndarray]]:
        """The noise-free measurement (n, 3, h, w) float and the operator arrays (subclasses)."""
        raise NotImplementedError

    def params_from_arrays(self, arrays: Mapping[str, np.ndarray]) -> dict[str, Tensor]:
        """Operator parameters from stored measurement arrays (those of :meth:`measurement_arrays`)."""
        return {}

    def given_params(self, image_shape: tuple[int, int, int], storage_options: Mapping[str, Any]) -> dict[str, Tensor]:
        """Restore mode: operator parameters for stored degraded images of shape (n, h, w)."""
        return {}

    def given(
        self, ids: Sequence[str], image_shape: tuple[int, int, int], storage_options: Mapping[str, Any]
    ) -> GivenData:
        """Restore mode: the operator data of the images ``ids`` of shape (n, h, w), with the images whose own data is
        missing or unfit quarantined (reason by id). Default: :meth:`given_params`, shared by every image."""
        return GivenData(self.given_params(image_shape, storage_options))

    def pad_params(self, params: dict[str, Tensor], pad_h: int, pad_w: int) -> dict[str, Tensor]:
        """Operator parameters for a measurement padded by ``pad_h`` rows and ``pad_w`` columns at the
        bottom/right (reflect); parameters that do not depend on the image size pass unchanged."""
        return params

    def operator(self, params: Mapping[str, Tensor]) -> Operator:
        """The operator of a batch, from per-image (first dim = images) or shared parameters."""
        raise NotImplementedError

    def baseline(self, y: Tensor, params: Mapping[str, Tensor], noise_sigma: Sequence[float] | None = None) -> Tensor:
        """The classical restoration of ``y`` (B, 3, h, w) given what DiffPIR is given, with one σ per image
        (``noise_sigma``, else the task's); (B, 3, H, W) in [0, 1]."""
        raise NotImplementedError

    def unknown_region(self, params: Mapping[str, Tensor], index: int) -> np.ndarray | None:
        """Image ``index``'s pixels the measurement says nothing about, as a bool (H, W) array (a report zooms there);
        None when every pixel is measured."""
        return None

    def sigmas(self, batch: int, noise_sigma: Sequence[float] | None) -> list[float]:
        """One σ per image: ``noise_sigma`` when given (a manifest's or the estimates), else the task's."""
        return [self.known_sigma] * batch if noise_sigma is None else [float(s) for s in noise_sigma]

    def baseline_fraction(self, height: int, width: int, params: Mapping[str, Tensor]) -> float:
        """Share of the images of this output size and operator data that the metrics score the baseline on (1.0 =
        all).

        A kind whose baseline is slow on large images returns less, so scoring stays cheap next to
        restoring; which images are picked depends only on their ids (``diffpir_core.runs.scoring``).
        """
        return 1.0


class ConvolutionTaskKind(TaskKind):
    """A kind whose operator is a convolution (deblurring, SR): it has a ``boundary``.

    ``circular`` is the reference's wrap-around model (default in evaluate mode, so published numbers hold);
    ``reflect`` is a camera's frame of a larger scene (default in restore mode): the sampler works on a canvas
    around the frame and the data step leaves the exterior to the prior (docs/operators.md, boundaries).
    """

    boundary: Literal[BOUNDARIES] = Field(  # type: ignore[valid-type]
        "circular",
        description="circular (wrap-around, evaluate default) | reflect (camera frame of a larger scene, restore "
        "default; evaluate mode mirrors the ground truth to synthesise it); ddrm needs circular",
    )

    def apply_mode_defaults(self, mode: str) -> None:
        """Restore mode's default boundary is the camera's (``reflect``) unless the job sets one."""
        if mode == "restore" and "boundary" not in self.model_fields_set:
            self.boundary = "reflect"

    def identity(self) -> dict[str, Any]:
        """The fields, without ``boundary`` when it is ``circular``: jobs from before the field keep their hash."""
        fields = self.model_dump(mode="json")
        if fields["boundary"] == "circular":
            del fields["boundary"]
        return fields


def per_image_data(
    uri: str,
    ids: Sequence[str],
    column: str,
    extensions: Any,
    storage_options: Mapping[str, Any],
    decode: Any,
    default_sigma: float | str,
) -> tuple[dict[str, np.ndarray], GivenData]:
    """Shared part of the kinds with per-image files (``task.kernel`` / ``task.mask`` naming a folder or manifest):
    each image's file decoded by ``decode(image_id, uri, bytes) -> array`` (a ``ValueError`` or decode error
    quarantines the image with its message), the manifest's σ per image, and the identity of the files' bytes.
    Returns the decoded arrays of the images kept and a :class:`GivenData` without ``params`` (the kind fills them)."""
    from diffpir_core.io.degradation_files import per_image_digest, per_image_files

    files = per_image_files(uri, ids, column, extensions, storage_options)
    decoded: dict[str, np.ndarray] = {}
    quarantined: dict[str, str] = {}
    for image_id in ids:
        entry = files[image_id]
        if entry.reason is not None:
            quarantined[image_id] = entry.reason
            continue
        try:
            decoded[image_id] = decode(image_id, entry.uri, entry.data)
        except Exception as err:  # any undecodable file quarantines its image, whatever the decoder raised
            message = str(err)
            quarantined[image_id] = message if entry.uri in message else f"cannot decode {entry.uri}: {message}"
    sigmas = [files[i].noise_sigma if files[i].noise_sigma is not None else default_sigma for i in ids]
    per_image_sigma = sigmas if any(s != default_sigma for s in sigmas) else None
    return decoded, GivenData({}, quarantined, per_image_sigma, per_image_digest(files))
