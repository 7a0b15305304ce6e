"""Resource limits for untrusted requests, and the only way an image enters the server.

Every limit is checked before the expensive step it protects: the body size while the body is
streamed in (Content-Length is not trusted, and chunked bodies have none), the image byte size
before base64 decoding, the pixel count from the image header before the pixels are decoded
(a small PNG can declare gigapixels: a decompression bomb).

Images arrive only as base64 ``data:`` URLs. Anything else (a file path, ``file://``, ``http(s)://``)
is refused without being looked at: a server that opened paths or fetched URLs named by clients
would let them read its disk or reach its network.

Status codes: sizes in bytes or pixels answer 413; counts and lengths answer 400, as OpenAI
does for too many inputs or too long a text.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from dataclasses import dataclass
from typing import AsyncIterable, Optional

from PIL import Image

from paravec.serve.schema import ApiError

ALLOWED_IMAGE_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}


@dataclass(frozen=True)
class Limits:
    """Per-request bounds. The defaults admit a 10 MiB, 4096x4096 image and 256 inputs.

    ``max_request_pixels`` bounds the decoded pixels of all images of one request together
    (64 Mpx, about 200 MB as RGB): many small files that each decode to a large image fit under
    the byte limits, so the per-image limit alone would not bound memory.
    """

    max_request_bytes: int = 32 * 1024 * 1024
    max_items: int = 256
    max_text_chars: int = 16_384
    max_image_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    max_request_pixels: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive integer, got {value!r}")


async def read_body(chunks: AsyncIterable[bytes], content_length: Optional[str], max_bytes: int) -> bytes:
    """Read a request body, refusing it as soon as it is known to exceed ``max_bytes``."""
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise ApiError(400, "invalid Content-Length header", code="invalid_request") from None
        if declared > max_bytes:
            raise _body_too_large(max_bytes)
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > max_bytes:
            raise _body_too_large(max_bytes)
    return bytes(body)


def _body_too_large(max_bytes: int) -> ApiError:
    return ApiError(413, f"request body exceeds {max_bytes} bytes", code="request_too_large")


def check_item_count(count: int, limits: Limits) -> None:
    if count > limits.max_items:
        raise ApiError(
            400,
            f"'input' has {count} items; at most {limits.max_items} are allowed per request",
            code="too_many_items",
            param="input",
        )


def check_text(text: Optional[str], param: str, limits: Limits) -> None:
    if text is not None and len(text) > limits.max_text_chars:
        raise ApiError(
            400,
            f"'{param}' has {len(text)} characters; at most {limits.max_text_chars} are allowed",
            code="text_too_long",
            param=param,
        )


def decode_image(data_url: str, param: str, limits: Limits, pixels_so_far: int = 0) -> Image.Image:
    """Decode a ``data:image/...;base64,`` URL into an RGB image, within the byte and pixel limits.

    ``pixels_so_far``: pixels of the request's images decoded before this one.
    """
    media_type, payload = _split_data_url(data_url, param)
    # 4 base64 characters carry 3 bytes: refuse before allocating the decoded copy.
    if len(payload) // 4 * 3 > limits.max_image_bytes + 3:
        raise _image_too_large(param, limits)
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"'{param}' is not valid base64", code="invalid_image", param=param) from None
    if len(raw) > limits.max_image_bytes:
        raise _image_too_large(param, limits)
    return _decode_pixels(raw, media_type, param, limits, pixels_so_far)


def _split_data_url(data_url: str, param: str) -> tuple[str, str]:
    header, comma, payload = data_url.partition(",")
    if not header.lower().startswith("data:") or not comma:
        raise ApiError(
            400,
            f"'{param}' must be a base64 data URL (data:image/png;base64,...); file paths and "
            "http(s) or other URLs are not accepted",
            code="unsupported_image_source",
            param=param,
        )
    media_type, _, encoding = header[len("data:") :].partition(";")
    media_type = media_type.strip().lower()
    if media_type not in ALLOWED_IMAGE_TYPES or encoding.strip().lower() != "base64":
        raise ApiError(
            400,
            f"'{param}' must be a base64 data URL of type {', '.join(ALLOWED_IMAGE_TYPES)}; "
            f"got '{header[:60]}'",
            code="invalid_image",
            param=param,
        )
    return media_type, payload


def _decode_pixels(raw: bytes, media_type: str, param: str, limits: Limits, pixels_so_far: int) -> Image.Image:
    # Only the decoder of the declared type may run, whatever the bytes claim to be.
    image_format = ALLOWED_IMAGE_TYPES[media_type]
    try:
        with warnings.catch_warnings():
            # The pixel limit below is ours; PIL's global one only warns or raises before it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw), formats=(image_format,))  # reads the header only
            width, height = image.size
            if width * height > limits.max_image_pixels:
                raise _too_many_pixels(param, width, height, limits)
            if pixels_so_far + width * height > limits.max_request_pixels:
                raise ApiError(
                    413,
                    f"the request's images up to '{param}' total more than {limits.max_request_pixels} pixels",
                    code="image_too_large",
                    param=param,
                )
            return image.convert("RGB")  # decodes the pixels
    except Image.DecompressionBombError:
        raise ApiError(
            413,
            f"'{param}' declares more pixels than the image decoder allows (decompression bomb)",
            code="image_too_large",
            param=param,
        ) from None
    except (OSError, SyntaxError, ValueError) as error:  # what PIL raises on unreadable images
        raise ApiError(
            400,
            f"'{param}' is not a readable {media_type} image ({type(error).__name__})",
            code="invalid_image",
            param=param,
        ) from None


def _too_many_pixels(param: str, width: int, height: int, limits: Limits) -> ApiError:
    return ApiError(
        413,
        f"'{param}' is {width}x{height} = {width * height} pixels; at most {limits.max_image_pixels} "
        "are allowed",
        code="image_too_large",
        param=param,
    )


def _image_too_large(param: str, limits: Limits) -> ApiError:
    return ApiError(
        413,
        f"'{param}' exceeds {limits.max_image_bytes} bytes once decoded",
        code="image_too_large",
        param=param,
    )
