"""Inpainting with a known mask (1 = known pixel): a generated box or random mask per image, or a mask file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from diffpir_core.io.decode import IMAGE_EXTENSIONS
from diffpir_core.io.degradation_files import (
    check_known_pixels,
    check_manifest,
    file_digest,
    is_manifest,
    is_per_image,
    load_mask,
    mask_from_bytes,
)
from diffpir_core.metrics import uint8_to_float
from diffpir_core.operators import Inpainting, Operator, random_box_mask, random_mask
from diffpir_core.task_kinds.base import (
    SIGMA_DESCRIPTION,
    ArraySpec,
    GivenData,
    NoiseLevel,
    Presets,
    TaskKind,
    method_presets,
    per_image_data,
)
from diffpir_core.task_kinds.baselines import biharmonic_inpaint

GENERATED_MASKS = ("box", "random")


HOLE_BUDGET = 256 * 256 // 2
"""Unknown pixels per image up to which the biharmonic baseline is scored on every image."""


class InpaintTask(TaskKind):
    """y = m ⊙ x (+ AWGN, none by default as the reference)."""

    kind: Literal["inpaint"] = "inpaint"
    noise_sigma: NoiseLevel = Field(0.0, description=SIGMA_DESCRIPTION)
    mask: str = Field(
        "box",
        description="box | random | URI of a mask image (white = known); restore mode also: a folder/prefix with one "
        "mask image per image id, or a CSV/Parquet manifest (id, mask_uri, noise_sigma)",
    )
    mask_ratio: float = Field(0.5, gt=0.0, lt=1.0, description="random masks: fraction of missing pixels")
    box_fraction: float = Field(0.5, gt=0.0, lt=1.0, description="box masks: box side / image side")

    PRESETS: ClassVar[Presets] = method_presets(
        diffpir={"lambda_": 1.0, "zeta": 1.0, "iter_num": 20},  # the DiffPIR reference's inpainting run
        dps={"scale": 0.5},  # DPS inpainting_config.yaml
        dpir={
            "iter_num": 40,
            "sigma_end_floor": 0.6 / 255,
        },  # DPIR's mask-based demosaicking script (main_dpir_demosaick.py)
    )
    BASELINE: ClassVar[str] = "biharmonic"

    def label(self) -> str:
        return f"inpaint-{self.mask if self.mask in GENERATED_MASKS else 'file'}"

    def check_mode(self, mode: str) -> None:
        super().check_mode(mode)
        if mode == "evaluate" and is_manifest(self.mask):
            raise ValueError(
                "task.mask: a manifest of per-image masks is for mode restore; evaluate mode takes one file"
            )
        if mode == "restore" and self.mask in GENERATED_MASKS:
            raise ValueError(
                "task.mask: mode restore needs the real mask of the images (a file URI), "
                f"not a generated {self.mask!r} mask"
            )

    def content_identity(self, storage_options: Mapping[str, Any]) -> dict[str, str]:
        if self.mask in GENERATED_MASKS:
            return {}
        if is_per_image(self.mask, storage_options):  # the files' bytes enter each shard's record identity
            if is_manifest(self.mask):
                check_manifest(self.mask, "mask_uri", storage_options)
            return {"mask": f"per-image:{self.mask}"}
        return {"mask": file_digest(self.mask, storage_options)}

    def measurement_arrays(self, height: int, width: int, storage_options: Mapping[str, Any]) -> dict[str, ArraySpec]:
        return {"y": ((height, width, 3), "float32"), "mask": ((height, width), "uint8")}

    def _mask_file(self, height: int, width: int, storage_options: Mapping[str, Any]) -> np.ndarray:
        mask = load_mask(self.mask, storage_options)
        if mask.shape != (height, width):
            raise ValueError(
                f"task.mask {self.mask} is {mask.shape[1]}x{mask.shape[0]} but the images are "
                f"{width}x{height}; give a mask of the image size"
            )
        return check_known_pixels(self.mask, mask)

    def _make_mask(self, height: int, width: int, seed: int, storage_options: Mapping[str, Any]) -> Tensor:
        if self.mask == "random":
            return random_mask(height, width, seed=seed, known_fraction=1.0 - self.mask_ratio)
        if self.mask == "box":
            side = max(1, round(min(height, width) * self.box_fraction))
            margin = (height // 16, width // 16)
            return random_box_mask(height, width, seed=seed, length=(side, side + 1), margin=margin)
        return torch.from_numpy(self._mask_file(height, width, storage_options).astype(np.float32))

    def degrade(
        self, truth_u8: np.ndarray, seeds: list[int], storage_options: Mapping[str, Any]
    ) -> tuple[Tensor, dict[str, np.ndarray]]:
        height, width = truth_u8.shape[1:3]
        masks = torch.stack([self._make_mask(height, width, s, storage_options) for s in seeds])
        return uint8_to_float(truth_u8) * masks[:, None], {"mask": masks.numpy().astype(np.uint8)}

    def params_from_arrays(self, arrays: Mapping[str, np.ndarray]) -> dict[str, Tensor]:
        return {"mask": torch.from_numpy(arrays["mask"].astype(np.float32))[:, None]}

    def given_params(self, image_shape: tuple[int, int, int], storage_options: Mapping[str, Any]) -> dict[str, Tensor]:
        height, width = image_shape[1:3]
        return {"mask": torch.from_numpy(self._mask_file(height, width, storage_options).astype(np.float32))}

    def given(
        self, ids: Sequence[str], image_shape: tuple[int, int, int], storage_options: Mapping[str, Any]
    ) -> GivenData:
        """One mask per image from a folder or manifest (a mask not of its image's size, or with no known pixel,
        quarantines its image), else the file's."""
        if not is_per_image(self.mask, storage_options):
            return super().given(ids, image_shape, storage_options)
        height, width = image_shape[1:3]

        def decode(image_id: str, uri: str, data: bytes) -> np.ndarray:
            mask = mask_from_bytes(data)
            if mask.shape != (height, width):
                raise ValueError(f"mask {uri} is {mask.shape[1]}x{mask.shape[0]} but the image is {width}x{height}")
            return check_known_pixels(uri, mask)

        masks, given = per_image_data(
            self.mask, ids, "mask_uri", IMAGE_EXTENSIONS, storage_options, decode, self.noise_sigma
        )
        known = np.ones((height, width), dtype=np.uint8)  # placeholder of quarantined images (never restored)
        stacked = np.stack([masks.get(image_id, known) for image_id in ids]).astype(np.float32)
        given.params = {"mask": torch.from_numpy(stacked)[:, None]}
        return given

    def pad_params(self, params: dict[str, Tensor], pad_h: int, pad_w: int) -> dict[str, Tensor]:
        """Padded pixels are unknown (mask 0): the prior fills them, the measurement never constrains them."""
        if pad_h == 0 and pad_w == 0:
            return params
        return {**params, "mask": torch.nn.functional.pad(params["mask"], (0, pad_w, 0, pad_h), value=0.0)}

    def operator(self, params: Mapping[str, Tensor]) -> Operator:
        return Inpainting(params["mask"])

    def unknown_region(self, params: Mapping[str, Tensor], index: int) -> np.ndarray | None:
        """The holes of image ``index``'s mask."""
        mask = params["mask"]
        return (mask[index, 0] if mask.dim() == 4 else mask).numpy() < 0.5

    def baseline_fraction(self, height: int, width: int, params: Mapping[str, Tensor]) -> float:
        """Every image whose unknown region is up to :data:`HOLE_BUDGET` pixels (a 256² image half unknown), fewer
        above: the biharmonic solve grows with the hole, not the image (one CPU thread: 0.35 s for a 256² image half
        unknown, 3–4 s at 512², 17 s at 1024²), so the share falls as (budget / hole)^1.5 and the mean cost stays
        under about 0.5 s per image; a box hole in a large photo costs a fraction of a second and is always scored."""
        mask = params["mask"]
        images = mask.shape[0] if mask.dim() == 4 else 1
        hole = float((mask < 0.5).sum()) / images
        return min(1.0, (HOLE_BUDGET / max(hole, 1.0)) ** 1.5)

    def baseline(self, y: Tensor, params: Mapping[str, Tensor], noise_sigma: Sequence[float] | None = None) -> Tensor:
        masks = params["mask"]
        masks = masks[:, 0] if masks.dim() == 4 else masks[None].expand(y.shape[0], -1, -1)
        return biharmonic_inpaint(y, masks)
