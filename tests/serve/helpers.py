"""Helpers of the serve tests: a live uvicorn server on loopback, a stand-in embedder, images.

The stand-in serves the tests of protocol, limits and error handling, where the model's numbers
do not matter. Every test that checks embedding values uses the real ``tiny-qwen2-vl`` preset
(the ``tiny_embedder`` fixture in ``conftest.py``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import socket
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

import numpy as np
import uvicorn
from PIL import Image

from paravec.items import Item


class StandInEmbedder:
    """The embedder interface with vectors derived from a hash of each item; fails or stalls on demand.

    ``fail_on``: a text that makes any batch containing it raise, to exercise failure isolation.
    ``hold_on``: a text whose batch waits for ``release`` to be set, so a test can let requests
    queue up behind a busy model.
    """

    name = "stand-in"
    dim = 8

    def __init__(self, fail_on: Optional[str] = None, hold_on: Optional[str] = None) -> None:
        self.fail_on = fail_on
        self.hold_on = hold_on
        self.release = threading.Event()
        self.batch_sizes: list[int] = []

    def encode(
        self,
        items: Sequence[Item],
        *,
        batch_size: int = 16,
        mode: Optional[str] = None,
        normalize: bool = True,
        show_progress: bool = False,
    ) -> np.ndarray:
        self.batch_sizes.append(len(items))
        if self.hold_on is not None and any(item.text == self.hold_on for item in items):
            self.release.wait(timeout=60)
        if self.fail_on is not None and any(item.text == self.fail_on for item in items):
            raise RuntimeError("stand-in failure with secret internals /srv/model.bin")
        return np.stack([self.vector(item) for item in items])

    def vector(self, item: Item) -> np.ndarray:
        digest = hashlib.sha256(repr((item.text, item.instruction)).encode())
        if item.image is not None:
            digest.update(item.image.tobytes())
        seed = int.from_bytes(digest.digest()[:8], "little")
        vector = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
        return vector / np.linalg.norm(vector)


@contextmanager
def live_server(app) -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread on a free loopback port; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


def image_data_url(image: Image.Image, image_format: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    media_type = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}[image_format]
    return f"data:{media_type};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def pattern_image(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A small RGB image with random pixels: distinct seeds give distinct images."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")
