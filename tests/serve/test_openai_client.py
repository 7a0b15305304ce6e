"""The official ``openai`` client against a live server: same vectors as ``Embedder.encode``."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import openai
import pytest

from paravec.items import Item
from paravec.serve.app import ServeConfig, create_app

from .helpers import image_data_url, live_server, pattern_image

API_KEY = "sk-local-test"
TEXTS = ["a red circle above a blue square", "two green triangles", "Ünïcödé text, with punctuation!"]


@pytest.fixture(scope="module")
def served(tiny_embedder):
    app = create_app(tiny_embedder, ServeConfig(api_key=API_KEY, max_batch_size=4, max_wait_ms=2))
    with live_server(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0, timeout=60)
        yield client, url, tiny_embedder


def test_float_embeddings_equal_encode(served):
    client, _, embedder = served
    expected = embedder.encode([Item(text=text) for text in TEXTS])
    response = client.embeddings.create(model=embedder.name, input=TEXTS, encoding_format="float")
    assert response.model == embedder.name
    assert [row.index for row in response.data] == [0, 1, 2]
    np.testing.assert_allclose([row.embedding for row in response.data], expected, atol=1e-5)
    tokens = sum(len(ids) for ids in embedder.tokenizer(TEXTS)["input_ids"])
    assert response.usage.prompt_tokens == response.usage.total_tokens == tokens


def test_single_string_input(served):
    client, _, embedder = served
    response = client.embeddings.create(model=embedder.name, input=TEXTS[0], encoding_format="float")
    np.testing.assert_allclose(response.data[0].embedding, embedder.encode([Item(text=TEXTS[0])])[0], atol=1e-5)


def test_base64_embeddings_decoded_by_the_client_equal_encode(served):
    client, _, embedder = served
    expected = embedder.encode([Item(text=text) for text in TEXTS])
    # Without encoding_format the client asks for base64 and decodes it itself.
    decoded_by_client = client.embeddings.create(model=embedder.name, input=TEXTS)
    np.testing.assert_allclose([row.embedding for row in decoded_by_client.data], expected, atol=1e-5)
    raw = client.embeddings.create(model=embedder.name, input=TEXTS, encoding_format="base64")
    decoded = [np.frombuffer(base64.b64decode(row.embedding), dtype="<f4") for row in raw.data]
    np.testing.assert_allclose(decoded, expected, atol=1e-5)


def test_request_larger_than_a_batch_keeps_input_order(served):
    client, _, embedder = served
    texts = [f"caption number {index} of the set" for index in range(11)]  # max batch size is 4
    response = client.embeddings.create(model=embedder.name, input=texts, encoding_format="float")
    np.testing.assert_allclose(
        [row.embedding for row in response.data], embedder.encode([Item(text=t) for t in texts]), atol=1e-5
    )


def test_image_items_through_extra_body_and_httpx_equal_encode(served):
    client, url, embedder = served
    image_a, image_b = pattern_image(11), pattern_image(12, size=(64, 56))
    items = [
        Item(image=image_a),
        Item(text="a photo of shapes", image=image_b),
        Item(text="what colour is the circle?", image=image_a, instruction="Answer the question about the image"),
        Item(text="plain text in a mixed list"),
    ]
    wire = [
        {"image": image_data_url(image_a)},
        {"text": "a photo of shapes", "image": image_data_url(image_b)},
        {"text": "what colour is the circle?", "image": image_data_url(image_a),
         "instruction": "Answer the question about the image"},
        "plain text in a mixed list",
    ]
    expected = embedder.encode(items)
    via_openai = client.embeddings.create(
        model=embedder.name, input=[], encoding_format="float", extra_body={"input": wire}
    )
    np.testing.assert_allclose([row.embedding for row in via_openai.data], expected, atol=1e-5)
    via_httpx = httpx.post(
        f"{url}/v1/embeddings",
        json={"model": embedder.name, "input": wire, "encoding_format": "base64"},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=60,
    )
    assert via_httpx.status_code == 200, via_httpx.text
    decoded = [np.frombuffer(base64.b64decode(row["embedding"]), dtype="<f4") for row in via_httpx.json()["data"]]
    np.testing.assert_allclose(decoded, expected, atol=1e-5)


def test_client_errors_map_to_openai_exceptions(served):
    client, url, embedder = served
    with pytest.raises(openai.BadRequestError) as bad:
        client.embeddings.create(model=embedder.name, input=[{"image": "/etc/passwd"}], encoding_format="float")
    assert bad.value.body["param"] == "input[0].image"
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=embedder.name, input="x", dimensions=embedder.dim // 2)
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="text-embedding-3-small", input="x")
    anonymous = openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.embeddings.create(model=embedder.name, input="x")
    assert [model.id for model in client.models.list()] == [embedder.name]
