"""Degradation operators (forward model, adjoint, closed-form data step) and degradation generators.

Operators act on float (B, 3, H, W) image batches on the [0, 1] scale, with one kernel or mask per
image or one shared by the batch; ``prepare(y).prox(x0, rho)`` works in diffusion space ([-1, 1]).
Generators reproduce the reference's kernels, masks and noise (docs/algorithm.md §6) for any image size, seeded
per image. See docs/operators.md.
"""

from .base import DataTerm, Operator
from .blur import Blur
from .boundary import BOUNDARIES
from .degrade import blur_uint8
from .inpaint import Inpainting
from .kernels import (
    gaussian_kernel,
    motion_kernel,
    reference_gaussian_kernel,
    reference_gaussian_std,
    reference_motion_kernel,
    reference_seed,
)
from .masks import box_mask, mask_from_image, random_box_mask, random_mask
from .noise import add_noise, estimate_noise_sigma
from .resize import bicubic_upsample, imresize
from .sr import SuperResolution
from .sr_kernels import bicubic_kernel
from .svd import FourierSVD, MaskSVD, NoSVDError, OperatorSVD

__all__ = [
    "BOUNDARIES",
    "Blur",
    "DataTerm",
    "FourierSVD",
    "Inpainting",
    "MaskSVD",
    "NoSVDError",
    "Operator",
    "OperatorSVD",
    "SuperResolution",
    "add_noise",
    "bicubic_kernel",
    "bicubic_upsample",
    "blur_uint8",
    "box_mask",
    "estimate_noise_sigma",
    "gaussian_kernel",
    "imresize",
    "mask_from_image",
    "motion_kernel",
    "random_box_mask",
    "random_mask",
    "reference_gaussian_kernel",
    "reference_gaussian_std",
    "reference_motion_kernel",
    "reference_seed",
]
