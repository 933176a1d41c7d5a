"""Generators against the reference: kernels, masks, resize and the case measurements
(docs/algorithm.md §10.3.2–§10.3.3)."""

import torch

from diffpir_core.operators import (
    add_noise,
    blur_uint8,
    imresize,
    random_box_mask,
    random_mask,
    reference_gaussian_kernel,
    reference_gaussian_std,
    reference_motion_kernel,
    reference_seed,
)


def test_gaussian_kernels_and_stds_bitwise(components):
    for index in range(5):
        assert reference_gaussian_std(reference_seed(index)) == components["kernels_gaussian_std"][index]
        assert torch.equal(reference_gaussian_kernel(index), components["kernels_gaussian_61"][index])


def test_motion_kernels_bitwise(components):
    # Bitwise with the Pillow of the reference run (13.0.0); other Pillow versions may move a few bits.
    for index in range(5):
        assert torch.equal(reference_motion_kernel(index), components["kernels_motion_61"][index]), index


def test_masks_bitwise(components, hwc_to_batch):
    def expected(key):
        return hwc_to_batch(components[key])[0, 0]

    assert torch.equal(random_box_mask(), expected("mask_box_256_seed0"))
    assert torch.equal(random_mask(), expected("mask_random_256_seed0"))
    assert torch.equal(random_box_mask(64, length=(32, 33), margin=(4, 4)), expected("mask_box_64"))
    assert torch.equal(random_mask(64), expected("mask_random_64"))


def test_imresize_matches_reference_port(components, hwc_to_batch, uint8_to_float):
    gt = uint8_to_float(components["gt_64"])
    for scale, key in ((1 / 4, "imresize_np_gt64_x1/4"), (1 / 2, "imresize_np_gt64_x1/2")):
        assert (imresize(gt, scale) - hwc_to_batch(components[key])).abs().max() <= 1e-6


def test_case_measurement_rebuilt_from_gt(reference_case, case_name, uint8_to_float):
    # docs/algorithm.md §10.3.3: y_img_L from gt_uint8, the case's operator and the reference seeds (noise seed 0).
    case = reference_case(case_name)
    task, sigma = case.raw["task"], case.raw["hp"]["noise_level_img"]
    if task == "sr":
        y = add_noise(imresize(case.gt, 1 / case.raw["hp"]["sf"]), sigma, seed=0)
        assert (y - case.y).abs().max() <= 2.4e-7  # the resize's float32 ulps, nothing else
    elif task == "deblur":
        blurred = blur_uint8(case.raw["gt_uint8"], case.raw["op"]["k"])
        y = add_noise(uint8_to_float(blurred), sigma, seed=0)
        assert torch.equal(y, case.y)
    else:
        y = case.operator.A(add_noise(case.gt, sigma, seed=0))
        assert torch.equal(y, case.y)
