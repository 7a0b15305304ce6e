"""Checkpoints laid out as VLM2Vec writes them load as baseline embedders and embed as VLM2Vec does.

The reference forward below is written from VLM2Vec's published code (V1 ``src/dataset.py``,
``src/model.py``, ``eval.py``), not from paravec's: the ``<|image_1|>`` placeholder becomes the
bare ``<|image_pad|>``, images are resized to 1344x1344 (``process_image``, high), the Hugging
Face model runs whole (``output_hidden_states``), positions are plain 1-D on every M-RoPE axis
(the transformers release VLM2Vec used finds images only after ``<|vision_start|>``, which its
prompts never hold), the last real token is pooled as its ``_pooling`` does, and the vector is
L2-normalised.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from PIL import Image
from transformers import Qwen2VLForConditionalGeneration

import paravec
from paravec.items import Item
from paravec.presets import build_preset

#: VLM2Vec's lora_target_modules default (V1 arguments.py); PEFT matches them as name suffixes.
VLM2VEC_TARGETS = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj", "k_proj", "q_proj", "out_proj", "v_proj"]
COLOURS = [(220, 30, 30), (30, 200, 60), (40, 40, 230)]


def _items():
    return [
        Item(text="<|image_1|>\nRepresent the given image for classification\n", image=Image.new("RGB", (60, 40), COLOURS[0])),
        Item(text="a green square"),
        Item(text="<|image_1|>\nRepresent the given image.\n", image=Image.new("RGB", (30, 90), COLOURS[2])),
        Item(text="A much longer caption, about a blue circle drawn above a small red triangle on grey"),
    ]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A Qwen2-VL base checkpoint folder (the tiny preset, saved as Hugging Face saves it)."""
    folder = tmp_path_factory.mktemp("base")
    _, model, processor = build_preset("tiny-qwen2-vl")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def merged(base, tmp_path_factory):
    """VLM2Vec's merged layout (``archive/merge.py``): a full model saved with pickle weights."""
    folder = tmp_path_factory.mktemp("merged")
    model = Qwen2VLForConditionalGeneration.from_pretrained(base)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(1)
        for parameter in model.model.language_model.parameters():  # "fine-tuned" weights
            parameter.add_(0.02 * torch.randn_like(parameter))
    model.save_pretrained(folder, safe_serialization=False)
    paravec.presets.build_preset("tiny-qwen2-vl")[2].save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def adapter(base, tmp_path_factory):
    """VLM2Vec's LoRA layout: a PEFT DoRA adapter (its build: use_dora, gaussian init) naming the
    base model, with the base's config.json and the processor beside it."""
    folder = tmp_path_factory.mktemp("vlm2vec-lora")
    model = Qwen2VLForConditionalGeneration.from_pretrained(base)
    config = LoraConfig(r=4, lora_alpha=64, lora_dropout=0.1, target_modules=VLM2VEC_TARGETS,
                        init_lora_weights="gaussian", use_dora=True)
    peft_model = get_peft_model(model, config)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(2)
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:  # trained adapters have non-zero B
                parameter.copy_(0.05 * torch.randn_like(parameter))
    peft_model.save_pretrained(folder, safe_serialization=False)
    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(base)
    model.config.to_json_file(folder / "config.json")
    paravec.presets.build_preset("tiny-qwen2-vl")[2].save_pretrained(folder)
    return folder


def vlm2vec_embeddings(model: Qwen2VLForConditionalGeneration, processor, items) -> np.ndarray:
    texts = [item.text.replace("<|image_1|>", "<|image_pad|>") for item in items]
    images = [item.image.resize((1344, 1344)) for item in items if item.image is not None]
    inputs = processor(text=texts, images=images or None, padding=True, return_tensors="pt")
    mask = inputs["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0).unsqueeze(0).expand(3, -1, -1)
    with torch.no_grad():
        hidden = model(**inputs, position_ids=positions, output_hidden_states=True, return_dict=True).hidden_states[-1]
    left_padding = mask[:, -1].sum() == mask.shape[0]
    if left_padding:
        reps = hidden[torch.arange(hidden.shape[0]), -1, :]
    else:
        reps = hidden[torch.arange(hidden.shape[0]), mask.sum(dim=1) - 1]
    return F.normalize(reps, p=2, dim=-1).numpy()


def test_a_merged_vlm2vec_checkpoint_embeds_as_vlm2vec(merged):
    embedder = paravec.load(merged, folder_format="vlm2vec")
    assert embedder.mode == "no-prefix" and embedder.spec.info["format"] == "vlm2vec"
    reference = vlm2vec_embeddings(Qwen2VLForConditionalGeneration.from_pretrained(merged).eval(),
                                   build_preset("tiny-qwen2-vl")[2], _items())
    np.testing.assert_allclose(embedder.encode(_items(), batch_size=4), reference, atol=1e-5)
    np.testing.assert_allclose(embedder.encode(_items(), batch_size=1), reference, atol=1e-5)


def test_a_vlm2vec_lora_folder_is_detected_merged_and_embeds_as_vlm2vec(adapter, base):
    embedder = paravec.load(adapter)  # adapter_config.json: read as VLM2Vec's without asking
    assert embedder.spec.backbone == str(base) and embedder.spec.lora is None
    model = PeftModel.from_pretrained(Qwen2VLForConditionalGeneration.from_pretrained(base), adapter).merge_and_unload()
    reference = vlm2vec_embeddings(model.eval(), build_preset("tiny-qwen2-vl")[2], _items())
    np.testing.assert_allclose(embedder.encode(_items(), batch_size=4), reference, atol=1e-5)


def test_the_paper_format_differs_from_vlm2vecs(merged):
    """The check above can fail: paravec's own prompt format gives other embeddings."""
    vlm2vec = paravec.load(merged, folder_format="vlm2vec").encode(_items())
    paper = paravec.load(merged).encode(_items())  # a plain HF checkpoint: paravec's defaults
    assert np.abs(vlm2vec[[0, 2]] - paper[[0, 2]]).max() > 1e-3


def test_bad_vlm2vec_folders_are_named(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8}))
    with pytest.raises(ValueError, match="adapter_config.json: not a PEFT adapter config"):
        paravec.load(tmp_path)
    with pytest.raises(ValueError, match="not a paravec model folder"):
        paravec.load(tmp_path, folder_format="paravec")
