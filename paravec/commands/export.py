"""``paravec export``: a training run's final model as a self-contained, deployable folder.

See :mod:`paravec.export` for what the folder holds for each mode.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from paravec.cli import CommandError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a run's final model as a self-contained folder for one inference mode",
        description="Export the final model of a training run: backbone weights, processor and tokenizer, "
        "only the prefix (and aggregator) the chosen mode uses, and a README model card with the training "
        "config and the newest evaluation summary. The folder loads with paravec.load, paravec encode "
        "--model and paravec serve --model, offline and without the run.",
    )
    parser.add_argument(
        "--run", required=True, type=Path, help="the training run folder (holds config.yaml and final/)"
    )
    parser.add_argument("--out", required=True, type=Path, help="the folder to write (written atomically)")
    parser.add_argument(
        "--mode", default=None,
        help="path<i> (one path's prefix, e.g. path0), aggregate (every path and the aggregator) or no-prefix; "
        "default: the run's inference mode",
    )
    parser.add_argument("--merge-lora", action="store_true", help="fold the LoRA adapter into the backbone weights")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists and is not empty")
    parser.add_argument("--license", default="other",
                        help="license id of the weights for the model card (default: other, i.e. the base model's)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from paravec.export import ExportError, export_run

    try:
        result = export_run(args.run, args.out, mode=args.mode, merge_lora=args.merge_lora, force=args.force,
                            license=args.license)
    except ExportError as error:
        raise CommandError(str(error)) from None
    lora = ", LoRA merged" if result.lora_merged else ""
    print(
        f"exported {result.mode} of {args.run} to {result.out}: {result.dim}-d embeddings, "
        f"{result.parameters.total:,} parameters{lora} (loads as {result.load_mode})"
    )
    return 0
