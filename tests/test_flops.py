"""The analytic counts of paravec.flops against the paper's Table 4 and against real models.

Parameters are checked against models instantiated from configs (tiny ones, and the full-size
built-ins on the meta device), LoRA against PEFT, FLOPs against torch's FlopCounterMode on tiny
forwards, so the formulas are tied to what the Hugging Face implementations actually compute.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModelForImageTextToText, DynamicCache, LlavaNextConfig, Qwen2VLConfig

from paravec import cli, flops

# PDF paper, Table 4: VLM2Vec-Qwen2VL (2B), one 1344x1344 image.
PAPER_BASELINE_TFLOPS = 18.925
PAPER_SINGLE_PREFIX_TFLOPS = 18.937
PAPER_AGGREGATE_TFLOPS = 24.999
PAPER_BASELINE_LORA8_PARAMS_B = 2.214
PAPER_PDF_PARAMS_B = 2.219

WEIGHT_MATMULS = {torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.convolution}
IMAGE_TOKEN = 290


def tiny_qwen2_vl_config(tied: bool = True) -> Qwen2VLConfig:
    config = Qwen2VLConfig(
        text_config={
            "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "vocab_size": 300,
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
        },
        vision_config={"depth": 2, "embed_dim": 32, "num_heads": 4, "hidden_size": 64, "mlp_ratio": 4},
        image_token_id=IMAGE_TOKEN, video_token_id=291, vision_start_token_id=292, vision_end_token_id=293,
        tie_word_embeddings=tied,
    )
    config._attn_implementation = "eager"  # attention as plain matmuls, which FlopCounterMode sees
    return config


def tiny_llava_next_config() -> LlavaNextConfig:
    config = LlavaNextConfig(
        text_config={
            "model_type": "mistral", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
        },
        vision_config={
            "model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
            "num_attention_heads": 4, "num_hidden_layers": 2, "image_size": 56, "patch_size": 14,
        },
        image_grid_pinpoints=[[56, 112], [112, 56], [112, 112]], image_token_index=IMAGE_TOKEN,
    )
    config._attn_implementation = "eager"
    return config


def build(config) -> torch.nn.Module:
    torch.manual_seed(0)
    return AutoModelForImageTextToText.from_config(config).eval()


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # tied weights are yielded once


def counted(flop_counter: FlopCounterMode, ops: set) -> int:
    return sum(n for op, n in flop_counter.get_flop_counts()["Global"].items() if op in ops)


def test_table4_qwen2_vl_2b_within_3_percent():
    arch = flops.architecture(flops.load_config("qwen2-vl-2b"))
    cost = flops.estimate(arch, 1344, 1344, text_tokens=10, paths=2, prefix_len=20)
    assert (cost.tokens.vision, cost.tokens.language) == (9216, 2304)
    assert cost.baseline / 1e12 == pytest.approx(PAPER_BASELINE_TFLOPS, rel=0.03)
    assert cost.single_prefix / 1e12 == pytest.approx(PAPER_SINGLE_PREFIX_TFLOPS, rel=0.03)
    assert cost.aggregate / 1e12 == pytest.approx(PAPER_AGGREGATE_TFLOPS, rel=0.03)
    assert cost.aggregate / cost.baseline == pytest.approx(1.32, abs=0.005)
    assert cost.single_prefix > cost.baseline
    lora = arch.lora_params(8)
    assert round((arch.params + lora) / 1e9, 3) == PAPER_BASELINE_LORA8_PARAMS_B
    pdf_extra = arch.prefix_params(2, 20) + arch.aggregator_params(2)
    assert round((arch.params + lora + pdf_extra) / 1e9, 3) == PAPER_PDF_PARAMS_B


@pytest.mark.parametrize("name", sorted(flops.BUILTIN_CONFIGS))
def test_params_of_builtin_configs_match_full_size_models(name):
    config_dict = flops.BUILTIN_CONFIGS[name]
    with torch.device("meta"):  # shapes only: a 7B model costs no memory
        model = AutoModelForImageTextToText.from_config(flops.transformers_config(config_dict))
    assert flops.architecture(flops.load_config(name)).params == n_params(model)


@pytest.mark.parametrize(
    "config", [tiny_qwen2_vl_config(tied=True), tiny_qwen2_vl_config(tied=False), tiny_llava_next_config()],
    ids=["qwen2-vl-tied", "qwen2-vl-untied", "llava-next"],
)
def test_params_and_lora_params_match_instantiated_models(config):
    from peft import LoraConfig, get_peft_model

    model = build(config)
    arch = flops.architecture(config)
    assert arch.params == n_params(model)
    peft_model = get_peft_model(model, LoraConfig(r=8, target_modules=list(flops.VLM2VEC_LORA_TARGETS)))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert trainable > 0
    assert arch.lora_params(8) == trainable


def test_pdf_params_match_the_prefix_bank_and_aggregator():
    from paravec.pdf.aggregator import Aggregator
    from paravec.pdf.prefix import KVGeometry, PrefixBank

    config = tiny_qwen2_vl_config()
    text = config.text_config
    arch = flops.architecture(config)
    geometry = KVGeometry(text.num_hidden_layers, text.num_key_value_heads, text.hidden_size // text.num_attention_heads)
    assert arch.prefix_params(3, 5) == n_params(PrefixBank(geometry, num_paths=3, prefix_len=5))
    assert arch.aggregator_params(3) == n_params(Aggregator(text.hidden_size, num_paths=3))


@pytest.mark.parametrize("name", ["tiny-qwen2-vl", "tiny-llava-next"])
def test_params_of_presets_match_their_models(name):
    from paravec.presets import build_preset

    _adapter, model, _processor = build_preset(name)
    assert flops.architecture(flops.load_config(name)).params == n_params(model)


def test_qwen2_vl_flops_match_flop_counter():
    config = tiny_qwen2_vl_config()
    model = build(config)
    grid_rows, grid_cols = 4, 6  # a 56 x 84 px image in 14 px patches
    image_tokens = grid_rows * grid_cols // 4
    ids = torch.tensor([[292] + [IMAGE_TOKEN] * image_tokens + [293, 5, 6, 7]])
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "mm_token_type_ids": (ids == IMAGE_TOKEN).long(),
        "pixel_values": torch.randn(grid_rows * grid_cols, 3 * 2 * 14 * 14),
        "image_grid_thw": torch.tensor([[1, grid_rows, grid_cols]]),
    }
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(**inputs)

    cost = flops.estimate(flops.architecture(config), 56, 84, ids.shape[1] - image_tokens, paths=1, prefix_len=0)
    assert cost.tokens.language == image_tokens
    assert counted(counter, WEIGHT_MATMULS) == cost.baseline
    assert counted(counter, {torch.ops.aten.bmm}) == cost.attention_scores


def test_llava_next_flops_match_flop_counter():
    config = tiny_llava_next_config()
    model = build(config)
    height, width = 40, 112  # a 1 x 2 tile grid whose padding rows are cut away
    cost = flops.estimate(flops.architecture(config), height, width, text_tokens=3, paths=1, prefix_len=0)
    tiles = 3
    ids = torch.tensor([[5] + [IMAGE_TOKEN] * cost.tokens.language + [6, 7]])
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn(1, tiles, 3, 56, 56),
        "image_sizes": torch.tensor([[height, width]]),
    }
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(**inputs)  # raises if the image-token count disagrees with the model's features

    assert cost.tokens.vision == tiles * (4 * 4 + 1)
    assert counted(counter, WEIGHT_MATMULS) == cost.baseline


def test_prefix_attention_flops_match_flop_counter():
    config = tiny_qwen2_vl_config()
    text = config.text_config
    decoder = build(config).model.language_model
    length, prefix_len = 7, 5
    kv_shape = (1, text.num_key_value_heads, prefix_len, text.hidden_size // text.num_attention_heads)

    def attention_flops(prefix: bool) -> int:
        cache = DynamicCache(config=text)
        if prefix:
            for layer in range(text.num_hidden_layers):
                cache.update(torch.randn(kv_shape), torch.randn(kv_shape), layer)
        past = prefix_len if prefix else 0
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            decoder(
                inputs_embeds=torch.randn(1, length, text.hidden_size),
                attention_mask=torch.ones(1, past + length, dtype=torch.long),
                position_ids=torch.arange(length)[None],
                past_key_values=cache,
            )
        return counted(counter, {torch.ops.aten.bmm})

    cost = flops.estimate(flops.architecture(config), 56, 56, text_tokens=length - 4, paths=1, prefix_len=prefix_len)
    assert cost.sequence_length == length
    assert attention_flops(prefix=True) - attention_flops(prefix=False) == cost.prefix_attention


def test_qwen2_vl_image_processor_agrees_on_patch_count():
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": flops.QWEN2_VL_MIN_PIXELS, "longest_edge": flops.QWEN2_VL_MAX_PIXELS}
    )
    arch = flops.architecture(flops.load_config("qwen2-vl-2b"))
    for height, width in [(1344, 1344), (500, 333)]:
        grid = processor(Image.new("RGB", (width, height)), return_tensors="pt")["image_grid_thw"]
        assert arch.image_tokens(height, width).vision == int(grid.prod())


@pytest.fixture
def flops_cli(monkeypatch):
    """paravec.cli.main with only this command registered, so the test depends on it alone."""
    assert "flops" in cli.COMMAND_MODULES
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("flops",))
    return cli.main


def test_cli_json_reports_table4_figures(flops_cli, capsys):
    assert flops_cli(["flops", "--backbone", "qwen2-vl-2b", "--image-size", "1344", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["params_b"] == pytest.approx(PAPER_BASELINE_LORA8_PARAMS_B, rel=0.03)
    assert report["baseline_tflops"] == pytest.approx(PAPER_BASELINE_TFLOPS, rel=0.03)
    assert report["single_prefix_tflops"] == pytest.approx(PAPER_SINGLE_PREFIX_TFLOPS, rel=0.03)
    assert report["aggregate_tflops"] == pytest.approx(PAPER_AGGREGATE_TFLOPS, rel=0.03)
    parts = report["components_tflops"]
    assert report["baseline_tflops"] == pytest.approx(
        parts["vision_tower"] + parts["projector"] + parts["decoder_per_path"] + parts["lm_head"]
    )
    assert report["lm_head_tflops"] == parts["lm_head"] > 0


def test_cli_reads_a_local_model_directory(flops_cli, capsys, tmp_path):
    config = tiny_qwen2_vl_config()
    config.save_pretrained(tmp_path)
    assert flops_cli(["flops", "--backbone", str(tmp_path), "--image-size", "56x84", "--json", "--lora-rank", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["image_tokens"] == 6
    assert report["params_b"] * 1e9 == pytest.approx(n_params(build(config)), abs=0.5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backbone", "no-such-model", "--image-size", "1344"], "unknown backbone 'no-such-model'"),
        (["--backbone", "qwen2-vl-2b", "--image-size", "big"], "--image-size 'big'"),
        (["--backbone", "qwen2-vl-2b", "--image-size", "1344", "--paths", "0"], "paths=0"),
    ],
)
def test_cli_rejects_bad_input_with_one_line(flops_cli, capsys, args, message):
    assert flops_cli(["flops", *args]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


@pytest.mark.parametrize(
    ("config_text", "message"),
    [
        (json.dumps({"model_type": "bert"}), "model_type 'bert' is not supported"),
        (json.dumps({"model_type": "no-such-type"}), "config.json: config with model_type 'no-such-type'"),
        ("{not json", "config.json: not valid JSON"),
    ],
)
def test_cli_names_the_file_and_field_of_a_bad_config(flops_cli, capsys, tmp_path, config_text, message):
    (tmp_path / "config.json").write_text(config_text)
    assert flops_cli(["flops", "--backbone", str(tmp_path), "--image-size", "1344"]) == 2
    assert message in capsys.readouterr().err


def test_cli_rejects_a_preset_of_an_unsupported_family(flops_cli, capsys):
    assert flops_cli(["flops", "--backbone", "tiny-smolvlm", "--image-size", "56"]) == 2
    assert "model_type 'idefics3' is not supported" in capsys.readouterr().err
