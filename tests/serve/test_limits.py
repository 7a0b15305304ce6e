"""Limits and image decoding: every refusal happens with the right status, before the costly step."""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from paravec.serve.limits import Limits, check_item_count, check_text, decode_image, read_body
from paravec.serve.schema import ApiError

from .helpers import image_data_url, pattern_image

LIMITS = Limits(max_image_bytes=200_000, max_image_pixels=1_000_000, max_text_chars=50, max_items=4)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def forged_png(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width x height`` grey pixels, with one row of data only."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    row = zlib.compress(b"\x00" * (width + 1))
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", row) + _png_chunk(b"IEND", b"")


def data_url(raw: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(raw).decode()}"


def refusal(call) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call()
    return caught.value


@pytest.mark.parametrize("image_format", ["PNG", "WEBP"])
def test_lossless_data_urls_decode_to_the_exact_pixels(image_format):
    image = pattern_image(1)
    kwargs = {"lossless": True} if image_format == "WEBP" else {}
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **kwargs)
    decoded = decode_image(data_url(buffer.getvalue(), f"image/{image_format.lower()}"), "input[0].image", LIMITS)
    assert decoded.mode == "RGB" and decoded.size == image.size
    np.testing.assert_array_equal(np.asarray(decoded), np.asarray(image))


def test_jpeg_data_url_decodes_like_pillow():
    url = image_data_url(pattern_image(2), "JPEG")
    raw = base64.b64decode(url.split(",", 1)[1])
    expected = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))
    np.testing.assert_array_equal(np.asarray(decode_image(url, "x", LIMITS)), expected)


@pytest.mark.parametrize(
    "source",
    [
        "/etc/passwd",
        "../images/cat.png",
        "file:///etc/passwd",
        "http://127.0.0.1:9/cat.png",
        "https://example.com/cat.png",
        "ftp://example.com/cat.png",
        "cat.png",
    ],
)
def test_paths_and_urls_are_refused_without_being_opened(source):
    error = refusal(lambda: decode_image(source, "input[3].image", LIMITS))
    assert (error.status, error.code, error.param) == (400, "unsupported_image_source", "input[3].image")
    assert "input[3].image" in error.message


@pytest.mark.parametrize(
    "url",
    ["data:image/gif;base64,R0lGODlhAQABAAAAACw=", "data:text/plain;base64,aGk=", "data:image/png,rawbytes"],
)
def test_other_media_types_and_encodings_are_refused(url):
    error = refusal(lambda: decode_image(url, "input[0].image", LIMITS))
    assert (error.status, error.code) == (400, "invalid_image")


def test_bad_base64_is_refused():
    error = refusal(lambda: decode_image("data:image/png;base64,iVBOR%%%not-base64", "input[1].image", LIMITS))
    assert (error.status, error.code, error.param) == (400, "invalid_image", "input[1].image")
    assert "base64" in error.message


def test_bytes_that_are_not_the_declared_format_are_refused():
    jpeg_url = image_data_url(pattern_image(3), "JPEG")
    relabelled = jpeg_url.replace("data:image/jpeg", "data:image/png", 1)
    assert refusal(lambda: decode_image(relabelled, "x", LIMITS)).code == "invalid_image"
    truncated = image_data_url(pattern_image(4))[:200]
    assert refusal(lambda: decode_image(truncated, "x", LIMITS)).status == 400


def test_oversize_image_is_refused_before_decoding():
    noise = np.random.default_rng(0).integers(0, 256, size=(400, 400, 3), dtype=np.uint8)  # incompressible
    url = image_data_url(Image.fromarray(noise, "RGB"))
    assert len(base64.b64decode(url.split(",", 1)[1])) > LIMITS.max_image_bytes
    error = refusal(lambda: decode_image(url, "input[0].image", LIMITS))
    assert (error.status, error.code) == (413, "image_too_large")


def test_decompression_bomb_is_refused_from_its_header():
    # A real, complete PNG: 4000 x 4000 grey pixels (16 MB decoded) in a few kilobytes.
    buffer = io.BytesIO()
    Image.new("L", (4000, 4000)).save(buffer, format="PNG")
    raw = buffer.getvalue()
    assert len(raw) < LIMITS.max_image_bytes < 4000 * 4000
    error = refusal(lambda: decode_image(data_url(raw), "input[0].image", LIMITS))
    assert (error.status, error.code) == (413, "image_too_large")
    assert "4000x4000" in error.message


def test_gigapixel_header_is_refused_quickly_under_default_limits():
    # 60000 x 60000 = 3.6 gigapixels, beyond Pillow's own bomb limit too: never decoded.
    url = data_url(forged_png(60_000, 60_000))
    start = time.perf_counter()
    error = refusal(lambda: decode_image(url, "input[0].image", Limits()))
    assert (error.status, error.code) == (413, "image_too_large")
    assert time.perf_counter() - start < 1.0


def test_image_just_under_the_pixel_limit_is_accepted():
    limits = Limits(max_image_pixels=100 * 50)
    image = decode_image(image_data_url(Image.new("RGB", (100, 50), "red")), "x", limits)
    assert image.size == (100, 50)
    assert refusal(lambda: decode_image(image_data_url(Image.new("RGB", (101, 50))), "x", limits)).status == 413


def test_pixels_of_all_images_of_a_request_are_bounded_together():
    limits = Limits(max_image_pixels=100 * 100, max_request_pixels=3 * 100 * 100)
    url = image_data_url(Image.new("RGB", (100, 100), "blue"))
    assert decode_image(url, "input[2].image", limits, pixels_so_far=2 * 100 * 100).size == (100, 100)
    error = refusal(lambda: decode_image(url, "input[3].image", limits, pixels_so_far=3 * 100 * 100))
    assert (error.status, error.code, error.param) == (413, "image_too_large", "input[3].image")


def test_text_and_item_count_limits():
    check_text("x" * 50, "input[0]", LIMITS)
    error = refusal(lambda: check_text("x" * 51, "input[2].instruction", LIMITS))
    assert (error.status, error.code, error.param) == (400, "text_too_long", "input[2].instruction")
    check_item_count(4, LIMITS)
    assert refusal(lambda: check_item_count(5, LIMITS)).code == "too_many_items"


async def _chunks(parts):
    for part in parts:
        yield part


def test_read_body_counts_streamed_bytes_without_trusting_content_length():
    read = lambda parts, length: asyncio.run(read_body(_chunks(parts), length, max_bytes=10))  # noqa: E731
    assert read([b"12345", b"67890"], None) == b"1234567890"
    assert refusal(lambda: read([b"123456", b"789012"], None)).status == 413  # chunked, no length
    assert refusal(lambda: read([b"123456", b"789012"], "5")).status == 413  # length that lies
    assert refusal(lambda: read([b""], "11")).status == 413  # refused on the header alone
    assert refusal(lambda: read([b""], "ten")).status == 400


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="max_items"):
        Limits(max_items=0)
