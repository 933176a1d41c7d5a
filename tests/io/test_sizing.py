"""Size policies keep the content's aspect ratio and say what they do to the pixels."""

import numpy as np
import pytest

from diffpir_core.io import SizePolicy, apply_size_policy
from diffpir_core.io.sizing import validate_size_options

IMAGE = np.arange(10 * 14 * 3, dtype=np.int64).reshape(10, 14, 3).astype(np.uint8)


def test_native_returns_the_pixels_untouched():
    assert apply_size_policy(IMAGE, SizePolicy.NATIVE) is IMAGE


def test_modcrop_cuts_bottom_right_to_the_multiple():
    out = apply_size_policy(IMAGE, SizePolicy.MODCROP, multiple=4)
    np.testing.assert_array_equal(out, IMAGE[:8, :12])
    with pytest.raises(ValueError, match="smaller than multiple=16"):
        apply_size_policy(IMAGE, SizePolicy.MODCROP, multiple=16)


def test_center_crop_takes_the_central_window():
    np.testing.assert_array_equal(apply_size_policy(IMAGE, SizePolicy.CENTER_CROP, size=6), IMAGE[2:8, 4:10])


def test_center_crop_reflect_pads_small_sides():
    out = apply_size_policy(IMAGE, SizePolicy.CENTER_CROP, size=12)
    assert out.shape == (12, 12, 3)
    np.testing.assert_array_equal(out[1:11], IMAGE[:, 1:13])  # rows 0 and 11 are reflections
    np.testing.assert_array_equal(out[0], IMAGE[1, 1:13])


def test_resize_scales_the_shorter_side_then_crops():
    gradient = np.repeat(np.linspace(0, 255, 40).astype(np.uint8)[None, :, None], 20, axis=0).repeat(3, axis=2)
    out = apply_size_policy(gradient, SizePolicy.RESIZE, size=10)  # 20x40 -> 10x20 -> central 10x10
    assert out.shape == (10, 10, 3)
    assert abs(int(out[5, 0, 0]) - int(gradient[0, 10, 0])) <= 8  # aspect kept: column 0 of the crop is x=10 of 40


def test_options_are_validated():
    with pytest.raises(ValueError, match="needs a positive size"):
        validate_size_options(SizePolicy.RESIZE, None, 1)
    with pytest.raises(ValueError, match="not a multiple"):
        validate_size_options(SizePolicy.CENTER_CROP, 100, 8)
