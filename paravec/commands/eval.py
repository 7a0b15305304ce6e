"""``paravec eval``: MMEB Precision@1, zero-shot image-caption retrieval, and data converters.

- ``paravec eval mmeb --model M --data DIR --out DIR``: per-subset ``<Subset>_score.json``,
  ``summary.json`` and ``summary.md`` (see :mod:`paravec.eval.mmeb`).
- ``paravec eval retrieval --model M --data DIR``: Recall@1/5/10 both ways, ``retrieval_scores.json``
  (see :mod:`paravec.eval.retrieval`).
- ``paravec eval convert --format flickr30k|sharegpt4v|urban1k --src S --out DIR``: write the
  ``captions.jsonl`` the retrieval evaluation reads (see :mod:`paravec.eval.retrieval_formats`).

``--show N`` draws N queries with each model's top candidates to ``OUT/gallery.png``;
``--compare-model`` evaluates a second model (results under ``OUT/compare``) and draws it beside
the first.
"""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from paravec.cli import CommandError
from paravec.commands.options import (
    add_dim_option,
    add_folder_format_option,
    add_mode_option,
    add_threads_option,
    non_negative_int,
    positive_int,
)
from paravec.core.threads import apply_threads

COMPARE_DIR = "compare"
GALLERY_FILE = "gallery.png"
RETRIEVAL_SCORES_FILE = "retrieval_scores.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a model: MMEB Precision@1 or zero-shot image-caption retrieval",
        description="Evaluate an embedding model on MMEB-style subsets or an image-caption corpus.",
    )
    commands = parser.add_subparsers(dest="eval_command", required=True)
    _register_mmeb(commands)
    _register_retrieval(commands)
    _register_convert(commands)
    from paravec.commands.eval_mmeb_v2 import register_subcommand

    register_subcommand(commands)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a model folder or a preset name")
    add_mode_option(parser)
    add_dim_option(parser)
    add_folder_format_option(parser)
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--show", type=non_negative_int, default=0, metavar="N",
                        help=f"draw N queries with each model's top candidates to OUT/{GALLERY_FILE}")
    parser.add_argument("--show-k", type=positive_int, default=3, metavar="K",
                        help="candidates per model in the gallery (default 3)")
    parser.add_argument("--compare-model", default=None, metavar="MODEL",
                        help=f"also evaluate this model (results in OUT/{COMPARE_DIR}) and show it beside the first")
    add_threads_option(parser)


def _register_mmeb(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "mmeb", help="MMEB Precision@1 over parquet subsets",
        description="Score each query against its own candidate list (correct = index 0), per subset, and "
                    "summarise by meta-task and IND/OOD. Embeddings are cached under OUT/cache: rerunning "
                    "an interrupted evaluation embeds only what is missing.",
    )
    _add_model_options(parser)
    parser.add_argument("--data", required=True, type=Path,
                        help="folder of <Subset>.parquet files (or <Subset>/test-*.parquet)")
    parser.add_argument("--image-root", type=Path, default=None,
                        help="folder the image paths are relative to (default: --data)")
    parser.add_argument("--out", required=True, type=Path, help="folder for scores, summary and cache")
    parser.add_argument("--subsets", nargs="+", default=None, help="evaluate only these subsets")
    parser.set_defaults(func=run_mmeb)


def _register_retrieval(commands: argparse._SubParsersAction) -> None:
    from paravec.eval.retrieval import BACKENDS, DEFAULT_I2T_INSTRUCTION, DEFAULT_T2I_INSTRUCTION

    parser = commands.add_parser(
        "retrieval", help="zero-shot Recall@1/5/10, text -> image and image -> text",
        description="Recall@K both ways on DATA/captions.jsonl ({\"image\": path, \"captions\": [...]} per "
                    "line). Queries carry an instruction, targets none unless --target-instruction is given; "
                    "pass an empty string to drop an instruction.",
    )
    _add_model_options(parser)
    parser.add_argument("--data", required=True, type=Path, help="folder holding captions.jsonl (or the file)")
    parser.add_argument("--image-root", type=Path, default=None,
                        help="folder the image paths are relative to (default: the folder of captions.jsonl)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"folder for {RETRIEVAL_SCORES_FILE}, the embedding cache and the gallery")
    parser.add_argument("--t2i-query-instruction", default=DEFAULT_T2I_INSTRUCTION,
                        help=f"instruction of caption queries (default: {DEFAULT_T2I_INSTRUCTION!r})")
    parser.add_argument("--i2t-query-instruction", default=DEFAULT_I2T_INSTRUCTION,
                        help=f"instruction of image queries (default: {DEFAULT_I2T_INSTRUCTION!r})")
    parser.add_argument("--target-instruction", default="", help="instruction of targets (default: none)")
    parser.add_argument("--backend", choices=BACKENDS, default="faiss", help="exact search backend")
    parser.set_defaults(func=run_retrieval)


def _register_convert(commands: argparse._SubParsersAction) -> None:
    from paravec.eval.retrieval_formats import CONVERTERS, SHAREGPT4V_EVAL_SIZE

    parser = commands.add_parser(
        "convert", help="convert Flickr30K / ShareGPT4V / Urban1K to captions.jsonl",
        description="flickr30k: --src dataset_flickr30k.json (Karpathy split, test images); image root: "
                    "flickr30k-images. sharegpt4v: --src a ShareGPT4V json, first --limit entries (Long-CLIP's "
                    "1K set); image root: the folder its image paths are relative to. urban1k: --src the "
                    "Urban1k folder (image/, caption/); image root: that folder.",
    )
    parser.add_argument("--format", required=True, choices=sorted(CONVERTERS))
    parser.add_argument("--src", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="folder to write captions.jsonl into")
    parser.add_argument("--limit", type=positive_int, default=SHAREGPT4V_EVAL_SIZE,
                        help=f"sharegpt4v only: entries to take (default {SHAREGPT4V_EVAL_SIZE})")
    parser.set_defaults(func=run_convert)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Bad data or paths become one-line command errors; anything else keeps its traceback."""
    from paravec.core.errors import BadSampleError
    from paravec.core.errors import DatasetFormatError

    try:
        yield
    except (FileNotFoundError, DatasetFormatError, BadSampleError) as error:
        raise CommandError(str(error)) from error


def _load(model: str, args: argparse.Namespace):
    from paravec import load

    with _user_errors():
        embedder = load(model, folder_format=args.folder_format)
    if getattr(args, "dim", None) is not None:
        try:
            embedder = embedder.at_dimension(args.dim)
        except ValueError as error:
            raise CommandError(f"--dim: {error}") from None
    apply_threads(args.threads, embedder.model.dim)
    return embedder


def _model_id(embedder, model: str) -> str:
    from paravec.eval.cache import model_fingerprint

    return f"{embedder.name}@{model_fingerprint(model)}"


def _column_names(models: list) -> list[str]:
    """Gallery column titles: model names, the compared one marked when both share a name."""
    names = [model.name for model in models]
    if len(names) == 2 and names[0] == names[1]:
        names[1] += " (compare)"
    return names


def run_mmeb(args: argparse.Namespace) -> int:
    from paravec.eval.gallery import mmeb_gallery_rows, render_gallery
    from paravec.eval.mmeb import PREDICTION_TOP_K, evaluate_mmeb, find_subsets, select_subsets
    from paravec.eval.report import summary_markdown

    if args.show and args.show_k > PREDICTION_TOP_K:
        raise CommandError(f"--show-k can be at most {PREDICTION_TOP_K}: the predictions file keeps that many")
    image_root = args.image_root or args.data
    with _user_errors():  # check the data before loading a model
        files = find_subsets(args.data)
        chosen = select_subsets(files, args.subsets, args.data)
    models = [_load(args.model, args)]
    if args.compare_model:
        models.append(_load(args.compare_model, args))
    runs = [args.out, args.out / COMPARE_DIR][: len(models)]
    with _user_errors():
        for embedder, model, out in zip(models, [args.model, args.compare_model], runs):
            result = evaluate_mmeb(
                embedder, args.data, image_root, out, subsets=chosen, mode=args.mode,
                batch_size=args.batch_size, model_id=_model_id(embedder, model), show_progress=True,
            )
            print(summary_markdown(result["summary"]))
            print(f"scores and summary written to {out}")
        if args.show:
            rows = mmeb_gallery_rows({name: files[name] for name in chosen}, image_root, runs, args.show, args.show_k)
            path = args.out / GALLERY_FILE
            width, height = render_gallery(rows, _column_names(models), path, k=args.show_k)
            print(f"gallery of {len(rows)} queries written to {path} ({width}x{height} px)")
    return 0


def run_retrieval(args: argparse.Namespace) -> int:
    from paravec.eval.gallery import render_gallery, retrieval_gallery_rows
    from paravec.core.atomic import write_json_atomic
    from paravec.eval.report import retrieval_markdown
    from paravec.eval.retrieval import evaluate_retrieval, read_captions

    if args.show and args.out is None:
        raise CommandError("--show needs --out (the gallery is written there)")
    with _user_errors():  # check the data before loading a model
        read_captions(args.data)
    models = [_load(args.model, args)]
    if args.compare_model:
        models.append(_load(args.compare_model, args))
    runs = [args.out, args.out / COMPARE_DIR if args.out else None][: len(models)]
    results = []
    with _user_errors():
        for embedder, model, out in zip(models, [args.model, args.compare_model], runs):
            result = evaluate_retrieval(
                embedder, args.data, image_root=args.image_root,
                t2i_instruction=args.t2i_query_instruction, i2t_instruction=args.i2t_query_instruction,
                target_instruction=args.target_instruction, mode=args.mode, batch_size=args.batch_size,
                backend=args.backend, cache_dir=out / "cache" if out else None,
                model_id=_model_id(embedder, model), show_progress=True,
            )
            results.append(result)
            print(f"{embedder.name}: {result.scores['num_images']} images, {result.scores['num_captions']} captions")
            print(retrieval_markdown(result.scores))
            if out is not None:
                out.mkdir(parents=True, exist_ok=True)
                write_json_atomic(out / RETRIEVAL_SCORES_FILE, result.scores)
                print(f"scores written to {out / RETRIEVAL_SCORES_FILE}")
        if args.show:
            rows = retrieval_gallery_rows(results, args.image_root, args.show, args.show_k)
            path = args.out / GALLERY_FILE
            width, height = render_gallery(rows, _column_names(models), path, k=args.show_k)
            print(f"gallery of {len(rows)} queries written to {path} ({width}x{height} px)")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from paravec.eval.retrieval import CAPTIONS_FILE, write_captions
    from paravec.eval.retrieval_formats import CONVERTERS, sharegpt4v_pairs

    with _user_errors():
        if args.format == "sharegpt4v":
            pairs = list(sharegpt4v_pairs(args.src, limit=args.limit))
        else:
            pairs = list(CONVERTERS[args.format](args.src))
    path = args.out / CAPTIONS_FILE
    num_images, num_captions = write_captions(path, pairs)
    print(f"wrote {num_images} images and {num_captions} captions to {path}")
    return 0
