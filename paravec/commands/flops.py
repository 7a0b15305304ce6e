"""``paravec flops``: parameters and forward TFLOPs of a backbone from its architecture config alone.

The counting convention (the one that reproduces the paper's Table 4) is derived in :mod:`paravec.flops`.
"""

from __future__ import annotations

import argparse
import json
import re

from paravec.cli import CommandError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "flops",
        help="parameters and forward TFLOPs of baseline, single-prefix and aggregate inference",
        description="Count parameters and forward TFLOPs for one image from the architecture config alone "
        "(no weights, no download), under the counting convention of the PDF paper's Table 4.",
    )
    parser.add_argument(
        "--backbone", required=True,
        help="a built-in config (qwen2-vl-2b, qwen2-vl-7b, llava-next-7b), a preset name, or a model folder",
    )
    parser.add_argument(
        "--image-size", required=True,
        help="pixels: 1344 for a square, or HEIGHTxWIDTH; resized as the released preprocessors do",
    )
    parser.add_argument("--paths", type=int, default=2, help="parallel paths N (default 2)")
    parser.add_argument("--prefix-len", type=int, default=20, help="prefix length K per layer (default 20)")
    parser.add_argument(
        "--text-tokens", type=int, default=10, help="text tokens besides the image's (default 10, see paravec.flops)"
    )
    parser.add_argument("--lora-rank", type=int, default=8, help="rank of VLM2Vec's LoRA (default 8)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(func=run)


def parse_image_size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", text)
    if not match:
        raise CommandError(f"--image-size {text!r}: expected a number of pixels like 1344 or 1344x896")
    height = int(match.group(1))
    return height, int(match.group(2) or height)


def run(args: argparse.Namespace) -> int:
    from paravec import flops

    height, width = parse_image_size(args.image_size)
    if args.lora_rank < 0:
        raise CommandError(f"--lora-rank must be >= 0, got {args.lora_rank}")
    try:
        arch = flops.architecture(flops.load_config(args.backbone))
        cost = flops.estimate(arch, height, width, args.text_tokens, args.paths, args.prefix_len)
    except ValueError as error:
        raise CommandError(str(error)) from error

    lora = arch.lora_params(args.lora_rank)
    pdf_extra = arch.prefix_params(args.paths, args.prefix_len) + arch.aggregator_params(args.paths)
    baseline_params, pdf_params = arch.params + lora, arch.params + lora + pdf_extra
    report = {
        "backbone": args.backbone,
        "image_size": [height, width],
        "vision_tokens": cost.tokens.vision,
        "image_tokens": cost.tokens.language,
        "sequence_length": cost.sequence_length,
        "paths": args.paths,
        "prefix_len": args.prefix_len,
        "params_b": baseline_params / 1e9,
        "trainable_pct": 100 * lora / baseline_params,
        "pdf_params_b": pdf_params / 1e9,
        "pdf_trainable_pct": 100 * (lora + pdf_extra) / pdf_params,
        "baseline_tflops": cost.baseline / 1e12,
        "single_prefix_tflops": cost.single_prefix / 1e12,
        "aggregate_tflops": cost.aggregate / 1e12,
        "aggregate_over_baseline": cost.aggregate / cost.baseline,
        "lm_head_tflops": cost.lm_head / 1e12,
        "components_tflops": {
            "vision_tower": cost.vision_tower / 1e12,
            "projector": cost.projector / 1e12,
            "decoder_per_path": cost.decoder / 1e12,
            "prefix_attention_per_path": cost.prefix_attention / 1e12,
            "lm_head": cost.lm_head / 1e12,
            "aggregator": cost.aggregator / 1e12,
        },
        "attention_scores_tflops_not_counted": cost.attention_scores / 1e12,
    }
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


def format_table(report: dict) -> str:
    parts = report["components_tflops"]
    height, width = report["image_size"]
    rows = [
        f"{report['backbone']}: one {height}x{width} image -> {report['vision_tokens']} vision tokens, "
        f"{report['image_tokens']} image tokens; LLM sequence {report['sequence_length']}; "
        f"N={report['paths']} paths, prefix K={report['prefix_len']}",
        "",
        f"{'component':<42}{'TFLOPs':>9}",
        *(f"{name.replace('_', ' '):<42}{value:>9.3f}" for name, value in parts.items()),
        "",
        f"{'baseline (VLM2Vec)':<42}{report['baseline_tflops']:>9.3f}",
        f"{'PDF, single prefix':<42}{report['single_prefix_tflops']:>9.3f}",
        f"{'PDF, aggregate of all paths':<42}{report['aggregate_tflops']:>9.3f}"
        f"   ({report['aggregate_over_baseline']:.3f}x baseline)",
        f"{'saved by skipping the LM head':<42}{report['lm_head_tflops']:>9.3f}   (paravec never computes logits)",
        f"{'attention L x L products, not counted':<42}{report['attention_scores_tflops_not_counted']:>9.3f}",
        "",
        f"params: baseline with LoRA {report['params_b']:.3f} B ({report['trainable_pct']:.3f}% trainable); "
        f"PDF {report['pdf_params_b']:.3f} B ({report['pdf_trainable_pct']:.3f}% trainable)",
    ]
    return "\n".join(rows)
