"""The wire format of the embeddings API: request parsing, response bodies, error bodies.

Requests follow OpenAI's ``POST /v1/embeddings``; the one extension is that an element of
``input`` may be an object ``{"text", "image", "instruction"}`` (see :mod:`paravec.serve`).
Errors use OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, with status 400
for anything wrong with the request (where FastAPI would answer 422), so that OpenAI clients
raise their usual ``BadRequestError``.

This module checks shapes and types only. Size limits and image decoding are
:mod:`paravec.serve.limits`' job, so they can be tuned without touching the protocol.
"""

from __future__ import annotations

import base64
from typing import Any, Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError


class ApiError(Exception):
    """An error answered to the client as an OpenAI-style JSON body with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        param: Optional[str] = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type

    def body(self) -> dict[str, Any]:
        return {
            "error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        }


class ItemInput(BaseModel):
    """One element of ``input``: plain text, or the extension object with an image (data URL)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    text: Optional[StrictStr] = None
    image: Optional[StrictStr] = None
    instruction: Optional[StrictStr] = None


class EmbeddingRequest(BaseModel):
    """The body of ``POST /v1/embeddings``. Unknown fields are refused so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", strict=True)

    # Validated by parse_inputs, not by pydantic: a union of str / list[str | object] makes pydantic
    # report one error per union member, which names no field a client can act on.
    input: Any
    model: Optional[StrictStr] = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[StrictInt] = Field(default=None, gt=0)
    user: Optional[StrictStr] = None


def parse_request(body: bytes) -> tuple[EmbeddingRequest, list[ItemInput]]:
    """Parse and type-check a request body; every input is returned as an :class:`ItemInput`."""
    try:
        request = EmbeddingRequest.model_validate_json(body)
    except ValidationError as error:
        raise _as_api_error(error) from None
    return request, parse_inputs(request.input)


def parse_inputs(raw: Any) -> list[ItemInput]:
    """Turn ``input`` (a string, or a list of strings and item objects) into items."""
    if isinstance(raw, str):
        return [_text_item(raw, "input")]
    if not isinstance(raw, list):
        raise ApiError(
            400,
            f"'input' must be a string or a list of strings / item objects, got {_json_type(raw)}",
            code="invalid_type",
            param="input",
        )
    if not raw:
        raise ApiError(400, "'input' is an empty list", code="invalid_value", param="input")
    return [_parse_element(element, f"input[{index}]") for index, element in enumerate(raw)]


def _parse_element(element: Any, param: str) -> ItemInput:
    if isinstance(element, str):
        return _text_item(element, param)
    if isinstance(element, dict):
        try:
            item = ItemInput.model_validate(element)
        except ValidationError as error:
            raise _as_api_error(error, prefix=param) from None
        if not item.text and not item.image:
            raise ApiError(
                400, f"'{param}' needs a non-empty 'text' or 'image'", code="invalid_value", param=param
            )
        return item
    if isinstance(element, (int, list)) and not isinstance(element, bool):
        raise ApiError(
            400,
            f"'{param}': token-id input is not supported; send the text itself",
            code="invalid_type",
            param=param,
        )
    raise ApiError(
        400,
        f"'{param}' must be a string or an object with text/image/instruction, got {_json_type(element)}",
        code="invalid_type",
        param=param,
    )


def _text_item(text: str, param: str) -> ItemInput:
    if not text:
        raise ApiError(400, f"'{param}' is an empty string", code="invalid_value", param=param)
    return ItemInput(text=text)


def _as_api_error(error: ValidationError, prefix: str = "") -> ApiError:
    """Report pydantic's first error with the field it names (``input[2].image``)."""
    first = error.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return ApiError(400, f"request body is not valid JSON: {first['msg']}", code="invalid_json")
    if first["type"] == "model_type" and not first["loc"] and not prefix:
        return ApiError(400, "request body must be a JSON object", code="invalid_type")
    param = prefix
    for part in first["loc"]:
        param += f"[{part}]" if isinstance(part, int) else (f".{part}" if param else str(part))
    message = f"'{param}': {first['msg']}" if param else first["msg"]
    return ApiError(400, message, code="invalid_value", param=param or None)


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def embedding_response(
    vectors: np.ndarray, *, model: str, encoding_format: str, prompt_tokens: int
) -> dict[str, Any]:
    """The response body; ``base64`` is the little-endian float32 bytes OpenAI clients decode."""
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    if encoding_format == "base64":
        encoded: list[Any] = [base64.b64encode(row.tobytes()).decode("ascii") for row in vectors]
    else:
        encoded = vectors.tolist()  # float32 -> float is exact, and JSON round-trips floats
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": embedding}
            for index, embedding in enumerate(encoded)
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def models_response(model: str, created: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_card(model, created)]}


def model_card(model: str, created: int) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": created, "owned_by": "paravec"}
