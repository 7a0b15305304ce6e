"""image_resolution high/low give VLM2Vec's image tokens, computed here independently of paravec.

VLM2Vec (V1 ``src/dataset.py``, ``process_image``) resizes every image to a square before the
processor: Qwen2-VL 1344 (high) / 128 (low), LLaVA-NeXT 1344 / 336. The token counts below are
computed from those published rules (Qwen2-VL's ``smart_resize``, LLaVA-NeXT's any-resolution
grid) and compared with what paravec's adapters produce through the real Hugging Face processors,
configured as the released checkpoints configure them.
"""

from __future__ import annotations

import io
import json
import math
from contextlib import redirect_stdout

import pytest
from PIL import Image
from transformers import CLIPVisionConfig, LlavaNextConfig, LlavaNextProcessor
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from paravec.backbones.llava_next import LlavaNextAdapter
from paravec.backbones.qwen2_vl import Qwen2VLAdapter
from paravec.backbones.tiny import LLAVA_SPECIALS
from paravec.backbones.tokenizer import build_tokenizer
from paravec.presets import load_backbone

SIZES = [(640, 480), (300, 1000)]  # (width, height): landscape and a tall portrait
VLM2VEC_SQUARES = {"qwen2_vl": {"high": 1344, "low": 128}, "llava_next": {"high": 1344, "low": 336}}


# ------------------------------------------------------------------ the reference rules
def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's resize rule, as its image processor publishes it."""
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar, w_bar = math.floor(height / beta / factor) * factor, math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def vlm2vec_qwen_tokens(side: int, min_pixels: int, max_pixels: int, patch: int = 14, merge: int = 2) -> int:
    """Image tokens after VLM2Vec's square resize and Qwen2-VL's processor: one per merged patch."""
    height, width = smart_resize(side, side, patch * merge, min_pixels, max_pixels)
    return (height // (patch * merge)) * (width // (patch * merge))


def best_resolution(size: tuple[int, int], pinpoints: list[list[int]]) -> tuple[int, int]:
    """LLaVA-NeXT's choice of grid: the most effective pixels, then the least waste."""
    height, width = size
    best, best_effective, best_waste = None, -1, math.inf
    for grid_height, grid_width in pinpoints:
        scale = min(grid_width / width, grid_height / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        waste = grid_width * grid_height - effective
        if effective > best_effective or (effective == best_effective and waste < best_waste):
            best, best_effective, best_waste = (grid_height, grid_width), effective, waste
    return best


def llava_next_tokens(size: tuple[int, int], pinpoints: list[list[int]], tile: int = 336, patch: int = 14) -> int:
    """Image tokens of LLaVA-NeXT (feature strategy 'default': no CLS): the grid's features with the
    padding removed, one newline per feature row, plus the base tile."""
    height, width = size
    grid_height, grid_width = best_resolution(size, pinpoints)
    per_tile = tile // patch
    current_height, current_width = per_tile * (grid_height // tile), per_tile * (grid_width // tile)
    if width / height > current_width / current_height:
        new_height = int(round(height * (current_width / width), 7))
        current_height -= 2 * ((current_height - new_height) // 2)
    else:
        new_width = int(round(width * (current_height / height), 7))
        current_width -= 2 * ((current_width - new_width) // 2)
    return current_height * current_width + current_height + per_tile * per_tile


# ---------------------------------------------------------- adapters as checkpoints set them
QWEN_CHECKPOINT_PIXELS = (56 * 56, 28 * 28 * 16384)  # Qwen2-VL-2B-Instruct's preprocessor_config.json
LLAVA_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]  # llava-v1.6-mistral-7b-hf


@pytest.fixture(scope="module")
def qwen_checkpoint_like():
    """The tiny Qwen2-VL model with the released checkpoint's image processor settings."""
    tiny = load_backbone("tiny-qwen2-vl")
    processor = Qwen2VLAdapter.processor_class(
        image_processor=Qwen2VLImageProcessorPil(min_pixels=QWEN_CHECKPOINT_PIXELS[0], max_pixels=QWEN_CHECKPOINT_PIXELS[1]),
        tokenizer=tiny.tokenizer,
    )
    return Qwen2VLAdapter(tiny.model, processor)


@pytest.fixture(scope="module")
def llava_checkpoint_like():
    """A small LLaVA-NeXT with the released checkpoint's tiling (336 px CLIP tiles, its grids)."""
    tokenizer = build_tokenizer(LLAVA_SPECIALS, pad_token="<unk>", eos_token="</s>")
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                       image_size=336, patch_size=14, projection_dim=32),
        text_config=dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), image_grid_pinpoints=LLAVA_PINPOINTS,
        vision_feature_select_strategy="default", vision_feature_layer=-1,
    )
    processor = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                                   image_grid_pinpoints=LLAVA_PINPOINTS),
        tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )
    from transformers import LlavaNextForConditionalGeneration

    return LlavaNextAdapter(LlavaNextForConditionalGeneration(config).eval(), processor)


def image_tokens(adapter, resolution, size) -> int:
    adapter.apply_resolution(resolution)
    batch = adapter.collate([adapter.image_token], [Image.new("RGB", size, (90, 140, 200))])
    return int((batch["input_ids"] == adapter.image_token_id).sum())


# ------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("resolution", ["high", "low"])
def test_qwen2_vl_high_and_low_give_vlm2vecs_tokens(qwen_checkpoint_like, size, resolution):
    expected = vlm2vec_qwen_tokens(VLM2VEC_SQUARES["qwen2_vl"][resolution], *QWEN_CHECKPOINT_PIXELS)
    assert image_tokens(qwen_checkpoint_like, resolution, size) == expected
    assert expected == {"high": 2304, "low": 25}[resolution]  # 96x96 and 10x10 patches, 2x2 merged


def test_a_pixel_cap_is_not_vlm2vecs_resize(qwen_checkpoint_like):
    """The issue's 640x480 case: a 1344*1344 pixel budget keeps the photo's size (391 tokens)."""
    capped = image_tokens(qwen_checkpoint_like, f"max_pixels={1344 * 1344}", (640, 480))
    height, width = smart_resize(480, 640, 28, 28 * 28, 1344 * 1344)
    assert capped == (height // 28) * (width // 28) == 391
    assert image_tokens(qwen_checkpoint_like, "default", (640, 480)) == 391  # the checkpoint's own settings


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("resolution", ["high", "low"])
def test_llava_next_high_and_low_give_vlm2vecs_tokens(llava_checkpoint_like, size, resolution):
    side = VLM2VEC_SQUARES["llava_next"][resolution]
    expected = llava_next_tokens((side, side), LLAVA_PINPOINTS)
    assert image_tokens(llava_checkpoint_like, resolution, size) == expected
    assert expected == {"high": 2928, "low": 1176}[resolution]


@pytest.mark.parametrize("size", SIZES)
def test_the_tiny_presets_follow_the_same_rule_under_their_own_processor(size):
    adapter = load_backbone("tiny-qwen2-vl")  # processor between 28*28 and 56*56 pixels
    for resolution, side in VLM2VEC_SQUARES["qwen2_vl"].items():
        assert image_tokens(adapter, resolution, size) == vlm2vec_qwen_tokens(side, 28 * 28, 56 * 56)


def test_paravec_inspect_reports_prompt_tokens_and_sizes(tmp_path):
    from paravec.cli import main

    Image.new("RGB", (640, 480), (200, 30, 30)).save(tmp_path / "photo.png")
    (tmp_path / "items.jsonl").write_text(
        json.dumps({"text": "<|image_1|> What is shown?", "image": "photo.png", "instruction": "Answer"}) + "\n"
        + json.dumps({"text": "a caption"}) + "\n"
    )
    outputs = {}
    for prompt_format in ("paper", "vlm2vec"):
        stdout = io.StringIO()
        with redirect_stdout(stdout):
            assert main(["inspect", "--model", "tiny-qwen2-vl", "--input", str(tmp_path / "items.jsonl"),
                         "--image-root", str(tmp_path), "--resolution", "high", "--prompt-format", prompt_format,
                         "--threads", "1"]) == 0
        outputs[prompt_format] = [json.loads(line) for line in stdout.getvalue().splitlines()]
    paper, vlm2vec = outputs["paper"], outputs["vlm2vec"]
    assert paper[0]["prompt"] == "<|vision_start|><|image_pad|><|vision_end|> Instruct: Answer Query: What is shown?"
    assert vlm2vec[0]["prompt"] == "<|image_pad|> Answer What is shown?"
    for entry in (paper[0], vlm2vec[0]):
        assert entry["image_size"] == [1344, 1344] and entry["processed_size"] == [56, 56]
        assert entry["num_image_tokens"] == vlm2vec_qwen_tokens(1344, 28 * 28, 56 * 56) == 4
        assert entry["prefix_slots"] == 20  # a preset loads as an untrained PDF model
    assert paper[0]["num_tokens"] - vlm2vec[0]["num_tokens"] >= 2  # vision start/end and the template words
    assert paper[1] == {**paper[1], "prompt": "a caption", "num_image_tokens": 0} and "image_size" not in paper[1]
