"""Tests for photo validation and decoding in db.photos."""

import io
import random
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from db.photos import (
    MAX_PHOTO_BYTES,
    MAX_PHOTO_PIXELS,
    PhotoError,
    PhotoInfo,
    decode_photo,
    inspect_photo,
    photo_extension,
)

RED = (255, 0, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)

# Above MAX_PHOTO_PIXELS: 7100 * 7100 is about 50.4 million pixels.
BOMB_SIDE = 7100

CHECKS = [inspect_photo, decode_photo]


def encode(image: Image.Image, image_format: str, **params) -> bytes:
    """Save an image in memory and return the file bytes."""
    buffer = io.BytesIO()
    image.save(buffer, image_format, **params)
    return buffer.getvalue()


def noise_jpeg() -> bytes:
    """Return a JPEG of random noise, so its scan data is long and dense."""
    pixels = random.Random(0).randbytes(128 * 128 * 3)
    noise = Image.frombytes("RGB", (128, 128), pixels)
    return encode(noise, "JPEG", quality=90)


def png_chunk(chunk_type: bytes, payload: bytes) -> bytes:
    """Build one PNG chunk with its length and CRC."""
    crc = zlib.crc32(chunk_type + payload)
    return (
        struct.pack(">I", len(payload)) + chunk_type + payload + struct.pack(">I", crc)
    )


def bilevel_png(side: int) -> bytes:
    """Build a black 1-bit grayscale PNG without holding its pixels in memory."""
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)

    # Each row is the filter byte 0 followed by side / 8 bytes of zero bits.
    row = bytes(1 + (side + 7) // 8)
    compressor = zlib.compressobj(9)
    pixel_data = b"".join(compressor.compress(row) for _ in range(side))
    pixel_data += compressor.flush()

    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", pixel_data)
        + png_chunk(b"IEND", b"")
    )


def webp_canvas_header(width: int, height: int) -> bytes:
    """Build a WebP file that holds only an extended (VP8X) canvas header."""
    canvas = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    chunk = b"VP8X" + struct.pack("<I", 10) + bytes(4) + canvas
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def split_colours(size: tuple[int, int]) -> Image.Image:
    """Return an RGB image whose left half is red and right half is blue."""
    image = Image.new("RGB", size, RED)
    image.paste(BLUE, (size[0] // 2, 0, size[0], size[1]))
    return image


def assert_close(pixel: tuple[int, ...], expected: tuple[int, ...]) -> None:
    """Assert that a lossy-decoded pixel is within 10 levels of the expected one."""
    difference = max(abs(a - b) for a, b in zip(pixel, expected, strict=True))
    assert difference <= 10, f"pixel {pixel} is not close to {expected}"


@pytest.mark.parametrize("check", CHECKS)
def test_empty_file_rejected(check) -> None:
    with pytest.raises(PhotoError, match="empty file"):
        check(b"")


@pytest.mark.parametrize("check", CHECKS)
def test_random_bytes_rejected(check) -> None:
    data = random.Random(0).randbytes(4096)

    with pytest.raises(PhotoError, match="not an image"):
        check(data)


@pytest.mark.parametrize("check", CHECKS)
def test_unsupported_format_rejected(check) -> None:
    data = encode(Image.new("RGB", (8, 8)), "PPM")

    with pytest.raises(PhotoError, match="not an image"):
        check(data)


@pytest.mark.parametrize("check", CHECKS)
def test_oversize_bytes_rejected(check) -> None:
    data = bytes(MAX_PHOTO_BYTES + 1)

    with pytest.raises(PhotoError, match=f"exceeds the limit of {MAX_PHOTO_BYTES}"):
        check(data)


@pytest.mark.parametrize("check", CHECKS)
def test_truncated_jpeg_rejected(check) -> None:
    data = noise_jpeg()

    with pytest.raises(PhotoError, match="truncated or corrupt JPEG"):
        check(data[: len(data) // 2])


@pytest.mark.parametrize("seed", range(8))
def test_corrupt_jpeg_raises_photo_error(seed: int) -> None:
    data = bytearray(noise_jpeg())

    # Flip a run of bytes in the middle of the entropy-coded scan data.
    scan_start = data.index(b"\xff\xda") + 2
    scan_end = len(data) - 2
    rng = random.Random(seed)
    start = rng.randrange(scan_start + 20, (scan_start + scan_end) // 2)
    for offset in range(start, start + 64):
        data[offset] ^= 0xFF

    try:
        image = decode_photo(bytes(data))
    except PhotoError:
        return

    assert image.mode == "RGB"


def test_bomb_png_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(bilevel_png(BOMB_SIDE))

    data = path.read_bytes()

    with pytest.raises(PhotoError, match=f"exceeds the limit of {MAX_PHOTO_PIXELS}"):
        decode_photo(data)


def test_bomb_png_is_small_on_disk() -> None:
    data = bilevel_png(BOMB_SIDE)

    assert len(data) < 1024 * 1024


def test_bomb_png_header_rejected() -> None:
    data = bilevel_png(BOMB_SIDE)

    # Cut the file right after the IDAT chunk header, so the size is known but
    # no pixel can be decoded: the limit error proves the check comes first.
    header_only = data[: data.index(b"IDAT") + 4]

    with pytest.raises(PhotoError, match=f"exceeds the limit of {MAX_PHOTO_PIXELS}"):
        inspect_photo(header_only)


def test_bomb_webp_header_rejected() -> None:
    data = webp_canvas_header(BOMB_SIDE, BOMB_SIDE)

    with pytest.raises(PhotoError, match=f"exceeds the limit of {MAX_PHOTO_PIXELS}"):
        inspect_photo(data)


def test_bomb_check_keeps_pillow_globals() -> None:
    limit = Image.MAX_IMAGE_PIXELS

    with pytest.raises(PhotoError):
        inspect_photo(bilevel_png(BOMB_SIDE))

    assert Image.MAX_IMAGE_PIXELS == limit
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_decode_png_alpha_on_white() -> None:
    image = Image.new("RGBA", (20, 10), (255, 0, 0, 0))
    image.paste((0, 0, 255, 255), (10, 0, 20, 10))

    decoded = decode_photo(encode(image, "PNG"))

    assert decoded.mode == "RGB"
    assert decoded.getpixel((2, 5)) == WHITE
    assert decoded.getpixel((15, 5)) == BLUE


def test_decode_palette_transparency_on_white() -> None:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 255, 0] + [255, 0, 0] * 255)

    decoded = decode_photo(encode(image, "PNG", transparency=0))

    assert decoded.getpixel((4, 4)) == WHITE


def test_inspect_cmyk_jpeg() -> None:
    data = encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG")

    info = inspect_photo(data)

    assert info == PhotoInfo(format="JPEG", width=16, height=16, mode="CMYK")


def test_decode_cmyk_jpeg_stays_red() -> None:
    data = encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG")

    decoded = decode_photo(data)

    assert decoded.mode == "RGB"
    assert_close(decoded.getpixel((8, 8)), RED)


def test_decode_exif_rotated_jpeg() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display.
    data = encode(split_colours((40, 20)), "JPEG", exif=exif, quality=95)

    decoded = decode_photo(data)

    assert decoded.size == (20, 40)
    assert_close(decoded.getpixel((10, 5)), RED)
    assert_close(decoded.getpixel((10, 35)), BLUE)


def test_inspect_exif_rotated_jpeg_stored_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(split_colours((40, 20)), "JPEG", exif=exif)

    info = inspect_photo(data)

    assert (info.width, info.height) == (40, 20)


def test_decode_grayscale_png() -> None:
    data = encode(Image.new("L", (8, 8), 77), "PNG")

    decoded = decode_photo(data)

    assert decoded.mode == "RGB"
    assert decoded.getpixel((4, 4)) == (77, 77, 77)


def test_decode_16bit_grayscale_png() -> None:
    data = encode(Image.new("I;16", (8, 8), 40000), "PNG")

    decoded = decode_photo(data)

    # 40000 / 257 is 155.6 on the 8-bit scale.
    assert decoded.getpixel((4, 4)) == (155, 155, 155)


def test_decode_palette_png() -> None:
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 0, 128, 0] + [0, 0, 0] * 254)

    decoded = decode_photo(encode(image, "PNG"))

    assert decoded.mode == "RGB"
    assert decoded.getpixel((4, 4)) == (0, 128, 0)


def test_decode_gif_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), BLUE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])

    decoded = decode_photo(data)

    assert decoded.getpixel((4, 4)) == RED


@pytest.mark.parametrize(
    ("image_format", "extension"),
    [
        ("JPEG", ".jpg"),
        ("PNG", ".png"),
        ("WEBP", ".webp"),
        ("GIF", ".gif"),
        ("BMP", ".bmp"),
        ("TIFF", ".tiff"),
    ],
)
def test_photo_extension_per_format(image_format: str, extension: str) -> None:
    data = encode(split_colours((12, 8)), image_format)

    info = inspect_photo(data)

    assert info.format == image_format
    assert photo_extension(info) == extension


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_decode_each_format_rgb(image_format: str) -> None:
    data = encode(split_colours((12, 8)), image_format)

    decoded = decode_photo(data)

    assert decoded.mode == "RGB"
    assert decoded.size == (12, 8)


def test_photo_extension_unknown_format() -> None:
    info = PhotoInfo(format="PPM", width=1, height=1, mode="RGB")

    with pytest.raises(PhotoError, match="PPM"):
        photo_extension(info)


def test_inspect_mpo_as_jpeg() -> None:
    frames = [Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), BLUE)]
    data = encode(frames[0], "MPO", save_all=True, append_images=frames[1:])

    info = inspect_photo(data)

    assert info.format == "JPEG"
    assert photo_extension(info) == ".jpg"


def test_decode_photo_min_side_scales_jpeg_down() -> None:
    data = encode(Image.new("RGB", (800, 600), (90, 120, 30)), "JPEG", quality=85)

    assert decode_photo(data, min_side=224).size == (400, 300)


def test_decode_photo_min_side_keeps_small_jpeg() -> None:
    data = encode(Image.new("RGB", (300, 200), (90, 120, 30)), "JPEG", quality=85)

    assert decode_photo(data, min_side=224).size == (300, 200)


def test_decode_photo_min_side_keeps_png() -> None:
    data = encode(Image.new("RGB", (800, 600), (90, 120, 30)), "PNG")

    assert decode_photo(data, min_side=224).size == (800, 600)
