"""``paravec encode``: embed the items of a JSONL file into an ``.npy`` array.

Each line is a JSON object with optional ``text``, ``image`` (a path relative to
``--image-root``, or absolute) and ``instruction`` (queries only; applies the paper's template),
and an optional ``id`` that encode ignores and ``paravec index build --ids-from`` reads.
Rows come out in input order. Every line is checked before the model loads, images are read
batch by batch, and the output file appears only when every row was embedded.

``--precision`` stores the embeddings as float32 (default), float16, int8, uint8, binary or
ubinary (:mod:`paravec.vectors.quantize`: sentence-transformers' codes). int8/uint8 need
calibration ranges: ``--calibrate-on-input`` computes them from the embeddings being written
(for a corpus), ``--calibration FILE`` reuses a corpus's (for its queries). Either way they are
written beside the output: ``emb.npy`` gets ``emb.calibration.npz``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from paravec.cli import CommandError
from paravec.commands.options import (
    add_dim_option,
    add_folder_format_option,
    add_mode_option,
    add_threads_option,
    positive_int,
)
from paravec.core.threads import apply_threads
from paravec.vectors.quantize import PRECISIONS, Calibration
from paravec.vectors.store import write_embeddings

ALLOWED_FIELDS = {"text", "image", "instruction", "id"}


@dataclass(frozen=True)
class ItemRecord:
    line: int
    text: str | None
    image: str | None
    instruction: str | None


def register(subparsers) -> None:
    parser = subparsers.add_parser("encode", help="embed items from a JSONL file into a .npy array")
    parser.add_argument("--model", required=True, help="a preset name (e.g. tiny-qwen2-vl) or a model folder")
    parser.add_argument("--input", required=True, type=Path, help="JSONL: one {text, image, instruction, id} object per line (id optional, ignored here)")
    parser.add_argument("--image-root", type=Path, default=None, help="folder that image paths are relative to")
    parser.add_argument("--allow-images-outside-root", action="store_true",
                        help="with --image-root, also read images that resolve outside it (absolute paths, symlinks)")
    parser.add_argument("--out", required=True, type=Path,
                        help="output .npy file: [n, d] (binary/ubinary: [n, ceil(d/8)], 8 dimensions per byte); "
                             "int8/uint8 also write their calibration ranges beside it, emb.npy -> emb.calibration.npz")
    parser.add_argument("--precision", choices=list(PRECISIONS), default="float32",
                        help="storage precision (default float32); int8/uint8 need --calibration or --calibrate-on-input")
    calibration = parser.add_mutually_exclusive_group()
    calibration.add_argument("--calibration", type=Path, default=None, metavar="FILE",
                             help="int8/uint8: calibration ranges to quantise with, e.g. a corpus's emb.calibration.npz")
    calibration.add_argument("--calibrate-on-input", action="store_true",
                             help="int8/uint8: compute the ranges (per-dimension min/max) from these embeddings")
    add_mode_option(parser)
    add_dim_option(parser)
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--no-normalize", action="store_true", help="keep raw (unnormalised) embeddings")
    parser.add_argument("--device", default=None, help="torch device, e.g. cuda:0 (default: cpu)")
    add_folder_format_option(parser)
    add_threads_option(parser)
    parser.set_defaults(func=run)


def read_records(path: Path) -> list[ItemRecord]:
    """Parse and validate every line; errors name the file and the line."""
    if not path.is_file():
        raise CommandError(f"{path}: no such file")
    records = []
    try:
        lines = path.read_bytes().decode("utf-8").split("\n")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise CommandError(f"{path}, line {line}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    for number, raw in enumerate(lines, start=1):
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
        if "id" in row and not isinstance(row["id"], str):
            raise CommandError(f"{path}, line {number}: field 'id' must be a string")
        if not row.get("text") and not row.get("image"):
            raise CommandError(f"{path}, line {number}: an item needs 'text', 'image' or both")
        records.append(ItemRecord(number, row.get("text") or None, row.get("image") or None, row.get("instruction") or None))
    if not records:
        raise CommandError(f"{path}: no items")
    return records


def check_texts(records: list[ItemRecord], input_path: Path, adapter) -> None:
    """Refuse, before any encoding, text holding the backbone's special tokens, naming the line."""
    for record in records:
        try:
            adapter.check_user_text(record.text, "text")
            adapter.check_user_text(record.instruction, "instruction")
        except ValueError as error:
            raise CommandError(f"{input_path}, line {record.line}: {error}") from None


def to_items(records: list[ItemRecord], input_path: Path, image_root: Path | None, *,
             allow_outside_root: bool = False):
    from paravec.core.errors import BadSampleError
    from paravec.data.images import load_image
    from paravec.items import Item

    items = []
    for record in records:
        image = None
        if record.image is not None:
            try:
                image = load_image(image_root, record.image, allow_outside_root=allow_outside_root)
            except BadSampleError as error:
                raise CommandError(f"{input_path}, line {record.line}: {error}") from None
        items.append(Item(text=record.text, image=image, instruction=record.instruction))
    return items


def run(args: argparse.Namespace) -> int:
    calibration = read_calibration_option(args)
    records = read_records(args.input)
    import paravec

    try:
        embedder = paravec.load(args.model, mode=args.mode, device=args.device, folder_format=args.folder_format)
        if args.dim is not None:
            embedder = embedder.at_dimension(args.dim)
    except (ValueError, OSError) as error:
        raise CommandError(str(error)) from None
    apply_threads(args.threads, embedder.model.dim)
    check_texts(records, args.input, embedder.model.adapter)
    if calibration is not None and calibration.dim != embedder.dim:
        raise CommandError(f"{args.calibration}: ranges for {calibration.dim} dimensions, the model gives {embedder.dim}")
    chunks = []
    show = len(records) > 4 * args.batch_size
    from tqdm.auto import tqdm

    with tqdm(total=len(records), desc="encode", unit="item", disable=not show) as progress:
        for start in range(0, len(records), args.batch_size):
            batch = to_items(records[start : start + args.batch_size], args.input, args.image_root,
                             allow_outside_root=args.allow_images_outside_root)
            try:
                chunks.append(embedder.encode(batch, batch_size=args.batch_size, normalize=not args.no_normalize))
            except ValueError as error:
                raise CommandError(str(error)) from None
            progress.update(len(batch))
    embeddings = np.concatenate(chunks).astype(np.float32)
    if args.calibrate_on_input:
        calibration = calibrate(embeddings)
    try:
        codes, calibration_file = write_embeddings(args.out, embeddings, args.precision, calibration)
    except ValueError as error:  # e.g. values beyond float16's range
        raise CommandError(f"{args.out}: {error}") from None
    print(f"wrote {embeddings.shape[0]} x {embeddings.shape[1]} embeddings ({args.precision}, array {codes.shape[0]} x "
          f"{codes.shape[1]}) to {args.out}" + (f"; calibration ranges in {calibration_file}" if calibration_file else ""))
    return 0


def read_calibration_option(args: argparse.Namespace) -> Calibration | None:
    """Check the precision's calibration options before the model loads; load a given ranges file."""
    calibrated = PRECISIONS[args.precision].calibrated
    given = args.calibration is not None or args.calibrate_on_input
    if calibrated and not given:
        raise CommandError(f"--precision {args.precision} needs calibration ranges: --calibrate-on-input (a corpus) "
                           "or --calibration FILE (e.g. the corpus's .calibration.npz, for its queries)")
    if given and not calibrated:
        raise CommandError(f"--calibration/--calibrate-on-input apply to int8 and uint8, not {args.precision}")
    if args.calibration is None:
        return None
    try:
        return Calibration.load(args.calibration)
    except ValueError as error:
        raise CommandError(str(error)) from None


def calibrate(embeddings: np.ndarray) -> Calibration:
    try:
        return Calibration.from_embeddings(embeddings)
    except ValueError as error:
        raise CommandError(f"--calibrate-on-input: {error}") from None
