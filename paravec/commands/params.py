"""``paravec params CONFIG.yaml [...]``: total and trainable parameters of runs, from their configs.

Each run's backbone is built empty (on the meta device, from its architecture config: the
built-in ones, a local folder, or a preset), its LoRA (or DoRA) injected by PEFT as training
would, and the method's prefixes and aggregator added; nothing is downloaded or allocated. Where
the PDF paper's Table 4 has the same row, its numbers are printed beside ours.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from paravec.cli import CommandError


def register(subparsers) -> None:
    parser = subparsers.add_parser("params", help="total and trainable parameters of runs, next to the paper's Table 4")
    parser.add_argument("configs", nargs="+", type=Path, help="run configs (YAML)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value in every config (repeatable)")
    parser.add_argument("--json", action="store_true", help="one JSON object per config")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from paravec import flops
    from paravec.config import ConfigError, load_config
    from paravec.core.schema import narrowed
    from paravec.pdf.model import PDFConfig

    rows = []
    for path in args.configs:
        try:
            cfg = load_config(path, args.overrides)
            report = flops.parameter_report(flops.load_config(cfg.model.backbone), cfg.model, narrowed(cfg.method, PDFConfig))
        except (ConfigError, ValueError, OSError) as error:
            raise CommandError(f"{path}: {error}") from None
        rank = cfg.model.lora.r if cfg.model.uses_lora else 0
        paper = flops.paper_parameters(cfg.model.backbone, cfg.method.name, rank)
        rows.append({"config": str(path), "backbone": cfg.model.backbone, "method": cfg.method.name,
                     "lora_r": rank, "dora": cfg.model.uses_lora and cfg.model.lora.use_dora, **report.to_dict(),
                     "paper_total_b": None if paper is None else paper[0],
                     "paper_trainable_pct": None if paper is None else paper[1]})
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(f"{'config':<48}{'method':<14}{'r':>3} {'total (B)':>10} {'trainable':>12} {'%':>7}  {'Table 4':>14}")
    for row in rows:
        paper = "" if row["paper_total_b"] is None else f"{row['paper_total_b']:.3f} B {row['paper_trainable_pct']:.3f}%"
        print(f"{Path(row['config']).name:<48}{row['method']:<14}{row['lora_r']:>3} {row['total'] / 1e9:>10.4f} "
              f"{row['trainable']:>12,} {row['trainable_pct']:>7.3f}  {paper:>14}")
    return 0
