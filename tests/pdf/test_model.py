"""The PDF embedding model on every family's tiny preset."""

import pytest
import torch
from PIL import Image

from paravec.presets import load_backbone
from paravec.items import Item
from paravec.pdf.model import PDFConfig, PDFEmbeddingModel

FAMILIES = ["tiny-qwen2-vl", "tiny-qwen2.5-vl", "tiny-llava-next", "tiny-smolvlm"]


def _items():
    red = Image.new("RGB", (60, 48), (220, 30, 30))
    green = Image.new("RGB", (40, 56), (30, 200, 60))
    return [
        Item(text="what colour is the shape?", image=red, instruction="Answer the question about the image"),
        Item(text="a short caption about nothing in particular"),
        Item(image=green),
        Item(text="<|image_1|> a picture with a placeholder", image=red),
    ]


@pytest.fixture(scope="module", params=FAMILIES)
def model(request):
    adapter = load_backbone(request.param)
    return PDFEmbeddingModel(adapter, PDFConfig(num_paths=2, prefix_len=4, prefix_init="normal", prefix_init_std=0.5)).eval()


def test_parallel_forward_gives_distinct_paths_and_an_aggregate(model):
    batch = model.prepare(_items())
    with torch.no_grad():
        out = model(batch)
    assert out.paths.shape == (4, 2, model.dim)
    assert out.aggregate.shape == (4, model.dim)
    assert torch.allclose(out.weights.sum(-1), torch.ones(4))
    assert (out.paths[:, 0] - out.paths[:, 1]).abs().max() > 1e-3
    expected = (out.weights.unsqueeze(-1) * out.paths).sum(1)
    assert torch.allclose(out.aggregate, expected, atol=1e-6)


def test_single_path_inference_equals_its_slice_of_the_parallel_run(model):
    batch = model.prepare(_items())
    with torch.no_grad():
        parallel = model(batch).paths
        for path in range(2):
            single = model.embed(batch, f"path{path}")
            assert torch.allclose(single, parallel[:, path], atol=1e-5)


def test_sequential_path_batching_matches_parallel(model):
    batch = model.prepare(_items())
    parallel_config = model.encoder.config
    try:
        model.encoder.config = PDFConfig(**{**parallel_config.to_dict(), "path_batching": "sequential"})
        with torch.no_grad():
            sequential = model(batch).paths
    finally:
        model.encoder.config = parallel_config
    with torch.no_grad():
        assert torch.allclose(sequential, model(batch).paths, atol=1e-5)


def test_vision_tower_runs_once_per_input_whatever_n(model):
    calls = []
    vision = model.adapter.vision_modules[0]

    def record(module, args, kwargs, output):
        pixels = args[0] if args else kwargs["pixel_values"]
        calls.append(pixels.shape[0])

    handle = vision.register_forward_hook(record, with_kwargs=True)
    try:
        batch = model.prepare(_items())
        with torch.no_grad():
            model(batch)
        parallel_calls = list(calls)
        calls.clear()
        with torch.no_grad():
            model.embed(batch, "path0")
    finally:
        handle.remove()
    assert len(parallel_calls) == 1
    assert parallel_calls == calls  # same images, same amount of vision work, N=2 or one path


def test_left_and_right_padding_give_the_same_embeddings(model):
    items = _items()
    with torch.no_grad():
        right = model(model.prepare(items, padding_side="right"))
        left = model(model.prepare(items, padding_side="left"))
        no_prefix_right = model.embed(model.prepare(items, padding_side="right"), "no-prefix")
        no_prefix_left = model.embed(model.prepare(items, padding_side="left"), "no-prefix")
    assert torch.allclose(right.paths, left.paths, atol=1e-5)
    assert torch.allclose(no_prefix_right, no_prefix_left, atol=1e-5)


def test_no_prefix_mode_differs_from_the_prefixed_paths(model):
    batch = model.prepare(_items())
    with torch.no_grad():
        plain = model.embed(batch, "no-prefix")
        path0 = model.embed(batch, "path0")
    assert (plain - path0).abs().max() > 1e-3


def test_lm_head_never_runs(model):
    calls = []
    handle = model.backbone.lm_head.register_forward_hook(lambda *args: calls.append(1))
    try:
        with torch.no_grad():
            model(model.prepare(_items()))
    finally:
        handle.remove()
    assert calls == []


def test_bad_modes_are_refused(model):
    batch = model.prepare(_items()[:1])
    for mode in ("path2", "sideways"):
        with pytest.raises(ValueError):
            model.embed(batch, mode)


def test_baseline_model_has_no_prefix_and_one_path():
    adapter = load_backbone("tiny-qwen2-vl")
    baseline = PDFEmbeddingModel(adapter, PDFConfig(num_paths=1, prefix_len=0)).eval()
    batch = baseline.prepare(_items())
    with torch.no_grad():
        out = baseline(batch)
        embedded = baseline.embed(batch)
    assert out.paths.shape[1] == 1 and out.aggregate is None
    assert torch.allclose(out.paths[:, 0], embedded)
    assert baseline.method_parameters() == {}
    with pytest.raises(ValueError):
        baseline.embed(batch, "path0")


def test_gradient_checkpointing_keeps_the_prefix_and_the_gradients():
    def grads(checkpointing: bool):
        from paravec.backbones import BackboneOptions

        adapter = load_backbone("tiny-qwen2-vl", BackboneOptions(gradient_checkpointing=checkpointing))
        model = PDFEmbeddingModel(adapter, PDFConfig(num_paths=2, prefix_len=3, prefix_init="normal", prefix_init_std=0.5)).train()
        out = model(model.prepare(_items()))
        (out.aggregate.pow(2).sum() + out.paths.pow(2).sum()).backward()
        return out.paths.detach(), model.prefix.keys.grad.clone()

    plain, checkpointed = grads(False), grads(True)
    assert torch.allclose(plain[0], checkpointed[0], atol=1e-5)
    assert torch.allclose(plain[1], checkpointed[1], atol=1e-5)
    assert plain[1].abs().sum() > 0


def test_long_texts_are_truncated_before_the_prompt_is_built():
    from paravec.backbones import BackboneOptions

    adapter = load_backbone("tiny-qwen2-vl", BackboneOptions(max_text_tokens=5))
    model = PDFEmbeddingModel(adapter, PDFConfig(num_paths=2, prefix_len=2))
    image = Image.new("RGB", (40, 40), (200, 10, 10))
    long_text = "a red circle " * 40
    batch = model.prepare([Item(text=long_text), Item(text="<|image_1|> " + long_text, image=image)])
    lengths = batch["attention_mask"].sum(-1)
    image_tokens = int((batch["input_ids"][1] == adapter.image_token_id).sum())
    assert int(lengths[0]) <= 5 + 1
    assert image_tokens > 0 and int(lengths[1]) <= 5 + image_tokens + 4  # the image survives, the text is cut
    unlimited = PDFEmbeddingModel(load_backbone("tiny-qwen2-vl"), PDFConfig(num_paths=2, prefix_len=2))
    assert int(unlimited.prepare([Item(text=long_text)])["attention_mask"].sum()) > 40


def test_precomputed_inputs_give_the_same_paths_and_gradients_when_inputs_are_frozen():
    from paravec.backbones.lora import LoraSettings, apply_lora

    adapter = load_backbone("tiny-qwen2-vl")
    apply_lora(adapter, LoraSettings(r=4, alpha=8, dropout=0.0))  # freezes vision and embeddings
    model = PDFEmbeddingModel(adapter, PDFConfig(num_paths=2, prefix_len=3)).train()
    batch = model.prepare(_items())
    assert model.encoder.inputs_are_frozen
    calls = []
    handle = adapter.vision_modules[0].register_forward_hook(lambda *args: calls.append(1))
    try:
        cached = model.encoder.with_precomputed_inputs(batch)
        assert len(calls) == 1
        plain = model.encoder(batch)
        plain.pow(2).sum().backward()
        reference = model.prefix.keys.grad.clone()
        model.zero_grad()
        calls.clear()
        again = model.encoder(cached)
        again.pow(2).sum().backward()
    finally:
        handle.remove()
    assert calls == []  # the re-run does not touch the vision tower
    assert torch.allclose(plain, again, atol=1e-6)
    assert torch.allclose(model.prefix.keys.grad, reference, atol=1e-6)
    trainable_inputs = PDFEmbeddingModel(load_backbone("tiny-qwen2-vl"), PDFConfig(num_paths=2, prefix_len=3))
    assert not trainable_inputs.encoder.inputs_are_frozen
    assert trainable_inputs.encoder.with_precomputed_inputs(batch) is batch
