"""``paravec inspect``: what the backbone receives for each item, one JSON line per item.

Reproducing a published number starts with seeing the exact input: the prompt with its special
tokens (the prompt format and truncation applied), how many tokens it becomes once the image
token is expanded, how many of them are image tokens, and the image size before and after the
processor. Items are read as ``paravec encode`` reads them (``text``, ``image``, ``instruction``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from paravec.cli import CommandError
from paravec.commands.encode import read_records, to_items
from paravec.commands.options import add_folder_format_option, add_threads_option


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "inspect", help="print what the backbone receives for each item (prompt, token counts, image sizes)",
        description="One JSON line per input item: prompt (special tokens included, before the image token is "
                    "expanded), num_tokens, num_image_tokens, prefix_slots, image_size (as given to the processor) "
                    "and, where the family reports it, processed_size (as the processor resized it).",
    )
    parser.add_argument("--model", required=True, help="a preset name, a model folder or a Hugging Face checkpoint")
    parser.add_argument("--input", required=True, type=Path, help="JSONL: one {text, image, instruction} object per line")
    parser.add_argument("--image-root", type=Path, default=None, help="folder that image paths are relative to")
    parser.add_argument("--resolution", default=None,
                        help="override image_resolution: high, low, default, square=N, max_pixels=N, single_tile")
    parser.add_argument("--prompt-format", default=None, help="override the prompt format: paper, vlm2vec, paravec-0.1")
    add_folder_format_option(parser)
    add_threads_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import paravec

    records = read_records(args.input)
    try:
        embedder = paravec.load(args.model, folder_format=args.folder_format)
        adapter = embedder.model.adapter
        if args.resolution is not None:
            adapter.apply_resolution(_resolution(args.resolution))
        if args.prompt_format is not None:
            adapter.set_prompt_format(args.prompt_format)
    except (ValueError, OSError) as error:
        raise CommandError(str(error)) from None
    for entry in embedder.model.describe_inputs(to_items(records, args.input, args.image_root)):
        print(json.dumps(entry, ensure_ascii=False))
    return 0


def _resolution(text: str):
    return int(text) if text.isdigit() else text
