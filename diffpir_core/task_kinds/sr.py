"""Super-resolution: y = MATLAB-bicubic downscale by ``scale`` (+ AWGN); data step with our ×scale kernel."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field
from torch import Tensor

from diffpir_core.metrics import uint8_to_float
from diffpir_core.operators import Operator, SuperResolution, imresize
from diffpir_core.operators.sr_kernels import SCALES
from diffpir_core.task_kinds.base import ArraySpec, ConvolutionTaskKind, Presets, method_presets
from diffpir_core.task_kinds.baselines import bicubic_sr

Scale = Literal[SCALES]  # type: ignore[valid-type]  # the scales our SR kernels exist for


class SRTask(ConvolutionTaskKind):
    """Super-resolution ×``scale``; evaluate-mode images must be a multiple of the scale. Evaluate mode degrades
    with MATLAB's imresize (mirrored border) whatever the boundary; ``boundary`` sets the data step's model.

    Preset λ = 7 (ζ = 0.25, 100 steps): the reference sweeps λ = 2…12 and keeps every result, so it has
    no single λ; 7 is the middle of the sweep and the value it runs for deblurring at the same σ, whose
    data step is the same FFT closed form on the same ρ_t scale (docs/algorithm.md §7).
    """

    kind: Literal["sr"] = "sr"
    scale: Scale = Field(4, description=f"upscaling factor, one of {', '.join(map(str, SCALES))}")

    PRESETS: ClassVar[Presets] = method_presets(
        diffpir={"lambda_": 7.0, "zeta": 0.25, "iter_num": 100},  # the DiffPIR reference's SR run
        dps={"scale": 0.3},  # DPS super_resolution_config.yaml
        dpir={"iter_num": 24},  # DPIR main_dpir_sisr.py (σ_N ≥ sf/255: set sigma_end_floor = sf / 255)
    )
    BASELINE: ClassVar[str] = "bicubic"

    def label(self) -> str:
        return f"sr{self.scale}"

    def title(self) -> str:
        return f"sr x{self.scale}, σ={self.sigma_text()}"

    @property
    def output_scale(self) -> int:
        return self.scale

    @property
    def metric_border(self) -> int:
        return self.scale

    def measurement_arrays(self, height: int, width: int, storage_options: Mapping[str, Any]) -> dict[str, ArraySpec]:
        return {"y": ((height // self.scale, width // self.scale, 3), "float32")}

    def degrade(
        self, truth_u8: np.ndarray, seeds: list[int], storage_options: Mapping[str, Any]
    ) -> tuple[Tensor, dict[str, np.ndarray]]:
        height, width = truth_u8.shape[1:3]
        if height % self.scale or width % self.scale:
            raise ValueError(
                f"images of {height}x{width} are not a multiple of the SR scale {self.scale}; "
                f"set ingest.size_policy: modcrop (ingest.multiple a multiple of {self.scale})"
            )
        return imresize(uint8_to_float(truth_u8), 1.0 / self.scale), {}

    def operator(self, params: Mapping[str, Tensor]) -> Operator:
        return SuperResolution(self.scale, boundary=self.boundary)

    def baseline(self, y: Tensor, params: Mapping[str, Tensor], noise_sigma: Sequence[float] | None = None) -> Tensor:
        return bicubic_sr(y, self.scale)
