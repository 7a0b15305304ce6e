"""``paravec encode``: embed the items of a JSONL file into a float32 ``.npy`` array.

Each line is a JSON object with optional ``text``, ``image`` (a path relative to
``--image-root``, or absolute) and ``instruction`` (queries only; applies the paper's template).
Rows come out in input order. Every line is checked before the model loads, images are read
batch by batch, and the output file appears only when every row was embedded.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from paravec.cli import CommandError
from paravec.commands.options import add_mode_option, add_threads_option, positive_int
from paravec.core.threads import apply_threads

ALLOWED_FIELDS = {"text", "image", "instruction"}


@dataclass(frozen=True)
class ItemRecord:
    line: int
    text: str | None
    image: str | None
    instruction: str | None


def register(subparsers) -> None:
    parser = subparsers.add_parser("encode", help="embed items from a JSONL file into a .npy array")
    parser.add_argument("--model", required=True, help="a preset name (e.g. tiny-qwen2-vl) or a model folder")
    parser.add_argument("--input", required=True, type=Path, help="JSONL: one {text, image, instruction} object per line")
    parser.add_argument("--image-root", type=Path, default=None, help="folder that image paths are relative to")
    parser.add_argument("--out", required=True, type=Path, help="output .npy file, float32 [n, d]")
    add_mode_option(parser)
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--no-normalize", action="store_true", help="keep raw (unnormalised) embeddings")
    parser.add_argument("--device", default=None, help="torch device, e.g. cuda:0 (default: cpu)")
    add_threads_option(parser)
    parser.set_defaults(func=run)


def read_records(path: Path) -> list[ItemRecord]:
    """Parse and validate every line; errors name the file and the line."""
    if not path.is_file():
        raise CommandError(f"{path}: no such file")
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as error:
                raise CommandError(f"{path}, line {number}: malformed JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise CommandError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}")
            unknown = set(row) - ALLOWED_FIELDS
            if unknown:
                raise CommandError(f"{path}, line {number}: unknown field(s) {sorted(unknown)}; allowed: {sorted(ALLOWED_FIELDS)}")
            for key in ALLOWED_FIELDS:
                if row.get(key) is not None and not isinstance(row[key], str):
                    raise CommandError(f"{path}, line {number}: field {key!r} must be a string")
            if not row.get("text") and not row.get("image"):
                raise CommandError(f"{path}, line {number}: an item needs 'text', 'image' or both")
            records.append(ItemRecord(number, row.get("text") or None, row.get("image") or None, row.get("instruction") or None))
    if not records:
        raise CommandError(f"{path}: no items")
    return records


def to_items(records: list[ItemRecord], input_path: Path, image_root: Path | None):
    from paravec.core.errors import BadSampleError
    from paravec.data.images import load_image
    from paravec.items import Item

    items = []
    for record in records:
        image = None
        if record.image is not None:
            try:
                image = load_image(image_root, record.image)
            except BadSampleError as error:
                raise CommandError(f"{input_path}, line {record.line}: {error}") from None
        items.append(Item(text=record.text, image=image, instruction=record.instruction))
    return items


def run(args: argparse.Namespace) -> int:
    records = read_records(args.input)
    import paravec

    try:
        embedder = paravec.load(args.model, mode=args.mode, device=args.device)
    except (ValueError, OSError) as error:
        raise CommandError(str(error)) from None
    apply_threads(args.threads, embedder.dim)
    chunks = []
    show = len(records) > 4 * args.batch_size
    from tqdm.auto import tqdm

    with tqdm(total=len(records), desc="encode", unit="item", disable=not show) as progress:
        for start in range(0, len(records), args.batch_size):
            batch = to_items(records[start : start + args.batch_size], args.input, args.image_root)
            try:
                chunks.append(embedder.encode(batch, batch_size=args.batch_size, normalize=not args.no_normalize))
            except ValueError as error:
                raise CommandError(str(error)) from None
            progress.update(len(batch))
    embeddings = np.concatenate(chunks).astype(np.float32)
    write_npy_atomically(args.out, embeddings)
    print(f"wrote {embeddings.shape[0]} x {embeddings.shape[1]} embeddings to {args.out}")
    return 0


def write_npy_atomically(path: Path, array: np.ndarray) -> None:
    from paravec.core.atomic import atomic_file

    with atomic_file(path) as stream:
        np.save(stream, array)
