"""The HTTP server, live on loopback: protocol, errors, authentication, limits, concurrency."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from paravec.items import Item
from paravec.serve.app import ServeConfig, create_app
from paravec.serve.limits import Limits

from .helpers import StandInEmbedder, image_data_url, live_server, pattern_image

API_KEY = "test-key-123"
LIMITS = Limits(
    max_request_bytes=300_000, max_items=8, max_text_chars=200, max_image_bytes=100_000, max_image_pixels=250_000,
    max_request_pixels=400_000,
)


@pytest.fixture(scope="module")
def stand_in_server():
    embedder = StandInEmbedder(fail_on="please fail")
    app = create_app(embedder, ServeConfig(api_key=API_KEY, max_batch_size=4, max_wait_ms=20, limits=LIMITS))
    with live_server(app) as url:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as client:
            yield client, embedder


def embed(client: httpx.Client, payload) -> httpx.Response:
    return client.post("/v1/embeddings", json=payload)


def assert_still_answers(client: httpx.Client, embedder: StandInEmbedder) -> None:
    response = embed(client, {"input": "still here", "model": "stand-in"})
    assert response.status_code == 200
    np.testing.assert_array_equal(
        response.json()["data"][0]["embedding"], embedder.vector(Item(text="still here"))
    )


def assert_error(response: httpx.Response, status: int, code: str, mentions: str = "") -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert mentions in error["message"]
    assert "Traceback" not in response.text
    return error


def test_embeddings_response_has_the_openai_shape_and_the_embedder_vectors(stand_in_server):
    client, embedder = stand_in_server
    image = pattern_image(7)
    url = image_data_url(image)
    inputs = ["a cat", {"image": url}, {"text": "red", "image": url, "instruction": "Find"}]
    body = embed(client, {"input": inputs, "model": "stand-in", "user": "ignored"}).json()
    assert body["object"] == "list" and body["model"] == "stand-in"
    assert [row["index"] for row in body["data"]] == [0, 1, 2]
    assert {row["object"] for row in body["data"]} == {"embedding"}
    expected = [
        embedder.vector(Item(text="a cat")),
        embedder.vector(Item(image=image)),
        embedder.vector(Item(text="red", image=image, instruction="Find")),
    ]
    np.testing.assert_array_equal([row["embedding"] for row in body["data"]], expected)
    # whitespace words, since the stand-in has no tokenizer: "a cat" + "" + "Instruct: Find Query: red"
    assert body["usage"] == {"prompt_tokens": 2 + 0 + 4, "total_tokens": 6}


def test_base64_encoding_is_little_endian_float32(stand_in_server):
    client, embedder = stand_in_server
    float_body = embed(client, {"input": ["x", "y"], "encoding_format": "float"}).json()
    base64_body = embed(client, {"input": ["x", "y"], "encoding_format": "base64"}).json()
    for as_float, as_base64 in zip(float_body["data"], base64_body["data"]):
        decoded = np.frombuffer(base64.b64decode(as_base64["embedding"]), dtype="<f4")
        np.testing.assert_array_equal(decoded, np.asarray(as_float["embedding"], dtype=np.float32))


def test_health_and_models(stand_in_server):
    client, _ = stand_in_server
    health = httpx.get(client.base_url.join("/health")).json()  # no key needed
    assert health["status"] == "ok" and health["model"] == "stand-in" and health["dim"] == 8
    assert {"batches", "items", "largest_batch", "batch_sizes"} <= set(health["batching"])
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    assert [(m["id"], m["object"]) for m in models["data"]] == [("stand-in", "model")]
    assert client.get("/v1/models/stand-in").json()["id"] == "stand-in"
    assert_error(client.get("/v1/models/other"), 404, "model_not_found")


def _bomb_url() -> str:
    buffer = io.BytesIO()
    Image.new("L", (2000, 2000)).save(buffer, format="PNG")  # 4 megapixels in a few kilobytes
    return f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"


def _noise_url(side: int) -> str:
    noise = np.random.default_rng(side).integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    return image_data_url(Image.fromarray(noise, "RGB"))


BAD_REQUESTS = {
    "malformed json": (b'{"input": ["a", }', 400, "invalid_json", "not valid JSON"),
    "body not an object": (b'["a"]', 400, "invalid_type", "JSON object"),
    "input missing": ({"model": "stand-in"}, 400, "invalid_value", "input"),
    "input a number": ({"input": 5}, 400, "invalid_type", "'input'"),
    "input empty list": ({"input": []}, 400, "invalid_value", "empty"),
    "input empty string": ({"input": ""}, 400, "invalid_value", "empty"),
    "token ids": ({"input": [[1, 2, 3]]}, 400, "invalid_type", "input[0]"),
    "element of wrong type": ({"input": ["a", True]}, 400, "invalid_type", "input[1]"),
    "text of wrong type": ({"input": [{"text": 3}]}, 400, "invalid_value", "input[0].text"),
    "unknown item key": ({"input": [{"text": "a", "image_url": "x"}]}, 400, "invalid_value", "input[0].image_url"),
    "item without text or image": ({"input": [{"instruction": "a"}]}, 400, "invalid_value", "input[0]"),
    "bad encoding format": ({"input": "a", "encoding_format": "hex"}, 400, "invalid_value", "encoding_format"),
    "dimensions of wrong type": ({"input": "a", "dimensions": "8"}, 400, "invalid_value", "dimensions"),
    "dimensions not the model's": ({"input": "a", "dimensions": 4}, 400, "unsupported_dimensions", "dimensions"),
    "unknown field": ({"input": "a", "temperature": 1}, 400, "invalid_value", "temperature"),
    "unknown model": ({"input": "a", "model": "text-embedding-3-small"}, 404, "model_not_found", "stand-in"),
    "bad base64": ({"input": [{"image": "data:image/png;base64,@@@"}]}, 400, "invalid_image", "input[0].image"),
    "file path as image": (
        {"input": ["a", {"image": "/etc/hostname"}]}, 400, "unsupported_image_source", "input[1].image"
    ),
    "url as image": (
        {"input": [{"image": "http://127.0.0.1:1/x.png"}]}, 400, "unsupported_image_source", "input[0].image"
    ),
    "placeholder without image": ({"input": "<|image_1|> a cat"}, 400, "invalid_value", "input[0]"),
    "too many items": ({"input": ["a"] * 9}, 400, "too_many_items", "at most 8"),
    "text too long": ({"input": ["a", "b" * 201]}, 400, "text_too_long", "input[1]"),
    "instruction too long": (
        {"input": [{"text": "a", "instruction": "b" * 201}]}, 400, "text_too_long", "input[0].instruction"
    ),
    "oversize image": ({"input": [{"image": _noise_url(200)}]}, 413, "image_too_large", "input[0].image"),
    "decompression bomb": ({"input": [{"image": _bomb_url()}]}, 413, "image_too_large", "2000x2000"),
    "images over the request's pixels": (
        {"input": ["a", *[{"image": image_data_url(Image.new("RGB", (400, 400)))}] * 3]},
        413, "image_too_large", "input[3].image",
    ),
    "body too large": ({"input": ["a" * 150] * 2000}, 413, "request_too_large", "300000 bytes"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS), ids=list(BAD_REQUESTS))
def test_bad_requests_get_a_json_error_and_the_server_keeps_answering(stand_in_server, case):
    client, embedder = stand_in_server
    payload, status, code, mentions = BAD_REQUESTS[case]
    content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    response = client.post("/v1/embeddings", content=content, headers={"content-type": "application/json"})
    assert_error(response, status, code, mentions)
    assert_still_answers(client, embedder)


def test_chunked_body_over_the_limit_is_refused_without_content_length(stand_in_server):
    client, embedder = stand_in_server

    def chunks():
        yield b'{"input": ["'
        for _ in range(40):
            yield b"a" * 10_000
        yield b'"]}'

    response = client.post("/v1/embeddings", content=chunks(), headers={"content-type": "application/json"})
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "request_too_large")
    assert_still_answers(client, embedder)


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-key", f"Basic {API_KEY}", "Bearer"])
def test_missing_or_wrong_api_key_is_401(stand_in_server, authorization):
    client, embedder = stand_in_server
    headers = {} if authorization is None else {"Authorization": authorization}
    with httpx.Client(base_url=client.base_url, headers=headers) as anonymous:
        for response in (anonymous.post("/v1/embeddings", json={"input": "a"}), anonymous.get("/v1/models")):
            assert_error(response, 401, "invalid_api_key")
            assert response.headers["www-authenticate"] == "Bearer"
    assert_still_answers(client, embedder)


def test_unknown_route_and_method_get_json_errors(stand_in_server):
    client, _ = stand_in_server
    assert_error(client.get("/v1/nothing"), 404, "http_404")
    assert_error(client.get("/v1/embeddings"), 405, "http_405")


def wait_until(condition, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_model_failure_is_500_for_the_affected_request_only():
    embedder = StandInEmbedder(fail_on="please fail", hold_on="hold the model")
    app = create_app(embedder, ServeConfig(max_batch_size=64, max_wait_ms=5))
    payloads = [{"input": [f"text {i}", f"more {i}"]} for i in range(6)]
    payloads.insert(3, {"input": ["please fail"]})
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        with ThreadPoolExecutor(1 + len(payloads)) as pool:
            # While the model is held on a first request, the seven others queue up together.
            holder = pool.submit(embed, client, {"input": "hold the model"})
            wait_until(lambda: embedder.batch_sizes == [1])
            responses = [pool.submit(embed, client, payload) for payload in payloads]
            wait_until(lambda: client.get("/health").json()["batching"]["queued_items"] == 13)
            embedder.release.set()
            assert holder.result().status_code == 200
            responses = [future.result() for future in responses]
        assert embedder.batch_sizes[:2] == [1, 13]  # the poisoned request shared its batch with all others
        failed = assert_error(responses[3], 500, "embedding_failed")
        assert failed["type"] == "server_error"
        assert "secret" not in responses[3].text and "/srv" not in responses[3].text
        for payload, response in zip(payloads[:3] + payloads[4:], responses[:3] + responses[4:]):
            assert response.status_code == 200
            vectors = [row["embedding"] for row in response.json()["data"]]
            np.testing.assert_array_equal(vectors, [embedder.vector(Item(text=text)) for text in payload["input"]])
        assert_still_answers(client, embedder)


# ------------------------------------------------------------------ the real model, under load
CLIENTS, REQUESTS_PER_CLIENT = 32, 20


def test_concurrent_clients_each_get_their_own_embedding_and_requests_are_batched(tiny_embedder):
    """32 clients x 20 requests, each a distinct text or image item, against the tiny preset."""
    images = [pattern_image(seed, size=(32, 32)) for seed in range(8)]

    def request_for(client_id: int, number: int) -> tuple[dict, Item]:
        text = f"client {client_id} asks question {number}"
        if number % 5 == 4:
            image = images[(client_id + number) % len(images)]
            return {"text": text, "image": image_data_url(image)}, Item(text=text, image=image)
        return text, Item(text=text)

    plan = {(c, n): request_for(c, n) for c in range(CLIENTS) for n in range(REQUESTS_PER_CLIENT)}
    keys = list(plan)
    expected = dict(zip(keys, tiny_embedder.encode([plan[key][1] for key in keys], batch_size=32)))

    app = create_app(tiny_embedder, ServeConfig(max_batch_size=32, max_wait_ms=5))
    answers: dict[tuple[int, int], np.ndarray] = {}
    lock = threading.Lock()
    with live_server(app) as url:

        def client_session(client_id: int) -> None:
            with httpx.Client(base_url=url, timeout=120) as client:
                for number in range(REQUESTS_PER_CLIENT):
                    payload, _ = plan[(client_id, number)]
                    response = client.post("/v1/embeddings", json={"input": [payload]})
                    response.raise_for_status()
                    with lock:
                        answers[(client_id, number)] = np.asarray(response.json()["data"][0]["embedding"])

        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(client_session, range(CLIENTS)))
        batching = httpx.get(f"{url}/health").json()["batching"]

    assert len(answers) == CLIENTS * REQUESTS_PER_CLIENT
    for key in keys:
        np.testing.assert_allclose(answers[key], expected[key], atol=1e-5, err_msg=str(key))
    assert batching["items"] == CLIENTS * REQUESTS_PER_CLIENT
    assert batching["batches"] < CLIENTS * REQUESTS_PER_CLIENT / 2, batching  # requests shared model calls
    assert batching["largest_batch"] > 1


# ------------------------------------------------------------------ the command line
def parse_serve(argv: list[str]):
    import argparse

    from paravec.commands import serve

    parser = argparse.ArgumentParser()
    serve.register(parser.add_subparsers())
    return serve, parser.parse_args(["serve", *argv])


def test_command_line_builds_the_server_config(monkeypatch):
    monkeypatch.setenv("PARAVEC_API_KEY", "from-env")
    serve, args = parse_serve(["--model", "tiny-qwen2-vl", "--max-batch-size", "8", "--max-items", "3"])
    config = serve._config(args)
    assert (args.host, args.port) == ("127.0.0.1", 8000)
    assert config.api_key == "from-env" and config.max_batch_size == 8
    assert config.limits == Limits(max_items=3)
    _, args = parse_serve(["--model", "m", "--api-key", "from-flag"])
    assert serve._config(args).api_key == "from-flag"
    monkeypatch.delenv("PARAVEC_API_KEY")
    assert serve._config(parse_serve(["--model", "m"])[1]).api_key is None


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--max-items", "0"], "--max-items"),
        (["--max-batch-size", "0"], "--max-batch-size"),
        (["--max-wait-ms", "-1"], "--max-wait-ms"),
        (["--port", "70000"], "--port"),
    ],
)
def test_command_line_refuses_bad_settings(argv, message):
    from paravec.cli import CommandError

    serve, args = parse_serve(["--model", "m", *argv])
    with pytest.raises(CommandError, match=message):
        serve._config(args)
