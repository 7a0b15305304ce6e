"""``paravec data``: write the built-in mini benchmark, or check an MMEB-train folder.

``paravec data mini --out DIR [--seed S] [--size small|default]`` writes the benchmark of
:mod:`paravec.data.mini`. ``paravec data check FOLDER --image-root DIR`` reads every sample of an
MMEB-train folder, decoding every image, and lists the bad ones: run it before a long training
run instead of finding a broken file hours in.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from paravec.cli import CommandError
from paravec.core.errors import BadSampleError
from paravec.data.mini import BENCHMARK_SIZES, generate_mini_benchmark
from paravec.data.mmeb_train import (
    SPLITS, DatasetFormatError, MMEBTrainDataset, MMEBTrainSource, SkipTally, collate_train_pairs,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="write the mini benchmark or check training data")
    commands = parser.add_subparsers(dest="data_command", required=True)

    mini = commands.add_parser("mini", help="write the built-in mini benchmark in MMEB formats")
    mini.add_argument("--out", type=Path, required=True, help="output directory (new or empty)")
    mini.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    mini.add_argument("--size", choices=sorted(BENCHMARK_SIZES), default="default",
                      help="'small' is a few rows per subset, for tests")
    mini.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                      help="processes building subsets in parallel (does not change the output)")
    mini.add_argument("--overwrite", action="store_true",
                      help="replace a benchmark already in --out (only the files this command writes)")
    mini.set_defaults(func=run_mini)

    check = commands.add_parser("check", help="load every sample of an MMEB-train folder, list bad ones")
    check.add_argument("folder", type=Path, help="MMEB-train folder (<Subset>.parquet or <Subset>/<split>-*.parquet)")
    check.add_argument("--image-root", type=Path, required=True, help="directory the image paths are relative to")
    check.add_argument("--split", choices=SPLITS, default="original")
    check.add_argument("--subsets", nargs="+", default=None, help="subsets to check (default: all found)")
    check.add_argument("--max-rows-per-subset", type=int, default=None,
                       help="check only the first N rows of each subset (default: all)")
    check.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="image decoding processes")
    check.add_argument("--backbone", default=None,
                       help="check text against this backbone's special tokens (a preset, folder or hub id); "
                            "default: the markup of every supported family")
    check.set_defaults(func=run_check)


def run_mini(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        tasks = generate_mini_benchmark(args.out, seed=args.seed, size=args.size,
                                        workers=max(1, args.workers), overwrite=args.overwrite)
    except FileExistsError as error:
        raise CommandError(f"{error} (pass --overwrite to replace it)") from error
    elapsed = time.perf_counter() - started
    train_rows = sum(task.get("train_rows", 0) for task in tasks.values())
    eval_rows = sum(task["eval_rows"] for task in tasks.values())
    ood = sum(task["split"] == "OOD" for task in tasks.values())
    print(f"wrote {len(tasks)} subsets ({len(tasks) - ood} IND, {ood} OOD) to {args.out} in {elapsed:.1f} s: "
          f"{train_rows} training pairs, {eval_rows} evaluation rows")
    return 0


def _reserved_strings(backbone: str | None) -> tuple[str, ...]:
    """Special tokens the training text must not hold: the named backbone's, or every family's."""
    from paravec.backbones import known_markup

    if backbone is None:
        return known_markup()
    from paravec.presets import load_backbone

    try:
        return load_backbone(backbone).reserved_strings()
    except (OSError, ValueError) as error:
        raise CommandError(f"--backbone {backbone}: {error}") from None


def run_check(args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader

    source = MMEBTrainSource(args.folder, args.image_root, subsets=args.subsets, split=args.split,
                             max_rows_per_subset=args.max_rows_per_subset)
    try:
        dataset = MMEBTrainDataset(source, on_bad_sample="skip", reserved=_reserved_strings(args.backbone))
        loader = DataLoader(dataset, batch_size=64, num_workers=max(0, args.workers),
                            collate_fn=collate_train_pairs)
        tally = SkipTally()
        for batch in loader:
            tally.add(batch.skipped)
    except (DatasetFormatError, BadSampleError) as error:
        raise CommandError(str(error)) from error
    invalid = dataset.invalid_rows
    for (subset, file, row, reason) in sorted(
        [(r.subset, r.file, r.row, r.reason) for rows in invalid.values() for r in rows]
    ):
        print(f"invalid row: {file}, row {row}: {reason}")
    for subset, file, row in sorted(tally.unique):
        print(f"bad image: {file}, row {row}")
    summary = {
        "pairs": dict(zip(dataset.subset_names, dataset.subset_sizes)),
        "invalid_rows": {name: len(rows) for name, rows in invalid.items() if rows},
        "bad_images": tally.unique_by_subset(),
    }
    print(json.dumps(summary, indent=2))
    return 1 if summary["invalid_rows"] or summary["bad_images"] else 0
