"""The FastAPI application: routes, authentication, error bodies, and the request pipeline.

A request goes: API key check -> body read within the size limit -> parse and validate (in a
worker thread: JSON and image decoding are CPU work that would stall the event loop) ->
:class:`~paravec.serve.batcher.MicroBatcher` -> response body built in a worker thread.
Every failure leaves as an OpenAI-style JSON error; a traceback never reaches the client.
"""

from __future__ import annotations

import copy
import hmac
import json
import logging
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol, Sequence

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from paravec.items import Item, format_text
from paravec.serve.batcher import BatchFailed, MicroBatcher
from paravec.serve.limits import Limits, check_item_count, check_text, decode_image, read_body
from paravec.serve.schema import (
    ApiError,
    EmbeddingRequest,
    ItemInput,
    embedding_response,
    model_card,
    models_response,
    parse_request,
)

logger = logging.getLogger(__name__)


class Embedder(Protocol):
    """What the server needs from a loaded model (``paravec.load`` returns one)."""

    name: str
    dim: int

    def encode(
        self,
        items: Sequence[Item],
        *,
        batch_size: int = 16,
        mode: Optional[str] = None,
        normalize: bool = True,
        show_progress: bool = False,
    ) -> np.ndarray: ...


@dataclass(frozen=True)
class ServeConfig:
    """How the server behaves; :mod:`paravec.commands.serve` fills it from the command line."""

    api_key: Optional[str] = None
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    limits: Limits = field(default_factory=Limits)


def create_app(embedder: Embedder, config: ServeConfig = ServeConfig()) -> FastAPI:
    """An app serving ``embedder`` in its own mode (chosen at load); the batcher starts with the first request."""

    def encode(items: list[Item]) -> np.ndarray:
        return embedder.encode(items, batch_size=config.max_batch_size, normalize=True)

    batcher = MicroBatcher(encode, max_batch_size=config.max_batch_size, max_wait_s=config.max_wait_ms / 1000)
    count_tokens = token_counter(embedder)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await batcher.close()

    app = FastAPI(title="paravec", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher = batcher
    _install_error_handlers(app)
    authorized = Depends(_api_key_check(config.api_key))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        batching = {**batcher.stats.as_dict(), "queued_items": batcher.queued_items}
        return {"status": "ok", "model": embedder.name, "dim": embedder.dim, "batching": batching}

    @app.get("/v1/models", dependencies=[authorized])
    async def list_models() -> dict[str, Any]:
        return models_response(embedder.name, created)

    @app.get("/v1/models/{model_id}", dependencies=[authorized])
    async def get_model(model_id: str) -> dict[str, Any]:
        _check_model(model_id, embedder.name)
        return model_card(embedder.name, created)

    @app.post("/v1/embeddings", dependencies=[authorized])
    async def embeddings(request: Request) -> Response:
        with batcher.incoming():
            max_bytes = config.limits.max_request_bytes
            body = await read_body(request.stream(), request.headers.get("content-length"), max_bytes)
            embedding_request, items = await run_in_threadpool(_parse, body, embedder, config.limits)
        try:
            vectors = await batcher.embed(items)
        except BatchFailed as error:
            raise ApiError(
                500, f"the model failed on this request ({error}); details are in the server log",
                code="embedding_failed", type="server_error",
            ) from None

        def render() -> bytes:
            payload = embedding_response(
                vectors, model=embedder.name, encoding_format=embedding_request.encoding_format,
                prompt_tokens=count_tokens(items),
            )
            return json.dumps(payload, separators=(",", ":")).encode()

        return Response(await run_in_threadpool(render), media_type="application/json")

    return app


def _parse(body: bytes, embedder: Embedder, limits: Limits) -> tuple[EmbeddingRequest, list[Item]]:
    request, inputs = parse_request(body)
    if request.model is not None:
        _check_model(request.model, embedder.name)
    if request.dimensions is not None and request.dimensions != embedder.dim:
        # Truncating would need a model trained for it (Matryoshka); ours are not, so a shortened
        # vector would quietly lose quality. Refuse instead.
        raise ApiError(
            400,
            f"'dimensions' is {request.dimensions} but {embedder.name} embeds in {embedder.dim} "
            "dimensions; it cannot produce shortened embeddings",
            code="unsupported_dimensions",
            param="dimensions",
        )
    check_item_count(len(inputs), limits)
    items: list[Item] = []
    pixels = 0
    for index, spec in enumerate(inputs):
        items.append(_to_item(spec, f"input[{index}]", limits, pixels))
        if items[-1].image is not None:
            pixels += items[-1].image.width * items[-1].image.height
    return request, items


def _to_item(spec: ItemInput, param: str, limits: Limits, pixels_so_far: int) -> Item:
    check_text(spec.text, f"{param}.text" if spec.image or spec.instruction else param, limits)
    check_text(spec.instruction, f"{param}.instruction", limits)
    image = decode_image(spec.image, f"{param}.image", limits, pixels_so_far) if spec.image else None
    item = Item(text=spec.text or None, image=image, instruction=spec.instruction or None)
    try:
        format_text(item, image_token="")  # e.g. an image placeholder in the text but no image
    except ValueError as error:
        raise ApiError(400, f"'{param}': {error}", code="invalid_value", param=param) from None
    return item


def _check_model(requested: str, served: str) -> None:
    if requested != served:
        raise ApiError(
            404, f"model '{requested}' is not served here; this server serves '{served}'",
            code="model_not_found", param="model",
        )


def token_counter(embedder: Embedder) -> Callable[[Sequence[Item]], int]:
    """``usage.prompt_tokens``: the prompt text as the model's own tokenizer splits it.

    Counted over the text the model reads (instruction template included), as the processor
    tokenises it; image tokens are not counted, since their number depends on the image
    processor's resizing. An embedder without a ``tokenizer`` gets a count of whitespace-separated
    words instead, an approximation.

    Counting uses a private copy of the tokenizer behind a lock: a fast tokenizer changes its own
    padding/truncation state on every call, so sharing it with the model thread is unsafe.
    """
    if getattr(embedder, "tokenizer", None) is None:
        return lambda items: sum(len(_prompt(item).split()) for item in items)
    tokenizer = copy.deepcopy(embedder.tokenizer)
    lock = threading.Lock()

    def count(items: Sequence[Item]) -> int:
        with lock:
            return sum(len(ids) for ids in tokenizer([_prompt(item) for item in items])["input_ids"])

    return count


def _prompt(item: Item) -> str:
    return format_text(item, image_token="")


def _api_key_check(api_key: Optional[str]) -> Callable[[Request], None]:
    """A dependency that answers 401 unless the request carries ``Authorization: Bearer <key>``."""

    def check(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise ApiError(401, "missing or incorrect API key (Authorization: Bearer <key>)", code="invalid_api_key")

    return check


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return JSONResponse(error.body(), status_code=error.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        wrapped = ApiError(error.status_code, str(error.detail), code=f"http_{error.status_code}")
        return JSONResponse(wrapped.body(), status_code=error.status_code, headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse(ApiError(400, "invalid request", code="invalid_value").body(), status_code=400)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
        body = ApiError(500, "internal server error; details are in the server log", code="internal_error",
                        type="server_error").body()
        return JSONResponse(body, status_code=500)
