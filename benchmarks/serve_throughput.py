"""Throughput and latency of ``paravec serve``, with and without micro-batching.

Starts ``paravec serve`` twice as a subprocess on loopback (the server gets its own process, so
client threads do not compete with it for the GIL): once with ``--max-batch-size 32`` and once
with ``--max-batch-size 1`` (one request per model call). Against each, 1 and then 16 concurrent
clients send single-input requests; the script prints requests/s, p50/p95 latency and the mean
model batch size (from ``/health``), then the speed-up of batching at each concurrency.

    python benchmarks/serve_throughput.py                        # small-qwen2-vl
    python benchmarks/serve_throughput.py --model tiny-qwen2-vl --requests 200 --threads 1

Inputs are distinct short captions; ``--image-every N`` makes every N-th request an image+text
item (a 64x64 PNG data URL).
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import numpy as np
from PIL import Image

WORDS = "red green blue yellow circle square triangle star small large left right above below near far".split()


@dataclass
class Phase:
    label: str
    clients: int
    requests: int
    seconds: float
    latencies_ms: list[float]
    mean_batch: float

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    model: str, max_batch_size: int, max_wait_ms: float, threads: int | None
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [
        sys.executable, "-c", "import sys; from paravec.cli import main; sys.exit(main())",
        "serve", "--model", model, "--port", str(port),
        "--max-batch-size", str(max_batch_size), "--max-wait-ms", str(max_wait_ms), "--log-level", "warning",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    server = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}: {' '.join(command)}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return server, url
        except httpx.TransportError:
            time.sleep(0.2)
    server.terminate()
    raise SystemExit("the server did not answer /health within 600 s")


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def make_inputs(count: int, image_every: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    inputs: list = []
    for index in range(count):
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(4, 12)))) + f" #{index}"
        if image_every and index % image_every == image_every - 1:
            pixels = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
            image = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
            inputs.append({"text": text, "image": image})
        else:
            inputs.append(text)
    return inputs


def batching_counts(url: str) -> tuple[int, int]:
    stats = httpx.get(f"{url}/health").json()["batching"]
    return stats["batches"], stats["items"]


def run_phase(url: str, label: str, clients: int, inputs: list) -> Phase:
    """Send every input as its own request, from ``clients`` threads sharing the work."""
    latencies: list[float] = []
    lock = threading.Lock()
    next_index = iter(range(len(inputs)))

    def client_loop() -> None:
        with httpx.Client(base_url=url, timeout=300) as client:
            while True:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    return
                start = time.perf_counter()
                response = client.post("/v1/embeddings", json={"input": [inputs[index]]})
                elapsed = (time.perf_counter() - start) * 1000
                response.raise_for_status()
                with lock:
                    latencies.append(elapsed)

    batches_before, items_before = batching_counts(url)
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client_loop) for _ in range(clients)]:
            future.result()
    seconds = time.perf_counter() - start
    batches_after, items_after = batching_counts(url)
    mean_batch = (items_after - items_before) / max(1, batches_after - batches_before)
    return Phase(label, clients, len(inputs), seconds, latencies, mean_batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="small-qwen2-vl", help="preset name or model folder")
    parser.add_argument("--requests", type=int, default=160, help="requests per measurement")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--image-every", type=int, default=0, help="every N-th request carries an image (0: none)")
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument(
        "--threads", type=int, default=None,
        help="torch threads of the server (OMP_NUM_THREADS); on a busy machine 1 avoids thread contention",
    )
    args = parser.parse_args()

    configurations = [(f"batched (max batch {args.max_batch_size})", args.max_batch_size), ("one request per call", 1)]
    phases: dict[tuple[str, int], Phase] = {}
    start_load = os.getloadavg()[0]
    for label, max_batch_size in configurations:
        server, url = start_server(args.model, max_batch_size, args.max_wait_ms, args.threads)
        try:
            run_phase(url, "warm-up", 1, make_inputs(args.warmup, args.image_every, seed=0))
            for clients in args.clients:
                inputs = make_inputs(args.requests, args.image_every, seed=clients)
                phases[(label, clients)] = run_phase(url, label, clients, inputs)
        finally:
            stop_server(server)

    print(f"\nmodel {args.model}, {args.requests} single-input requests per row, "
          f"image every {args.image_every or 'never'}, max wait {args.max_wait_ms} ms, {os.cpu_count()} CPUs, "
          f"server threads {args.threads or 'default'}, load average before {start_load:.1f}")
    print(f"{'server':<26}{'clients':>8}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'mean batch':>12}")
    for (label, clients), phase in phases.items():
        print(f"{label:<26}{clients:>8}{phase.requests_per_s:>9.1f}{phase.percentile(50):>9.1f}"
              f"{phase.percentile(95):>9.1f}{phase.mean_batch:>12.1f}")
    batched_label, unbatched_label = (label for label, _ in configurations)
    for clients in args.clients:
        speedup = phases[(batched_label, clients)].requests_per_s / phases[(unbatched_label, clients)].requests_per_s
        print(f"batching speed-up at {clients} clients: {speedup:.2f}x requests/s")


if __name__ == "__main__":
    main()
