"""``paravec serve``: load a model and answer OpenAI-style embedding requests over HTTP.

The protocol, the image extension and the error codes are documented in :mod:`paravec.serve`.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from typing import TYPE_CHECKING

from paravec.cli import CommandError
from paravec.commands.options import add_threads_option
from paravec.core.threads import apply_threads

if TYPE_CHECKING:
    from paravec.serve.app import ServeConfig

API_KEY_ENV = "PARAVEC_API_KEY"


def register(subparsers: argparse._SubParsersAction) -> None:
    from paravec.serve.limits import Limits

    defaults = Limits()
    parser = subparsers.add_parser(
        "serve",
        help="serve a model as an OpenAI-compatible embeddings endpoint",
        description="Serve POST /v1/embeddings (OpenAI-compatible, plus image items as data URLs), "
        "GET /v1/models and GET /health. Concurrent requests are micro-batched.",
    )
    parser.add_argument("--model", required=True, help="a model folder or a preset name")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--api-key", default=None, help=f"require 'Authorization: Bearer KEY' on /v1/* (or set {API_KEY_ENV})"
    )
    parser.add_argument(
        "--mode", choices=("path0", "aggregate"), default=None,
        help="which embedding to serve: path 0 (single prefix) or the aggregate of all paths "
        "(default: the model's own default)",
    )
    parser.add_argument("--max-batch-size", type=int, default=32, help="items per model call")
    parser.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="longest a batch waits for requests still being received (a lone request never waits)"
    )
    parser.add_argument("--max-request-bytes", type=int, default=defaults.max_request_bytes)
    parser.add_argument("--max-items", type=int, default=defaults.max_items, help="inputs per request")
    parser.add_argument("--max-text-chars", type=int, default=defaults.max_text_chars)
    parser.add_argument("--max-image-bytes", type=int, default=defaults.max_image_bytes)
    parser.add_argument("--max-image-pixels", type=int, default=defaults.max_image_pixels)
    parser.add_argument(
        "--max-request-pixels", type=int, default=defaults.max_request_pixels, help="all images of a request together"
    )
    parser.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    add_threads_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn
    from PIL import Image

    import paravec
    from paravec.serve.app import create_app

    config = _config(args)
    if config.api_key is None and not _is_loopback(args.host):
        print(f"paravec serve: warning: {args.host} is reachable from other machines and no API key "
              f"is set (--api-key or {API_KEY_ENV})", file=sys.stderr)
    # Make Pillow's own decompression-bomb guard agree with ours (it raises at twice its limit).
    Image.MAX_IMAGE_PIXELS = config.limits.max_image_pixels
    try:
        embedder = paravec.load(args.model, mode=args.mode)
    except (OSError, ValueError, KeyError) as error:
        raise CommandError(f"cannot load model {args.model!r}: {error}") from None
    apply_threads(args.threads, embedder.dim)
    app = create_app(embedder, config)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _config(args: argparse.Namespace) -> "ServeConfig":
    from paravec.serve.app import ServeConfig
    from paravec.serve.limits import Limits

    if not 0 <= args.port <= 65535:
        raise CommandError(f"--port must be in 0..65535, got {args.port}")
    if args.max_batch_size < 1:
        raise CommandError(f"--max-batch-size must be >= 1, got {args.max_batch_size}")
    if args.max_wait_ms < 0:
        raise CommandError(f"--max-wait-ms must be >= 0, got {args.max_wait_ms}")
    try:
        bounds = Limits(
            max_request_bytes=args.max_request_bytes,
            max_items=args.max_items,
            max_text_chars=args.max_text_chars,
            max_image_bytes=args.max_image_bytes,
            max_image_pixels=args.max_image_pixels,
            max_request_pixels=args.max_request_pixels,
        )
    except ValueError as error:
        raise CommandError(str(error).replace("Limits.", "--").replace("_", "-")) from None
    return ServeConfig(
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        limits=bounds,
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
