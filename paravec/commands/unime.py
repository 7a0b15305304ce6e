"""``paravec unime teacher``: compute UniME stage 1's teacher embeddings once.

``paravec unime teacher --teacher MODEL --data TRAIN_DIR`` embeds the (query, positive) texts of
every subset of an MMEB-train folder with a sentence-transformers model and stores them in
``TRAIN_DIR/teacher/<name>/`` (see :mod:`paravec.unime.teacher`). A stage-1 run whose
``loss.distill.teacher_dir`` names the same model reads them from there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from paravec.cli import CommandError
from paravec.commands.options import add_threads_option


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("unime", help="UniME recipes: precompute stage 1's teacher embeddings")
    commands = parser.add_subparsers(dest="unime_command", required=True)
    teacher = commands.add_parser("teacher", help="embed the training texts with a sentence-transformers teacher")
    teacher.add_argument("--teacher", required=True, help="sentence-transformers model folder or hub id")
    teacher.add_argument("--data", type=Path, required=True, help="MMEB-train folder (data.train_dir of the run)")
    teacher.add_argument("--split", choices=("original", "diverse_instruction"), default="original")
    teacher.add_argument("--subsets", nargs="+", default=None, help="subsets to embed (default: all found)")
    teacher.add_argument("--max-per-subset", type=int, default=50000,
                         help="embed the first N rows of each subset, as data.max_per_subset (0: all rows)")
    teacher.add_argument("--batch-size", type=int, default=32, help="texts per teacher forward pass")
    teacher.add_argument("--device", default=None, help="e.g. cuda, cuda:1, cpu (default: the teacher's choice)")
    teacher.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="storage precision")
    teacher.add_argument("--trust-remote-code", action="store_true",
                         help="allow the teacher's own modeling code (NV-Embed-v2 needs it)")
    teacher.add_argument("--overwrite", action="store_true", help="replace embeddings this teacher already wrote")
    add_threads_option(teacher)
    teacher.set_defaults(func=run_teacher)


def run_teacher(args: argparse.Namespace) -> int:
    from paravec.core.errors import DatasetFormatError
    from paravec.data.mmeb_train import MMEBTrainSource
    from paravec.unime.teacher import compute_teacher_embeddings

    if args.max_per_subset < 0 or args.batch_size < 1:
        raise CommandError("--max-per-subset must be 0 or more and --batch-size 1 or more")
    from paravec.core.threads import apply_threads

    apply_threads(args.threads)  # the teacher's width is unknown before it loads: all usable cores
    source = MMEBTrainSource(args.data, args.data, subsets=args.subsets, split=args.split,
                             max_rows_per_subset=args.max_per_subset or None)
    try:
        folder, manifest = compute_teacher_embeddings(
            args.teacher, source, batch_size=args.batch_size, device=args.device, dtype=args.dtype,
            trust_remote_code=args.trust_remote_code, overwrite=args.overwrite, show_progress=True,
        )
    except FileExistsError as error:
        raise CommandError(f"{error} (pass --overwrite to replace them)") from None
    except (DatasetFormatError, OSError) as error:
        raise CommandError(str(error)) from None
    rows = sum(record.rows for record in manifest.subsets.values())
    embedded = sum(record.embedded_rows for record in manifest.subsets.values())
    print(f"wrote {manifest.dim}-d teacher embeddings of {embedded} pairs ({rows - embedded} rows without text "
          f"left out) in {len(manifest.subsets)} subsets to {folder} in {manifest.seconds:.1f} s")
    return 0
