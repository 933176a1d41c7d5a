"""Decoding image files into RGB ``uint8`` arrays by one documented policy (see ``docs/store-layout.md``).

Policy, in order:

1. The header is parsed first. The file's format must match its extension (a JPEG named ``.png`` is rejected), and
   its pixel count must not exceed ``max_pixels`` (decompression-bomb guard, checked before any pixel is decoded).
2. Pixels are decoded (first frame/page only). TIFFs with more than 8 bits per sample are decoded with ``tifffile``
   so that 16-bit data is converted by the rule below rather than Pillow's truncation.
3. Sample values become ``uint8``: 16-bit (and Pillow's 32-bit ``I`` mode) values ``v`` map to ``round(v / 257)``
   (0 -> 0, 65535 -> 255, linear); floating-point values are taken as [0, 1], clipped and scaled by 255.
   Exception: 16-bit *colour* PNGs are reduced by Pillow itself to ``v >> 8`` (at most 1 below ``round(v / 257)``);
   their ``source_mode`` is ``RGB;16`` / ``RGBA;16``.
4. Channels become RGB: grayscale is replicated; palette images are expanded through their palette; CMYK/YCbCr/LAB
   are converted by Pillow; an alpha channel (RGBA, LA, palette transparency) is composited over white.
5. The EXIF/TIFF orientation tag is applied, so the stored image is upright as viewers show it.

Every failure raises :class:`ImageDecodeError` with a reason a person can act on; the ingest quarantines the file.
"""

import hashlib
import io
from dataclasses import dataclass

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

# Formats Pillow may report for each extension we ingest (MPO: JPEGs from cameras with an embedded preview).
FORMATS_BY_EXTENSION: dict[str, frozenset[str]] = {
    ".png": frozenset({"PNG"}),
    ".jpg": frozenset({"JPEG", "MPO"}),
    ".jpeg": frozenset({"JPEG", "MPO"}),
    ".tif": frozenset({"TIFF"}),
    ".tiff": frozenset({"TIFF"}),
    ".webp": frozenset({"WEBP"}),
    ".bmp": frozenset({"BMP", "DIB"}),
}
IMAGE_EXTENSIONS: frozenset[str] = frozenset(FORMATS_BY_EXTENSION)

DEFAULT_MAX_PIXELS = 40_000_000
_ORIENTATION_TAG = 0x0112
_BITS_PER_SAMPLE_TAG = 258
_PILLOW_RGB_MODES = {"CMYK", "YCbCr", "LAB", "HSV", "RGBX"}


class ImageDecodeError(ValueError):
    """A file that cannot become an RGB image under our policy; ``str(err)`` is the quarantine reason."""


@dataclass(frozen=True)
class DecodedImage:
    """An upright RGB ``uint8`` image plus what it was before conversion."""

    pixels: np.ndarray  # (H, W, 3) uint8
    source_mode: str  # Pillow mode of the file (e.g. "RGB", "I;16", "P", "RGBA"), or "tiff:<dtype>x<channels>"
    sha256: str  # of the file's bytes


def decode_image(data: bytes, name: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode the bytes of the file ``name`` into an upright RGB ``uint8`` image (policy in the module docstring)."""
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    extension = _extension(name)
    allowed = FORMATS_BY_EXTENSION.get(extension)
    if allowed is None:
        raise ImageDecodeError(f"unsupported extension {extension!r}; supported: {sorted(IMAGE_EXTENSIONS)}")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:  # Pillow's own hard limit (2 x Image.MAX_IMAGE_PIXELS)
        raise ImageDecodeError(f"decompression bomb guard: {err}") from err
    except UnidentifiedImageError as err:
        raise ImageDecodeError(f"not an image: the content is not a recognised {extension} file") from err
    except Exception as err:  # Pillow raises many types for garbage input; every one means "not an image".
        raise ImageDecodeError(f"unreadable image header ({type(err).__name__}: {err})") from err
    with image:
        if image.format not in allowed:
            raise ImageDecodeError(
                f"wrong extension: the content is {image.format} but the name ends in {extension}; "
                "rename the file to match its content"
            )
        pixels = image.width * image.height
        if pixels > max_pixels:
            raise ImageDecodeError(
                f"decompression bomb guard: {image.width}x{image.height} = {pixels} pixels exceeds "
                f"max_pixels={max_pixels}; raise max_pixels if the image is genuine"
            )
        try:
            orientation = int(image.getexif().get(_ORIENTATION_TAG, 1))
            array, mode = _decode_pixels(image, data)
        except ImageDecodeError:
            raise
        except Exception as err:  # truncated or corrupt data surfaces only when pixels are decoded.
            raise ImageDecodeError(f"corrupt or truncated image data ({type(err).__name__}: {err})") from err
    rgb = apply_orientation(to_rgb_uint8(array), orientation)
    return DecodedImage(pixels=np.ascontiguousarray(rgb), source_mode=mode, sha256=hashlib.sha256(data).hexdigest())


def _extension(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > name.rfind("/") else ""


def _decode_pixels(image: Image.Image, data: bytes) -> tuple[np.ndarray, str]:
    """The first frame as a numpy array with 1-4 channels, before dtype/colour conversion."""
    if image.format == "TIFF" and _max_bits_per_sample(image) > 8:
        array = tifffile.imread(io.BytesIO(data), key=0)
        channels = 1 if array.ndim == 2 else array.shape[-1]
        return array, f"tiff:{array.dtype}x{channels}"
    mode = image.mode
    image.load()
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
    elif mode == "1":
        image = image.convert("L")
    elif mode in _PILLOW_RGB_MODES:
        image = image.convert("RGB")
    if image.format == "PNG" and mode in ("RGB", "RGBA") and data[24] == 16:
        mode += ";16"  # Pillow itself reduced the 16-bit colour samples to 8 bits (v >> 8); see the module docstring
    return np.asarray(image), mode


def _max_bits_per_sample(image: Image.Image) -> int:
    bits = image.tag_v2.get(_BITS_PER_SAMPLE_TAG, 8)  # type: ignore[attr-defined]
    return max(bits) if isinstance(bits, tuple) else int(bits)


def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Convert an (H, W), (H, W, 1|2|3|4) array of any supported dtype to (H, W, 3) ``uint8`` by the policy."""
    values = _to_uint8(array)
    if values.ndim == 2:
        values = values[:, :, None]
    if values.ndim != 3 or values.shape[2] not in (1, 2, 3, 4):
        raise ImageDecodeError(f"unsupported pixel layout {array.shape}; expected (H, W) or (H, W, 1-4)")
    channels = values.shape[2]
    colour = values[:, :, :1].repeat(3, axis=2) if channels <= 2 else values[:, :, :3]
    if channels in (2, 4):
        colour = _composite_over_white(colour, values[:, :, -1])
    return colour


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        return np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer) and array.dtype.itemsize <= 4:
        return np.round(np.clip(array, 0, 65535) / 257.0).astype(np.uint8)
    raise ImageDecodeError(f"unsupported sample type {array.dtype}")


def _composite_over_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    weight = alpha.astype(np.float32)[:, :, None] / 255.0
    blended = colour.astype(np.float32) * weight + 255.0 * (1.0 - weight)
    return np.round(blended).astype(np.uint8)


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an (H, W, ...) array upright for an EXIF orientation value 1-8 (same result as Pillow's exif_transpose)."""
    if orientation == 2:
        return image[:, ::-1]
    if orientation == 3:
        return image[::-1, ::-1]
    if orientation == 4:
        return image[::-1]
    if orientation == 5:
        return image.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(image, k=-1)
    if orientation == 7:
        return image[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(image, k=1)
    return image


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) ``uint8`` image (lossless)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()
