"""The end-to-end demo: the built-in benchmark, the baseline and PDF trained alike, both scored.

Everything runs offline on a CPU: the mini benchmark is generated, ``small-qwen2-vl`` (a
Qwen2-VL built from scratch) is trained twice with identical settings but the method -- the
VLM2Vec baseline and PDF -- and each is evaluated with the MMEB protocol. The table compares
them overall, per meta-task and in/out of distribution; the plots are the paper's Fig. 3
(training loss against the baseline, path similarity).

The run settings are :data:`DEMO_RUN`; ``configs/demo-cpu-*.yaml`` hold the same values for
``paravec train`` (a test keeps them in step).
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

DEMO_BACKBONE = "small-qwen2-vl"
DEMO_RUN: dict[str, Any] = {
    "seed": 0,
    "model": {
        "backbone": DEMO_BACKBONE,
        "dtype": "float32",
        "attn_implementation": "sdpa",
        "image_resolution": 4096,
        "max_text_tokens": 128,
        "freeze_vision": False,
        "train_all_weights": True,
        "lora": {"enabled": False},
    },
    "loss": {"temperature": 0.02, "lambda_con": 1.0, "lambda_mim": 1.0e-4, "mim": {"lr": 1.0e-3}},
    "data": {"subsets": None, "max_per_subset": None, "batching": "mixed", "on_bad_sample": "error", "num_workers": 0},
    "optim": {"lr": 1.5e-3, "weight_decay": 0.0, "warmup_steps": 30, "schedule": "linear", "max_grad_norm": 1.0},
    "train": {"max_steps": 800, "batch_size": 32, "chunk_size": None, "save_every": 100, "keep_last": 2, "mixed_precision": "no"},
    "log": {"every": 1, "console_every": 25, "tensorboard": True, "plots": True},
}

METHODS: dict[str, dict[str, Any]] = {
    "baseline": {"name": "baseline"},
    "pdf": {"name": "pdf", "num_paths": 2, "prefix_len": 20, "prefix_position": "keep", "inference_mode": "path0"},
}


def demo_config(method: str, out: Path, steps: int | None = None):
    """The run config of one demo arm (``baseline`` or ``pdf``) writing under ``out``."""
    from paravec.config import config_from_dict

    raw = copy.deepcopy(DEMO_RUN)
    raw["output_dir"] = str(out / "runs" / method)
    raw["method"] = dict(METHODS[method])
    raw["data"].update(train_dir=str(out / "mini" / "train"), image_root=str(out / "mini" / "images"))
    if steps is not None:
        raw["train"]["max_steps"] = steps
        raw["optim"]["warmup_steps"] = min(raw["optim"]["warmup_steps"], max(steps // 10, 1))
    return config_from_dict(raw, source=f"demo ({method})")


def run_demo(out: Path, steps: int | None = None, benchmark_size: str = "default") -> dict:
    """Build the benchmark, train and evaluate both arms; returns the comparison table's data."""
    from paravec.data.mini import generate_mini_benchmark
    from paravec.embedder import load
    from paravec.eval.mmeb import evaluate_mmeb
    from paravec.train.loop import Trainer
    from paravec.core.history_keys import INFONCE_LOSS, PATH_SIMILARITY
    from paravec.train.monitor import read_history
    from paravec.train.plots import plot_comparison

    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    mini = out / "mini"
    if not (mini / "tasks.json").exists():
        _say(f"building the mini benchmark in {mini}")
        generate_mini_benchmark(mini, size=benchmark_size, overwrite=True)
    summaries, histories = {}, {}
    for method in METHODS:
        cfg = demo_config(method, out, steps)
        run_dir = Path(cfg.output_dir)
        if (run_dir / "final" / "paravec.json").exists():
            _say(f"{method}: reusing the trained model in {run_dir / 'final'}")
        else:
            if run_dir.exists():
                import shutil

                shutil.rmtree(run_dir)  # an unfinished demo run: start it again
            _say(f"{method}: training {cfg.train.max_steps} steps of batch {cfg.train.batch_size} on {DEMO_BACKBONE}")
            Trainer(cfg).run()
        _say(f"{method}: evaluating on {mini / 'eval'}")
        embedder = load(run_dir / "final")
        result = evaluate_mmeb(embedder, mini / "eval", mini / "images", out / "eval" / method, batch_size=64,
                               model_id=f"demo-{method}-{cfg.train.max_steps}", show_progress=True)
        summaries[method] = result["summary"]
        histories[method] = read_history(run_dir / "logs" / "history.jsonl")
    plots = out / "plots"
    plot_comparison(histories, INFONCE_LOSS, plots / "training_loss.png", title="Training InfoNCE: baseline vs PDF",
                    smoothing=0.6)
    plot_comparison({"pdf": histories["pdf"]}, PATH_SIMILARITY, plots / "path_similarity.png",
                    title="Cosine similarity between PDF's parallel paths", smoothing=0.6)
    table = comparison_table(summaries["baseline"], summaries["pdf"])
    report = out / "report.md"
    report.write_text(
        "# paravec demo: VLM2Vec baseline vs PDF on the mini benchmark\n\n"
        f"small-qwen2-vl trained from scratch, identical settings but the method; Precision@1 (%).\n\n{table}\n"
        "Plots: plots/training_loss.png, plots/path_similarity.png; per-run curves in runs/*/plots/.\n"
    )
    (out / "summary.json").write_text(json.dumps(summaries, indent=2))
    print("\n" + table, flush=True)
    _say(f"done in {time.monotonic() - started:.0f} s; report: {report}")
    return summaries


def comparison_table(baseline: dict, pdf: dict) -> str:
    """Markdown table: overall, per meta-task and IND/OOD, each method and the difference."""
    rows = [("Overall", baseline["overall"]["mean"], pdf["overall"]["mean"])]
    rows += [(meta, group["mean"], pdf["meta_tasks"][meta]["mean"]) for meta, group in baseline["meta_tasks"].items()]
    rows += [(split, group["mean"], pdf["splits"][split]["mean"]) for split, group in baseline["splits"].items()]
    lines = ["| Group | Baseline | PDF | Difference |", "|---|---:|---:|---:|"]
    for label, base, ours in rows:
        if base is None or ours is None:
            continue
        lines.append(f"| {label} | {100 * base:.1f} | {100 * ours:.1f} | {100 * (ours - base):+.1f} |")
    return "\n".join(lines) + "\n"


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)
