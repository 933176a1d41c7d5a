"""The decode policy: formats, bit depths, colour modes, orientation, and every way a file can be bad."""

import io
import struct
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps

from diffpir_core.io import ImageDecodeError, decode_image

RNG = np.random.default_rng(3)
RGB = RNG.integers(0, 256, (12, 20, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("fmt", "name", "kwargs"),
    [
        ("PNG", "x.png", {}),
        ("BMP", "x.BMP", {}),
        ("WEBP", "x.webp", {"lossless": True}),
        ("TIFF", "x.tif", {}),
        ("TIFF", "x.tiff", {"compression": "tiff_lzw"}),
    ],
)
def test_lossless_formats_decode_exactly(encode_image, fmt, name, kwargs):
    decoded = decode_image(encode_image(RGB, fmt, **kwargs), name)
    np.testing.assert_array_equal(decoded.pixels, RGB)
    assert decoded.source_mode == "RGB"


def test_jpeg_matches_pillow_decode(encode_image):
    data = encode_image(RGB, "JPEG", quality=90)
    decoded = decode_image(data, "photo.JPEG")
    np.testing.assert_array_equal(decoded.pixels, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def test_sha256_is_of_the_source_bytes(encode_image):
    import hashlib

    data = encode_image(RGB)
    assert decode_image(data, "x.png").sha256 == hashlib.sha256(data).hexdigest()


def test_16bit_tiff_gray_and_rgb_scale_by_257():
    values = np.array([[0, 257, 1000, 65535], [128, 129, 32767, 65406]], dtype=np.uint16)
    expected = np.array([[0, 1, 4, 255], [0, 1, 127, 254]], dtype=np.uint8)
    for array in (values, np.stack([values, values[::-1], values], axis=-1)):
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, array)
        decoded = decode_image(buffer.getvalue(), "deep.tif")
        want = (
            expected[:, :, None].repeat(3, axis=2)
            if array.ndim == 2
            else np.stack([expected, expected[::-1], expected], -1)
        )
        np.testing.assert_array_equal(decoded.pixels, want)
        assert decoded.source_mode.startswith("tiff:uint16")


def test_16bit_png_scales_like_tiff(encode_image):
    values = np.array([[0, 257, 1000, 65535]], dtype=np.uint16)
    decoded = decode_image(encode_image(values), "deep.png")
    assert decoded.source_mode.startswith("I;16")
    np.testing.assert_array_equal(decoded.pixels[0, :, 0], [0, 1, 4, 255])


def test_16bit_colour_png_is_flagged():
    rows = b"".join(b"\x00" + np.array([[0, 257, 1000], [65535, 384, 32767]], dtype=">u2").tobytes() for _ in range(2))
    header = struct.pack(">IIBBBBB", 2, 2, 16, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    decoded = decode_image(png, "rgb16.png")
    assert decoded.source_mode == "RGB;16"
    np.testing.assert_array_equal(decoded.pixels[0], [[0, 1, 3], [255, 1, 127]])  # Pillow's v >> 8


def test_grayscale_is_replicated(encode_image):
    gray = RGB[:, :, 0]
    decoded = decode_image(encode_image(gray), "g.png")
    assert decoded.source_mode == "L"
    np.testing.assert_array_equal(decoded.pixels, gray[:, :, None].repeat(3, axis=2))


def test_palette_expands_through_palette(encode_image):
    palette_image = Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    decoded = decode_image(encode_image(palette_image), "p.png")
    assert decoded.source_mode == "P"
    np.testing.assert_array_equal(decoded.pixels, np.asarray(palette_image.convert("RGB")))


def test_alpha_is_composited_over_white(encode_image):
    rgba = np.zeros((1, 3, 4), dtype=np.uint8)
    rgba[0, :, :3] = [10, 200, 40]
    rgba[0, :, 3] = [0, 255, 128]
    decoded = decode_image(encode_image(rgba), "a.png")
    assert decoded.source_mode == "RGBA"
    blend = np.round(np.array([10, 200, 40]) * 128 / 255 + 255 * (1 - 128 / 255))
    np.testing.assert_array_equal(decoded.pixels[0], [[255, 255, 255], [10, 200, 40], blend])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(encode_image, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode_image(RGB, "JPEG", quality=95, exif=exif.tobytes())
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    decoded = decode_image(data, "o.jpg").pixels
    assert decoded.shape == ((12, 20, 3) if orientation < 5 else (20, 12, 3))
    np.testing.assert_array_equal(decoded, upright)


def _with_png_header_size(data: bytes, width: int, height: int) -> bytes:
    """The PNG with its IHDR width/height replaced (CRC fixed): a tiny file that declares a huge image."""
    ihdr = b"IHDR" + struct.pack(">II", width, height) + data[24:29]
    return data[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]


def test_decompression_bomb_is_rejected_from_the_header(encode_image):
    for side, message in ((8000, "8000x8000 = 64000000 pixels exceeds max_pixels"), (50_000, "2500000000 pixels")):
        bomb = _with_png_header_size(encode_image(RGB), side, side)
        assert len(bomb) < 2000
        with pytest.raises(ImageDecodeError, match=f"decompression bomb guard: .*{message}"):
            decode_image(bomb, "bomb.png")
    with pytest.raises(ImageDecodeError, match="max_pixels=100"):
        decode_image(encode_image(RGB), "x.png", max_pixels=100)


def test_bad_files_raise_with_reasons(encode_image):
    png, jpeg = encode_image(RGB), encode_image(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8), "JPEG")
    idat = png.index(b"IDAT") + 4
    cases = {
        "empty file": (b"", "z.png"),
        "not an image": (b"just some text\n", "t.png"),
        "wrong extension: the content is JPEG": (jpeg, "j.png"),
        "corrupt or truncated": (jpeg[: len(jpeg) * 3 // 4], "cut.jpg"),
        "corrupt or truncated image data": (png[:idat] + b"\xff\xff" + png[idat + 2 :], "c.png"),
        "unsupported extension": (png, "x.gif"),
    }
    for reason, (data, name) in cases.items():
        with pytest.raises(ImageDecodeError, match=reason):
            decode_image(data, name)
