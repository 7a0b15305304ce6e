"""``paravec demo [--out DIR]``: the mini benchmark, baseline and PDF trained and compared on CPU."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from paravec.commands.options import add_threads_option


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="train and compare the baseline and PDF on the built-in benchmark")
    parser.add_argument("--out", type=Path, default=Path("paravec-demo"), help="output folder (default: paravec-demo)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per method (default: the demo's)")
    parser.add_argument("--benchmark-size", choices=("small", "default"), default="default",
                        help="size of the generated mini benchmark")
    add_threads_option(parser)  # auto gives the demo's narrow model one thread
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from paravec.cli import CommandError
    from paravec.demo import DEMO_BACKBONE, run_demo

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.steps is not None and args.steps < 1:
        raise CommandError("--steps must be at least 1")
    from paravec.core.threads import apply_threads
    from paravec.presets import preset_config

    apply_threads(args.threads, preset_config(DEMO_BACKBONE).get_text_config().hidden_size)
    run_demo(args.out, steps=args.steps, benchmark_size=args.benchmark_size)
    return 0
