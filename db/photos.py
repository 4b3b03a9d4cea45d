"""Validate and decode uploaded product photos, which are untrusted input."""

import io
import logging
import struct
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

# Decompression-bomb limit, checked from the header before any pixel is decoded.
# A 40-megapixel photo already decodes to 120 MB of RGB, far more than a goods
# photo needs, so a 50-megapixel upload is rejected.
MAX_PHOTO_PIXELS = 40_000_000

MAX_PHOTO_BYTES = 20 * 1024 * 1024

# Pillow format names accepted on upload. Pillow's JPEG opener also returns MPO
# files (JPEGs with extra frames, which many phone cameras write), and they are
# reported and stored as JPEG.
_OPEN_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

_EXTENSIONS = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "GIF": ".gif",
    "BMP": ".bmp",
    "TIFF": ".tiff",
}

_SUPPORTED_NAMES = "JPEG, PNG, WebP, GIF, BMP or TIFF"

# Pillow raises any of these on malformed input, depending on the format plugin.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
    ArithmeticError,
)

# Pillow's own bomb check against its global MAX_IMAGE_PIXELS (about 89 million
# in Pillow 13) warns above that limit and raises above twice that.
_BOMB_ERRORS = (Image.DecompressionBombError, Image.DecompressionBombWarning)


class PhotoError(ValueError):
    """Raised when a photo is empty, too large, not an image, or corrupt."""


@dataclass(frozen=True)
class PhotoInfo:
    """Format, size as stored (before EXIF orientation) and Pillow mode of a photo."""

    format: str
    width: int
    height: int
    mode: str


def inspect_photo(data: bytes) -> PhotoInfo:
    """Validate a photo by decoding it fully, then return its format, size and mode."""
    with _open_photo(data) as image:
        _load_pixels(image)

        return PhotoInfo(
            format=_format_name(image),
            width=image.width,
            height=image.height,
            mode=image.mode,
        )


def decode_photo(data: bytes, min_side: int | None = None) -> Image.Image:
    """Validate a photo and decode it to an upright RGB image.

    With `min_side`, a JPEG is decoded at the smallest of 1/1, 1/2, 1/4 or
    1/8 scale that keeps both sides at least `min_side` pixels. The DCT
    scaling skips most of the decoding and resizing work of a photo that the
    model shrinks to `min_side` anyway.
    """
    with _open_photo(data) as image:
        if min_side is not None and image.format == "JPEG":
            image.draft(None, (min_side, min_side))
        _load_pixels(image)

        upright = _apply_orientation(image)

        return _convert_to_rgb(upright)


def photo_extension(info: PhotoInfo) -> str:
    """Return the file extension, with its dot, for the format of a photo."""
    extension = _EXTENSIONS.get(info.format)
    if extension is None:
        raise PhotoError(
            f"no file extension for image format {info.format!r}. "
            f"Expected one of {', '.join(_EXTENSIONS)}"
        )

    return extension


def _open_photo(data: bytes) -> Image.Image:
    """Open a photo lazily after checking its byte size and pixel count."""
    _check_byte_size(data)

    # The WebP decoder allocates its whole canvas when the file is opened.
    webp_size = _webp_canvas_size(data)
    if webp_size is not None:
        _check_pixel_count(*webp_size)

    try:
        image = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    except UnidentifiedImageError as exc:
        raise PhotoError(f"not an image: expected {_SUPPORTED_NAMES} data") from exc
    except _BOMB_ERRORS as exc:
        raise PhotoError(
            f"image exceeds the limit of {MAX_PHOTO_PIXELS} pixels ({exc}). "
            "Downscale it and upload it again."
        ) from exc
    except _DECODE_ERRORS as exc:
        raise PhotoError(
            f"invalid image header: {exc}. Upload the original file again."
        ) from exc

    try:
        _check_pixel_count(image.width, image.height)
    except PhotoError:
        image.close()
        raise

    return image


def _check_byte_size(data: bytes) -> None:
    """Raise PhotoError for an empty file or one over MAX_PHOTO_BYTES."""
    if len(data) == 0:
        raise PhotoError("empty file: the photo has 0 bytes. Upload the image again.")

    if len(data) > MAX_PHOTO_BYTES:
        raise PhotoError(
            f"file of {len(data)} bytes exceeds the limit of {MAX_PHOTO_BYTES} "
            "bytes. Compress or downscale the photo and upload it again."
        )


def _check_pixel_count(width: int, height: int) -> None:
    """Raise PhotoError for an image with no pixels or over MAX_PHOTO_PIXELS."""
    if width <= 0 or height <= 0:
        raise PhotoError(
            f"invalid image size {width}x{height}: width and height must be positive"
        )

    if width * height > MAX_PHOTO_PIXELS:
        raise PhotoError(
            f"image of {width}x{height} pixels exceeds the limit of "
            f"{MAX_PHOTO_PIXELS} pixels. Downscale it and upload it again."
        )


def _webp_canvas_size(data: bytes) -> tuple[int, int] | None:
    """Read the canvas size from a WebP header, or return None for other data."""
    # The first chunk header is at bytes 12..19 and its payload starts at byte
    # 20. Pillow 13's WebP plugin reads the canvas size at the same offsets.
    if len(data) < 30 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None

    chunk = data[12:16]
    if chunk == b"VP8X":
        # Canvas width - 1 and height - 1, 24 bits each.
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height

    if chunk == b"VP8L" and data[20] == 0x2F:
        # Width - 1 and height - 1, 14 bits each, after the signature byte.
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1

    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        # Key frame: 14-bit width and height follow the start code.
        width = int.from_bytes(data[26:28], "little") & 0x3FFF
        height = int.from_bytes(data[28:30], "little") & 0x3FFF
        return width, height

    return None


def _load_pixels(image: Image.Image) -> None:
    """Decode all pixels of the first frame, raising PhotoError if that fails."""
    # Pillow's LOAD_TRUNCATED_IMAGES stays False, so a truncated file raises here.
    try:
        image.load()
    except (*_DECODE_ERRORS, *_BOMB_ERRORS) as exc:
        raise PhotoError(
            f"truncated or corrupt {_format_name(image)}: {exc}. "
            "Upload the original file again."
        ) from exc


def _format_name(image: Image.Image) -> str:
    """Return the Pillow format name of an opened photo, with MPO as JPEG."""
    if image.format == "MPO":
        return "JPEG"

    return str(image.format)


def _apply_orientation(image: Image.Image) -> Image.Image:
    """Return a copy of the image turned upright by its EXIF orientation tag."""
    try:
        return ImageOps.exif_transpose(image)
    except _DECODE_ERRORS as exc:
        logger.warning(
            "Ignoring the invalid EXIF orientation of a %s photo of %dx%d pixels: %s",
            _format_name(image),
            image.width,
            image.height,
            exc,
        )
        return image.copy()


def _convert_to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded image of any Pillow mode to 8-bit RGB."""
    if image.mode == "RGB":
        return image

    if image.mode == "F":
        return _stretch_float_to_gray(image).convert("RGB")

    if image.mode == "I" or image.mode.startswith("I;16"):
        # Pillow clips wide samples to 255 when converting to L, so scale the
        # 16-bit range 0..65535 down to 0..255 first. Wider "I" samples clip.
        scaled = image.convert("I").point(lambda value: value * (1 / 257))
        return scaled.convert("L").convert("RGB")

    if _has_alpha(image):
        return _composite_on_white(image)

    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise PhotoError(
            f"unsupported colour mode {image.mode!r}: {exc}. "
            "Save the photo as RGB and upload it again."
        ) from exc


def _stretch_float_to_gray(image: Image.Image) -> Image.Image:
    """Map a floating-point image linearly from its own min..max to 8-bit gray."""
    low, high = image.getextrema()
    if high <= low:
        return Image.new("L", image.size, 0)

    scale = 255 / (high - low)
    stretched = image.point(lambda value: value * scale - low * scale)

    return stretched.convert("L")


def _has_alpha(image: Image.Image) -> bool:
    """Return whether an image has an alpha band or a transparent colour key."""
    return image.mode in ("RGBA", "RGBa", "LA", "PA") or ("transparency" in image.info)


def _composite_on_white(image: Image.Image) -> Image.Image:
    """Composite an image with transparency over a white background."""
    foreground = image.convert("RGBA")
    background = Image.new("RGBA", image.size, (255, 255, 255, 255))

    return Image.alpha_composite(background, foreground).convert("RGB")
