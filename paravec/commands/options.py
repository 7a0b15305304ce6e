"""Command-line options several commands share, parsed the same way everywhere."""

from __future__ import annotations

import argparse

from paravec.core.threads import AUTO, parse_threads
from paravec.pdf.modes import parse_mode_argument


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", type=parse_threads, default=AUTO, metavar="N|auto",
        help="torch CPU threads (default auto: OMP_NUM_THREADS if set, one for narrow models, else every "
             "core this process may use; see paravec.core.threads)",
    )


def add_folder_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format", dest="folder_format", choices=("paravec", "vlm2vec"), default=None,
        help="read --model as this kind of folder: vlm2vec for a VLM2Vec checkpoint (merged, or a LoRA adapter "
             "folder, which is detected without this), with VLM2Vec's resize, prompt and pooling (default: detected)",
    )


def add_dim_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dim", type=positive_int, default=None, metavar="M",
                        help="embed at M dimensions: one the model was trained for (Matryoshka), the first M "
                             "dimensions re-normalised (default: the full size)")


def add_mode_option(parser: argparse.ArgumentParser, what: str = "") -> None:
    parser.add_argument(
        "--mode", type=parse_mode_argument, default=None,
        help="inference mode: path0 (single prefix, the paper's default), path<i>, aggregate (all paths) or "
             f"no-prefix (ablation); default: the model's own{what}",
    )
