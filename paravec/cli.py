"""The ``paravec`` command line: one sub-command per module in :mod:`paravec.commands`.

Each command module exposes ``register(subparsers)``, which adds its parser and sets
``func`` to the callable that runs it. Adding a command means adding its module name here.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = ("demo", "encode", "inspect", "index", "train", "eval", "data", "serve", "export", "flops", "params", "unime")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paravec",
        description="Train, evaluate and serve multimodal embedding models (PDF, VLM2Vec, UniME).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"paravec.commands.{name}").register(subparsers)
    return parser


class CommandError(Exception):
    """An error caused by the user's input: printed as one line, exit status 2, no traceback."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CommandError as error:
        print(f"paravec {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # Run the copy importable as paravec.cli, so command modules and this entry point share
    # one CommandError class (python -m would otherwise load this file twice).
    from paravec.cli import main as _main

    sys.exit(_main())
