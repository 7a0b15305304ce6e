"""Parameters and forward FLOPs of a vision-language backbone, from its architecture config alone.

No weights are loaded: the public ``config.json`` fixes every matrix shape, and the image size fixes
how many tokens each matrix sees. The figures are split per component (vision tower, projector,
decoder layers, prefix attention, LM head) so a reader can see where the cost goes.

Counting convention (the one that reproduces the paper's Table 4)
-----------------------------------------------------------------
Table 4 gives, for VLM2Vec on Qwen2-VL-2B and one 1344x1344 image, 18.925 TFLOPs (baseline),
18.937 (PDF, single prefix) and 24.999 (PDF, aggregate of N=2 paths). A small search over the
plausible conventions (FLOPs = MACs or 2 x MACs; attention's L x L products in or out, causal or
full; LM head over every position, the last one, or none; 0-40 text tokens) finds one that fits:

* a matrix product (m x k)(k x n) costs 2mkn FLOPs (one multiply and one add per MAC);
* only products with weight matrices count: linear layers and the patch-embedding convolution.
  Attention's L x L score and mixing products are left out -- what a module/op-hooking profiler
  reports when attention runs in a fused kernel. With them the vision tower alone would cost
  13.9 TFLOPs more; no variant that counts them comes closer than 2.7% to the three figures.
  Norms, activations, rotary embeddings and softmax are left out too (well under 0.1%);
* the image: 1344 / 14 = 96, so 96 x 96 = 9216 patches go through the vision tower (the
  temporal patch of 2 folds the duplicated still frame); the 2 x 2 merger makes them 2304 LLM
  tokens; with T = 10 text tokens the LLM sequence is L = 2314 (Table 4 does not give its text:
  10 reproduces the baseline, and each further token adds 3.1 GFLOPs, 0.016%);
* the LM head counts over all L positions in the baseline -- a causal-LM forward projects every
  position onto the 151,936-word vocabulary, although an embedding uses one hidden state -- and
  once in the aggregate: the extra paths count as decoder passes without it. (Counting the head
  per path gives 26.08 for the aggregate, +4.3%.)
* a deep prefix of K keys/values per layer adds, for each of the L queries in each layer, K more
  scores and K more value products over all query heads: 2 x 2 x L x K x heads x head_dim.

Qwen2-VL-2B under this convention (``paravec flops --backbone qwen2-vl-2b --image-size 1344``):
vision tower 11.624 + merger 0.157 + decoder 6.064 + LM head 1.080 = 18.925 (paper 18.925);
single prefix + 0.008 = 18.933 (paper 18.937; the paper's +0.012 is 1.5x this prefix term, and no
natural formula we tried gives it exactly -- the gap is 0.02% of the total); aggregate
18.925 + 6.064 + 2 x 0.008 = 25.004 (paper 24.999, +0.02%); aggregate / baseline = 1.321 (paper
"approximately 1.32"). The LM head, 1.080 TFLOPs (5.7%), is what paravec's embedding path saves
by reading hidden states and never computing logits.

Parameters (:func:`parameter_report`, ``paravec params``): counted on an empty (meta-device)
model built from the config, with the run's LoRA injected by PEFT itself and the PDF modules
built by paravec, so the count is what training would create. Qwen2-VL-2B has 2,208,985,600
(tied embeddings). VLM2Vec trains DoRA (``use_dora=True``, hard-coded in its ``MMEBModel.build``)
on q/k/v/o/down of the LLM: at r=8 that is 4,530,176 LoRA weights plus DoRA's 143,360 magnitudes
(one per output row of each adapted matrix, whatever the rank: the constant that a LoRA-only
count misses), 0.211% of 2.214 B; r=16 gives 0.415% of 2.218 B; PDF adds prefixes of KV width
(2 x 28 layers x 2 x 20 x 256 = 573,440) and the aggregator (4,723,202): 0.449% of 2.219 B -- all
three as Table 4 prints them. The CLUB estimator is not counted (it never runs at inference).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

VLM2VEC_LORA_TARGETS = (
    "qkv_proj", "o_proj", "gate_up_proj", "down_proj", "k_proj", "q_proj", "out_proj", "v_proj",
)
"""VLM2Vec's default ``lora_target_modules``; PEFT matches them against the last module-name part."""

# Released checkpoints' preprocessor_config.json: Qwen2-VL keeps images between these pixel counts.
QWEN2_VL_MIN_PIXELS = 56 * 56
QWEN2_VL_MAX_PIXELS = 28 * 28 * 16384

# The architecture part of the public config.json of each checkpoint (the rest: token ids, dtype...).
BUILTIN_CONFIGS: dict[str, dict[str, Any]] = {
    "qwen2-vl-2b": {  # Qwen/Qwen2-VL-2B(-Instruct)
        "model_type": "qwen2_vl", "hidden_size": 1536, "intermediate_size": 8960,
        "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
        "vocab_size": 151936, "tie_word_embeddings": True, "hidden_act": "silu",
        "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        "vision_config": {
            "depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "num_heads": 16, "in_chans": 3,
            "hidden_size": 1536, "patch_size": 14, "spatial_merge_size": 2,
            "spatial_patch_size": 14, "temporal_patch_size": 2,
        },
    },
    "qwen2-vl-7b": {  # Qwen/Qwen2-VL-7B(-Instruct)
        "model_type": "qwen2_vl", "hidden_size": 3584, "intermediate_size": 18944,
        "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
        "vocab_size": 152064, "tie_word_embeddings": False, "hidden_act": "silu",
        "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        "vision_config": {
            "depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "num_heads": 16, "in_chans": 3,
            "hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2,
            "spatial_patch_size": 14, "temporal_patch_size": 2,
        },
    },
    "llava-next-7b": {  # llava-hf/llava-v1.6-mistral-7b-hf, the LLaVA-NeXT VLM2Vec uses
        "model_type": "llava_next", "image_token_index": 32000, "projector_hidden_act": "gelu",
        "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
        "use_image_newline_parameter": True, "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default", "vocab_size": 32064,
        "text_config": {
            "model_type": "mistral", "intermediate_size": 14336, "max_position_embeddings": 32768,
            "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
            "sliding_window": None, "vocab_size": 32064,
        },
        "vision_config": {
            "model_type": "clip_vision_model", "hidden_size": 1024, "image_size": 336,
            "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 24,
            "patch_size": 14, "projection_dim": 768, "vocab_size": 32000,
        },
    },
}


@dataclass(frozen=True)
class Linear:
    """One weight matrix applied to every token; ``name`` is its module name (LoRA matches on it)."""

    name: str
    fan_in: int
    fan_out: int
    bias: bool = True

    @property
    def params(self) -> int:
        return self.fan_in * self.fan_out + self.fan_out * self.bias

    @property
    def macs(self) -> int:
        return self.fan_in * self.fan_out


@dataclass(frozen=True)
class Stack:
    """``depth`` identical layers; ``other_params`` per layer are weights that cost no matmul (norms)."""

    linears: tuple[Linear, ...]
    depth: int = 1
    other_params: int = 0

    @property
    def params(self) -> int:
        return self.depth * (sum(linear.params for linear in self.linears) + self.other_params)

    @property
    def macs_per_token(self) -> int:
        return self.depth * sum(linear.macs for linear in self.linears)

    def lora_params(self, rank: int, targets: tuple[str, ...]) -> int:
        """Weights LoRA adds: A (rank x fan_in) and B (fan_out x rank) on every targeted matrix."""
        targeted = [linear for linear in self.linears if linear.name in targets]
        return self.depth * sum(rank * (linear.fan_in + linear.fan_out) for linear in targeted)


@dataclass(frozen=True)
class ImageTokens:
    """How many tokens one image becomes at each stage."""

    patches: int  # pixel patches through the patch embedding
    vision: int  # through the vision tower's blocks (patches, plus a CLS token per tile for CLIP)
    projected: int  # through the projector (merger)
    language: int  # positions in the LLM sequence (LLaVA-NeXT adds parameter-only newline tokens)
    vision_attention_pairs: int  # sum over the tower's attention windows of (tokens in window)^2


@dataclass(frozen=True)
class Attention:
    """The shape of a stack's attention, for the products with keys and values (no weights)."""

    layers: int
    query_width: int  # heads x head_dim
    kv_width: int  # key/value heads x head_dim (grouped-query attention shares them)


@dataclass(frozen=True)
class Architecture:
    """A backbone as the matrices each kind of token meets, read from its config by a family reader."""

    patch_embed: Linear  # the patch convolution, as the matrix it is (stride = kernel)
    vision_blocks: Stack  # per vision token
    projector: Stack  # per projected feature
    decoder: Stack  # per sequence position, per path
    lm_head: Linear
    tied_lm_head: bool
    other_params: int  # embedding tables, position embeddings, final norms, newline vector...
    vision_attention: Attention
    decoder_attention: Attention
    image_tokens: Callable[[int, int], ImageTokens]  # (height, width) in pixels

    @property
    def hidden_size(self) -> int:
        return self.lm_head.fan_in

    @property
    def params(self) -> int:
        matmul_weights = (
            self.patch_embed.params + self.vision_blocks.params + self.projector.params + self.decoder.params
        )
        return matmul_weights + self.other_params + (0 if self.tied_lm_head else self.lm_head.params)

    def lora_params(self, rank: int, targets: tuple[str, ...] = VLM2VEC_LORA_TARGETS) -> int:
        stacks = (Stack((self.patch_embed,)), self.vision_blocks, self.projector, self.decoder)
        return sum(stack.lora_params(rank, targets) for stack in stacks)

    def prefix_params(self, paths: int, prefix_len: int) -> int:
        """Each path's deep prefix: K keys and K values per layer, in key/value-head width."""
        return paths * self.decoder_attention.layers * 2 * prefix_len * self.decoder_attention.kv_width

    def aggregator_params(self, paths: int) -> int:
        """Linear(N d, d) -> SiLU -> Linear(d, N), both with bias."""
        d = self.hidden_size
        return Linear("", paths * d, d).params + Linear("", d, paths).params


@dataclass(frozen=True)
class Estimate:
    """FLOPs of one forward (one image + text) per component, and the totals of Table 4's convention."""

    tokens: ImageTokens
    sequence_length: int
    paths: int
    vision_tower: int  # patch embedding + blocks
    projector: int
    decoder: int  # one path
    prefix_attention: int  # one path
    lm_head: int
    aggregator: int
    attention_scores: int  # L x L products of vision tower + one decoder pass: outside the convention

    @property
    def baseline(self) -> int:
        return self.vision_tower + self.projector + self.decoder + self.lm_head

    @property
    def single_prefix(self) -> int:
        return self.baseline + self.prefix_attention

    @property
    def aggregate(self) -> int:
        """The vision tower and LM head once, the decoder and its prefix once per path."""
        per_path = self.decoder + self.prefix_attention
        return self.vision_tower + self.projector + self.paths * per_path + self.lm_head + self.aggregator


def estimate(
    arch: Architecture, height: int, width: int, text_tokens: int, paths: int, prefix_len: int
) -> Estimate:
    """Cost of one forward on one ``height`` x ``width`` image plus ``text_tokens`` text tokens."""
    if min(height, width) < 1 or text_tokens < 0 or paths < 1 or prefix_len < 0:
        raise ValueError(
            f"need a positive image size and paths, and non-negative text tokens and prefix length; got "
            f"{height}x{width}, text_tokens={text_tokens}, paths={paths}, prefix_len={prefix_len}"
        )
    tokens = arch.image_tokens(height, width)
    length = tokens.language + text_tokens
    vision, decoder = arch.vision_attention, arch.decoder_attention
    d = arch.hidden_size
    return Estimate(
        tokens=tokens,
        sequence_length=length,
        paths=paths,
        vision_tower=2 * tokens.patches * arch.patch_embed.macs + 2 * tokens.vision * arch.vision_blocks.macs_per_token,
        projector=2 * tokens.projected * arch.projector.macs_per_token,
        decoder=2 * length * arch.decoder.macs_per_token,
        prefix_attention=2 * 2 * length * prefix_len * decoder.query_width * decoder.layers,
        lm_head=2 * length * arch.lm_head.macs,
        aggregator=2 * (paths * d * d + d * paths),
        attention_scores=2 * 2 * (
            tokens.vision_attention_pairs * vision.query_width * vision.layers
            + length * length * decoder.query_width * decoder.layers
        ),
    )


def _head_dim(text: Any) -> int:
    return getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads


def _gated_decoder(text: Any, qkv_bias: bool) -> tuple[Stack, Attention]:
    """A Llama-style decoder layer: q/k/v/o attention, SwiGLU MLP, two RMSNorms."""
    d, inner = text.hidden_size, text.intermediate_size
    query_width = text.num_attention_heads * _head_dim(text)
    kv_width = text.num_key_value_heads * _head_dim(text)
    mlp_bias = getattr(text, "mlp_bias", False)
    linears = (
        Linear("q_proj", d, query_width, qkv_bias),
        Linear("k_proj", d, kv_width, qkv_bias),
        Linear("v_proj", d, kv_width, qkv_bias),
        Linear("o_proj", query_width, d, getattr(text, "attention_bias", False)),
        Linear("gate_proj", d, inner, mlp_bias),
        Linear("up_proj", d, inner, mlp_bias),
        Linear("down_proj", inner, d, mlp_bias),
    )
    layers = text.num_hidden_layers
    return Stack(linears, layers, other_params=2 * d), Attention(layers, query_width, kv_width)


def qwen2_vl(config: Any) -> Architecture:
    """Qwen2-VL: a ViT over 14 px patches (two frames folded), a 2x2 merger, a Qwen2 decoder."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    text, vision = config.text_config, config.vision_config
    d, w, patch, merge = text.hidden_size, vision.embed_dim, vision.patch_size, vision.spatial_merge_size
    decoder, decoder_attention = _gated_decoder(text, qkv_bias=True)
    mlp = w * vision.mlp_ratio
    blocks = Stack(
        (Linear("qkv", w, 3 * w), Linear("proj", w, w), Linear("fc1", w, mlp), Linear("fc2", mlp, w)),
        vision.depth,
        other_params=2 * 2 * w,  # two LayerNorms
    )
    merged = w * merge**2
    projector = Stack(
        (Linear("mlp.0", merged, merged), Linear("mlp.2", merged, vision.hidden_size)),
        other_params=2 * w,  # the LayerNorm before merging
    )

    def image_tokens(height: int, width: int) -> ImageTokens:
        height, width = smart_resize(height, width, patch * merge, QWEN2_VL_MIN_PIXELS, QWEN2_VL_MAX_PIXELS)
        patches = (height // patch) * (width // patch)
        # One still image is one temporal patch; the tower attends across all its patches at once.
        return ImageTokens(patches, patches, patches // merge**2, patches // merge**2, patches**2)

    return Architecture(
        patch_embed=Linear("proj", vision.in_channels * vision.temporal_patch_size * patch**2, w, bias=False),
        vision_blocks=blocks,
        projector=projector,
        decoder=decoder,
        lm_head=Linear("lm_head", d, text.vocab_size, bias=False),
        tied_lm_head=config.tie_word_embeddings,
        other_params=text.vocab_size * d + d,  # token embeddings, final RMSNorm
        vision_attention=Attention(vision.depth, w, w),
        decoder_attention=decoder_attention,
        image_tokens=image_tokens,
    )


def llava_next(config: Any) -> Architecture:
    """LLaVA-NeXT: CLIP ViT over a base view plus any-resolution tiles, an MLP projector, a Llama-style decoder."""
    import torch
    from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape, unpad_image

    text, vision = config.text_config, config.vision_config
    d, w, patch, tile = text.hidden_size, vision.hidden_size, vision.patch_size, vision.image_size
    side = tile // patch  # patches per tile side
    decoder, decoder_attention = _gated_decoder(text, qkv_bias=getattr(text, "attention_bias", False))
    blocks = Stack(
        (Linear("q_proj", w, w), Linear("k_proj", w, w), Linear("v_proj", w, w), Linear("out_proj", w, w),
         Linear("fc1", w, vision.intermediate_size), Linear("fc2", vision.intermediate_size, w)),
        vision.num_hidden_layers,  # all run, though the default feature layer (-2) is the penultimate
        other_params=2 * 2 * w,  # two LayerNorms
    )
    feature_layers = config.vision_feature_layer
    n_feature_layers = 1 if isinstance(feature_layers, int) else len(feature_layers)
    projector = Stack((Linear("linear_1", w * n_feature_layers, d), Linear("linear_2", d, d)))
    if config.vision_feature_select_strategy != "default":
        raise ValueError("only LLaVA-NeXT's 'default' feature strategy (CLS dropped) is supported")

    def image_tokens(height: int, width: int) -> ImageTokens:
        rows, cols = get_anyres_image_grid_shape((height, width), config.image_grid_pinpoints, tile)
        tiles = 1 + rows * cols  # the resized whole image, then the grid
        features = side * side  # per tile; the tower also carries a CLS token, which is dropped
        # The grid's features lose the rows/columns that were padding, and each row gets a newline.
        grid = unpad_image(torch.empty(1, rows * side, cols * side, device="meta"), (height, width))
        grid_rows, grid_cols = grid.shape[1:]
        language = features + grid_rows * grid_cols + grid_rows
        return ImageTokens(
            tiles * features, tiles * (features + 1), tiles * features, language, tiles * (features + 1) ** 2
        )

    vision_other = w + (side * side + 1) * w + 2 * w + 2 * w  # CLS, positions, pre- and post-LayerNorm
    return Architecture(
        patch_embed=Linear("patch_embedding", vision.num_channels * patch**2, w, bias=False),
        vision_blocks=blocks,
        projector=projector,
        decoder=decoder,
        lm_head=Linear("lm_head", d, text.vocab_size, bias=False),
        tied_lm_head=config.tie_word_embeddings,
        other_params=vision_other + text.vocab_size * d + d + d,  # + embeddings, final norm, newline
        vision_attention=Attention(vision.num_hidden_layers, w, w),
        decoder_attention=decoder_attention,
        image_tokens=image_tokens,
    )


FAMILIES: dict[str, Callable[[Any], Architecture]] = {"qwen2_vl": qwen2_vl, "llava_next": llava_next}
"""Architecture readers by ``model_type``."""


def architecture(config: Any) -> Architecture:
    """The architecture of a transformers config object."""
    if config.model_type not in FAMILIES:
        raise ValueError(
            f"model_type {config.model_type!r} is not supported; supported: {', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[config.model_type](config)


def transformers_config(config_dict: dict[str, Any]) -> Any:
    """The transformers config for a config.json dict: its classes supply the values the file omits."""
    from transformers import AutoConfig

    try:
        return AutoConfig.for_model(**config_dict)
    except (ValueError, TypeError) as error:
        raise ValueError(f"config with model_type {config_dict.get('model_type')!r}: {error}") from error


#: Hub ids of released checkpoints whose architecture config is built in (offline counts).
CHECKPOINT_ALIASES = {
    "Qwen/Qwen2-VL-2B-Instruct": "qwen2-vl-2b", "Qwen/Qwen2-VL-2B": "qwen2-vl-2b",
    "Qwen/Qwen2-VL-7B-Instruct": "qwen2-vl-7b", "Qwen/Qwen2-VL-7B": "qwen2-vl-7b",
    "llava-hf/llava-v1.6-mistral-7b-hf": "llava-next-7b",
}


@dataclass(frozen=True)
class ParameterReport:
    """Parameters of a backbone as a run trains it: every weight, and the trainable ones by part."""

    backbone: int
    lora: int
    prefix: int
    aggregator: int
    other_trainable: int  # backbone weights that train (train_all_weights, an unfrozen vision tower)

    @property
    def trainable(self) -> int:
        return self.lora + self.prefix + self.aggregator + self.other_trainable

    @property
    def total(self) -> int:
        return self.backbone + self.lora + self.prefix + self.aggregator

    @property
    def trainable_share(self) -> float:
        return self.trainable / self.total

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "trainable": self.trainable, "trainable_pct": 100 * self.trainable_share,
                "backbone": self.backbone, "lora": self.lora, "prefix": self.prefix, "aggregator": self.aggregator,
                "other_trainable": self.other_trainable}


def parameter_report(config: Any, model: Any, paths: Any) -> ParameterReport:
    """Count the parameters a run with ``model`` (:class:`~paravec.backbones.settings.ModelConfig`)
    and ``paths`` (:class:`~paravec.pdf.model.PDFConfig`) trains, on a meta-device model: no
    weights are allocated, LoRA/DoRA is injected by PEFT as in training."""
    import torch
    from peft import get_peft_model

    from paravec.backbones import KVGeometry, adapter_for
    from paravec.backbones.lora import lora_config_for, lora_parameter_count
    from paravec.pdf.aggregator import Aggregator
    from paravec.pdf.prefix import PrefixBank

    adapter_class = adapter_for(config.model_type)
    with torch.device("meta"):
        hf_model = adapter_class.model_class(config)
        backbone = sum(p.numel() for p in hf_model.parameters())
        vision = sum(p.numel() for module in adapter_class.vision_modules_of(hf_model) for p in module.parameters())
        lora = 0
        if model.uses_lora:
            hf_model = get_peft_model(hf_model, lora_config_for(hf_model, adapter_class.language_model_of(hf_model), model.lora))
            lora = lora_parameter_count(hf_model)
        trains_vision = not model.freeze_vision and (model.train_all_weights or model.uses_lora)
        other = (backbone - vision if model.train_all_weights else 0) + (vision if trains_vision else 0)
        prefix = aggregator = 0
        if paths.use_prefix:
            text = config.get_text_config()
            prefix = sum(p.numel() for p in PrefixBank(KVGeometry.of(text), paths.num_paths, paths.prefix_len).parameters())
            if paths.num_paths > 1:
                aggregator = sum(p.numel() for p in Aggregator(text.hidden_size, paths.num_paths).parameters())
    return ParameterReport(backbone, lora, prefix, aggregator, other)


def load_config(backbone: str) -> Any:
    """The config of a built-in name, a local model directory holding config.json, or a preset."""
    from paravec.presets import PRESETS, is_preset, preset_config

    backbone = CHECKPOINT_ALIASES.get(backbone, backbone)
    if backbone in BUILTIN_CONFIGS:
        return transformers_config(BUILTIN_CONFIGS[backbone])
    path = Path(backbone) / "config.json"
    if path.is_file():
        try:
            config_dict = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
        try:
            return transformers_config(config_dict)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error
    if is_preset(backbone):
        return preset_config(backbone)
    raise ValueError(
        f"unknown backbone {backbone!r}: not a built-in config ({', '.join(BUILTIN_CONFIGS)}), "
        f"a preset ({', '.join(PRESETS)}) nor a directory with a config.json"
    )


#: Table 4 of the PDF paper (VLM2Vec on Qwen2-VL-2B): total parameters (billions) and trainable share (%).
PAPER_TABLE4_PARAMETERS = {
    ("qwen2-vl-2b", "baseline", 8): (2.214, 0.211),
    ("qwen2-vl-2b", "baseline", 16): (2.218, 0.415),
    ("qwen2-vl-2b", "pdf", 8): (2.219, 0.449),
}


def paper_parameters(backbone: str, method: str, rank: int) -> tuple[float, float] | None:
    """Table 4's (total B, trainable %) for this backbone, method and LoRA rank, if it has a row."""
    return PAPER_TABLE4_PARAMETERS.get((CHECKPOINT_ALIASES.get(backbone, backbone), method, rank))
