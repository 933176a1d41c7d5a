"""Gaussian denoising: y = x + n, the identity operator (its closed-form data step is a weighted mean).

The fourth task kind, and the example of how small a kind is (this one file): the data step is the
inpainting one with every pixel known, x_p = (P(y) + ρ x̃0) / (1 + ρ), and the sampler starts from y
at the timestep whose noise level matches 2σ, as for deblurring (docs/algorithm.md §4). The reference has no denoising
run; the preset takes its deblurring values (λ = 7, ζ = 0.3, 100 steps).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from scipy.signal import wiener
from torch import Tensor

from diffpir_core.metrics import uint8_to_float
from diffpir_core.operators import Operator
from diffpir_core.operators.base import check_images
from diffpir_core.operators.inpaint import InpaintDataTerm
from diffpir_core.task_kinds.base import SIGMA_DESCRIPTION, Presets, TaskKind, method_presets


class Identity(Operator):
    """A = I: the measurement is the image itself (plus noise)."""

    init_is_noisy_measurement = True

    @property
    def batch_size(self) -> int | None:
        return None

    def A(self, x: Tensor) -> Tensor:
        check_images(x, "x")
        return x

    def A_adjoint(self, y: Tensor) -> Tensor:
        check_images(y, "y")
        return y

    def prepare(self, y: Tensor) -> InpaintDataTerm:
        check_images(y, "y")
        return InpaintDataTerm(y_pm=y * 2 - 1, mask=torch.ones_like(y[:, :1]))

    def init_image(self, y: Tensor) -> Tensor:
        check_images(y, "y")
        return y


class DenoiseTask(TaskKind):
    """AWGN removal at a known noise level; baseline: adaptive (local 5×5) Wiener filtering with the known σ."""

    kind: Literal["denoise"] = "denoise"
    noise_sigma: Annotated[float, Field(gt=0.0, lt=1.0)] | Literal["auto"] = Field(0.1, description=SIGMA_DESCRIPTION)

    PRESETS: ClassVar[Presets] = method_presets(
        diffpir={"lambda_": 7.0, "zeta": 0.3, "iter_num": 100},  # as deblurring (no denoising run in the reference)
    )
    BASELINE: ClassVar[str] = "local wiener"

    def degrade(
        self, truth_u8: np.ndarray, seeds: list[int], storage_options: Mapping[str, Any]
    ) -> tuple[Tensor, dict[str, np.ndarray]]:
        return uint8_to_float(truth_u8), {}

    def operator(self, params: Mapping[str, Tensor]) -> Operator:
        return Identity()

    def baseline(self, y: Tensor, params: Mapping[str, Tensor], noise_sigma: Sequence[float] | None = None) -> Tensor:
        images = y.double().numpy()
        sigmas = self.sigmas(len(images), noise_sigma)
        out = np.stack(
            [[wiener(channel, 5, s**2) for channel in image] for image, s in zip(images, sigmas, strict=True)]
        )
        return torch.from_numpy(out).float().clamp(0, 1)
