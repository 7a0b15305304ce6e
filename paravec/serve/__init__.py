"""``paravec serve``: an OpenAI-compatible embeddings endpoint for one paravec model.

Start it with ``paravec serve --model DIR|PRESET`` (binds 127.0.0.1:8000; ``--api-key`` or the
``PARAVEC_API_KEY`` environment variable turns on ``Authorization: Bearer`` checks on ``/v1/*``).

Endpoints
---------
``POST /v1/embeddings``
    OpenAI's embeddings request: ``input`` (a string or a list of strings), ``model`` (optional;
    when given it must be the served model's name, else 404), ``encoding_format`` ``"float"``
    (default) or ``"base64"`` (little-endian float32 bytes, as OpenAI clients decode them),
    ``dimensions`` (accepted only when equal to the model's dimension: these models are not trained
    to be truncated, so shortened vectors are refused rather than silently degraded), ``user``
    (ignored). Token-id arrays are not accepted. Embeddings are L2-normalised.
    ``usage.prompt_tokens`` counts the prompt text with the model's tokenizer (image tokens not
    counted).

    Extension for images: an element of ``input`` may be an object ::

        {"text": "a red car", "image": "data:image/png;base64,iVBOR...", "instruction": "Find ..."}

    with any subset of the keys, but at least ``text`` or ``image``. ``instruction`` is the task
    definition of a query (the ``Instruct: ... Query: ...`` template); targets carry none. Images are
    accepted only as base64 data URLs of type ``image/png``, ``image/jpeg`` or ``image/webp``: the
    server never opens a file path or fetches a URL named by a client (400 naming the field). With
    the ``openai`` client, send such a list through ``extra_body={"input": [...]}``.

``GET /v1/models``, ``GET /v1/models/{id}``
    OpenAI's model list, holding the one served model.

``GET /health``
    ``{"status": "ok", "model", "dim", "batching": {...}}``; ``batching`` counts the model calls and
    their sizes, and the items waiting in the queue. Not behind the API key, so load balancers can
    probe it.

Batching: concurrent requests share model calls of up to ``--max-batch-size`` items; a forming
batch waits at most ``--max-wait-ms`` for requests already being received, and a lone request
does not wait at all (:mod:`~paravec.serve.batcher`).

Errors are OpenAI-shaped, ``{"error": {"message", "type", "param", "code"}}``: 400 for invalid
requests (including what FastAPI would answer 422), 401 for a missing or wrong key, 404 for an
unknown model, 413 for a body, image or pixel count over its limit, 500 when the model fails
(only the requests whose inputs were in the failing batch; no traceback is sent).

Modules: :mod:`~paravec.serve.app` (routes), :mod:`~paravec.serve.batcher` (micro-batching),
:mod:`~paravec.serve.schema` (wire format), :mod:`~paravec.serve.limits` (limits, image decoding).
"""
