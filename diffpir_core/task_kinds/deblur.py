"""Deblurring with a known kernel: a generated Gaussian or motion kernel per image, or a kernel file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import Tensor

from diffpir_core.io.decode import IMAGE_EXTENSIONS
from diffpir_core.io.degradation_files import (
    check_kernel_fits,
    check_manifest,
    file_digest,
    is_manifest,
    is_per_image,
    kernel_from_bytes,
    load_kernel,
    pad_kernels,
)
from diffpir_core.operators import Blur, Operator, blur_uint8, gaussian_kernel, motion_kernel, reference_gaussian_std
from diffpir_core.task_kinds.base import (
    ArraySpec,
    ConvolutionTaskKind,
    GivenData,
    Presets,
    method_presets,
    per_image_data,
)
from diffpir_core.task_kinds.baselines import wiener_deblur

GENERATED_KERNELS = ("gaussian", "motion")
KERNEL_EXTENSIONS = frozenset({".npy", *IMAGE_EXTENSIONS})


class DeblurTask(ConvolutionTaskKind):
    """Blur with a per-image kernel (+ AWGN); evaluate mode blurs in uint8 as the reference (wrap-around, or
    mirrored with ``boundary: reflect``)."""

    kind: Literal["deblur"] = "deblur"
    kernel: str = Field(
        "gaussian",
        description="gaussian | motion | URI of a kernel (.npy or grayscale image); restore mode also: a folder/"
        "prefix with one kernel per image id, or a CSV/Parquet manifest (id, kernel_uri, noise_sigma)",
    )
    kernel_size: int = Field(61, ge=3, le=255, description="size of generated kernels (odd)")
    kernel_std: float | None = Field(
        None, gt=0.0, description="Gaussian std; null = the reference's per-image std 3·(1+2U)"
    )

    PRESETS: ClassVar[Presets] = method_presets(
        diffpir={"lambda_": 7.0, "zeta": 0.3, "iter_num": 100},  # the DiffPIR reference's deblurring run
        dps={"scale": 0.3},  # DPS gaussian_deblur_config.yaml and motion_deblur_config.yaml
        dpir={"iter_num": 8},  # DPIR main_dpir_deblur.py
    )
    BASELINE: ClassVar[str] = "wiener"

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"must be odd so the kernel has a centre pixel, got {v}")
        return v

    def label(self) -> str:
        return f"deblur-{self.kernel if self.kernel in GENERATED_KERNELS else 'file'}"

    def check_mode(self, mode: str) -> None:
        super().check_mode(mode)
        if mode == "evaluate" and is_manifest(self.kernel):
            raise ValueError(
                "task.kernel: a manifest of per-image kernels is for mode restore; evaluate mode takes one file"
            )
        if mode == "restore" and self.kernel in GENERATED_KERNELS:
            raise ValueError(
                "task.kernel: mode restore needs the real blur kernel of the images (a file URI), "
                f"not a generated {self.kernel!r} kernel"
            )

    def content_identity(self, storage_options: Mapping[str, Any]) -> dict[str, str]:
        if self.kernel in GENERATED_KERNELS:
            return {}
        if is_per_image(self.kernel, storage_options):  # the files' bytes enter each shard's record identity
            if is_manifest(self.kernel):
                check_manifest(self.kernel, "kernel_uri", storage_options)
            return {"kernel": f"per-image:{self.kernel}"}
        return {"kernel": file_digest(self.kernel, storage_options)}

    def _kernel_size(self, storage_options: Mapping[str, Any]) -> int:
        if self.kernel in GENERATED_KERNELS:
            return self.kernel_size
        return load_kernel(self.kernel, storage_options).shape[0]

    def measurement_arrays(self, height: int, width: int, storage_options: Mapping[str, Any]) -> dict[str, ArraySpec]:
        size = self._kernel_size(storage_options)
        return {"y": ((height, width, 3), "float32"), "kernel": ((size, size), "float32")}

    def _make_kernel(self, seed: int, storage_options: Mapping[str, Any]) -> Tensor:
        if self.kernel == "gaussian":
            std = self.kernel_std if self.kernel_std is not None else reference_gaussian_std(seed)
            return gaussian_kernel(self.kernel_size, std)
        if self.kernel == "motion":
            return motion_kernel(seed, size=self.kernel_size)
        return torch.from_numpy(load_kernel(self.kernel, storage_options))

    def degrade(
        self, truth_u8: np.ndarray, seeds: list[int], storage_options: Mapping[str, Any]
    ) -> tuple[Tensor, dict[str, np.ndarray]]:
        kernels = torch.stack([self._make_kernel(s, storage_options) for s in seeds])
        y = blur_uint8(truth_u8, kernels, mode="wrap" if self.boundary == "circular" else "reflect")
        y = y.permute(0, 3, 1, 2).float() / 255.0
        return y, {"kernel": kernels.numpy().astype(np.float32)}

    def params_from_arrays(self, arrays: Mapping[str, np.ndarray]) -> dict[str, Tensor]:
        return {"kernel": torch.from_numpy(np.ascontiguousarray(arrays["kernel"], dtype=np.float32))}

    def given_params(self, image_shape: tuple[int, int, int], storage_options: Mapping[str, Any]) -> dict[str, Tensor]:
        return {"kernel": torch.from_numpy(load_kernel(self.kernel, storage_options))}

    def given(
        self, ids: Sequence[str], image_shape: tuple[int, int, int], storage_options: Mapping[str, Any]
    ) -> GivenData:
        """One kernel per image from a folder or manifest (zero-padded, centred, to one odd size), else the file's; a
        kernel that is unreadable, degenerate or larger than its image quarantines that image alone."""
        if not is_per_image(self.kernel, storage_options):
            return super().given(ids, image_shape, storage_options)
        height, width = image_shape[1:3]
        kernels, given = per_image_data(
            self.kernel,
            ids,
            "kernel_uri",
            KERNEL_EXTENSIONS,
            storage_options,
            lambda image_id, uri, data: check_kernel_fits(uri, kernel_from_bytes(uri, data), height, width),
            self.noise_sigma,
        )
        delta = np.ones((1, 1), dtype=np.float32)  # placeholder of quarantined images (never restored)
        padded = pad_kernels([kernels.get(image_id, delta) for image_id in ids])
        given.params = {"kernel": torch.from_numpy(padded)}
        return given

    def operator(self, params: Mapping[str, Tensor]) -> Operator:
        return Blur(params["kernel"], boundary=self.boundary)

    def baseline(self, y: Tensor, params: Mapping[str, Tensor], noise_sigma: Sequence[float] | None = None) -> Tensor:
        kernels = params["kernel"]
        if kernels.dim() == 2:
            kernels = kernels[None].expand(y.shape[0], -1, -1)
        return wiener_deblur(y, kernels, self.sigmas(y.shape[0], noise_sigma), boundary=self.boundary)
