"""``paravec train CONFIG.yaml [--set key=value ...] [--resume]``.

One YAML file per run (see :mod:`paravec.config`). Under ``accelerate launch`` the same
command trains on many processes; see the README for multi-GPU and multi-node launches.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from paravec.cli import CommandError
from paravec.commands.options import add_threads_option
from paravec.core.threads import apply_threads


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train an embedding model from a YAML run config")
    parser.add_argument("config", type=Path, help="run configuration (YAML)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.max_steps=100 (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    parser.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="FILE.py|MODULE",
                        help="import this first (a file or a module name), e.g. one that registers a recipe of "
                             "your own (repeatable; see the README's 'Adding a training method')")
    add_threads_option(parser)
    parser.set_defaults(func=run)


def load_plugins(plugins: list[str]) -> None:
    """Import each plugin (a ``.py`` file or an importable module name) once, in order."""
    import importlib
    import importlib.util
    import sys

    for plugin in plugins:
        try:
            if plugin.endswith(".py"):
                path = Path(plugin)
                if not path.is_file():
                    raise CommandError(f"--plugin {plugin}: no such file")
                name = f"paravec_plugin_{path.stem}"
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(plugin)
        except ImportError as error:
            raise CommandError(f"--plugin {plugin}: cannot import it ({error})") from None


def run(args: argparse.Namespace) -> int:
    from paravec.config import ConfigError, load_config

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "transformers", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not args.config.is_file():
        raise CommandError(f"{args.config}: no such config file")
    load_plugins(args.plugins)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as error:
        raise CommandError(str(error)) from None
    from paravec.core.errors import BadSampleError, DatasetFormatError
    from paravec.train.loop import Trainer, TrainingStopped
    from paravec.train.resume import ResumeRefused

    trainer = None
    try:
        trainer = Trainer(cfg)
        apply_threads(args.threads, trainer.model.dim)
        trainer.run(resume=args.resume)
    except (ConfigError, DatasetFormatError, BadSampleError, ResumeRefused, FileExistsError, FileNotFoundError,
            TrainingStopped) as error:
        raise CommandError(str(error)) from None
    except OSError as error:  # e.g. a full disk while writing a checkpoint (written atomically: none is half there)
        raise CommandError(f"{error}; the complete checkpoints under {cfg.output_dir} are intact: fix this and "
                           "continue with --resume") from None
    finally:
        if trainer is not None:
            trainer.accelerator.end_training()  # closes the process group: a live gloo group can abort at exit
    return 0
