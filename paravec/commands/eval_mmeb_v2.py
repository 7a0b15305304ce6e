"""``paravec eval mmeb-v2``: the MMEB-V2 protocol (image, video and visual-document tasks).

``paravec eval mmeb-v2 --model M --data DIR --out DIR [--tasks ...] [--num-frames 8]`` writes
``OUT/<modality>/<Task>_score.json`` (VLM2Vec's 24 metrics), ``OUT/leaderboard.json`` (the
leaderboard's shape), ``OUT/summary.json`` and ``OUT/summary.md`` (see :mod:`paravec.eval.mmeb_v2`
for the data layout). ``--tasks`` takes task names and/or modalities (``image video visdoc``).
Registered by ``paravec.commands.eval`` through :func:`register_subcommand`.
"""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from paravec.cli import CommandError
from paravec.commands.options import add_folder_format_option, add_mode_option, add_threads_option, positive_int


def register_subcommand(commands: argparse._SubParsersAction) -> None:
    """Add ``mmeb-v2`` to the ``paravec eval`` sub-commands."""
    from paravec.eval.mmeb_v2 import DEFAULT_NUM_FRAMES
    from paravec.eval.ranking import DEFAULT_TIE_RULE, TIE_RULES

    parser = commands.add_parser(
        "mmeb-v2", help="MMEB-V2: hit@1 (image, video) and NDCG@5 (visual documents) over 78 tasks",
        description="Rank each query within its task's scope (its own candidates, or the whole corpus or "
                    "label set) and write VLM2Vec-V2's score files, the leaderboard JSON and a summary. DATA is "
                    "the MMEB-V2 root: image/<Task>/ tables with image-tasks/ images, visdoc/<Task>/ BEIR "
                    "folders, video/<Task>/ tables with video-tasks/frames/. Embeddings are cached under "
                    "OUT/cache: rerunning an interrupted evaluation embeds only what is missing.",
    )
    parser.add_argument("--model", required=True, help="a model folder or a preset name")
    add_mode_option(parser)
    add_folder_format_option(parser)
    parser.add_argument("--data", required=True, type=Path, help="the MMEB-V2 root folder")
    parser.add_argument("--out", required=True, type=Path, help="folder for scores, summary and cache")
    parser.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                        help="task names and/or modalities (image, video, visdoc); default: every task in DATA")
    parser.add_argument("--num-frames", type=positive_int, default=DEFAULT_NUM_FRAMES,
                        help=f"frames sampled per video, evenly spaced (default {DEFAULT_NUM_FRAMES}, as MMEB-V2)")
    parser.add_argument("--tie-rule", choices=sorted(TIE_RULES), default=DEFAULT_TIE_RULE,
                        help=f"order of equal scores (default {DEFAULT_TIE_RULE}: a tie with a relevant "
                             "candidate counts against it; vlm2vec: numpy argsort, as VLM2Vec)")
    parser.add_argument("--batch-size", type=positive_int, default=16)
    add_threads_option(parser)
    parser.set_defaults(func=run_mmeb_v2)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Bad data, paths, unread tasks and video-less encoders become one-line command errors."""
    from paravec.core.errors import BadSampleError, DatasetFormatError
    from paravec.eval.mmeb_v2 import UnsupportedTaskError, VideoInputError

    try:
        yield
    except (FileNotFoundError, DatasetFormatError, BadSampleError, UnsupportedTaskError, VideoInputError) as error:
        raise CommandError(str(error)) from error


def run_mmeb_v2(args: argparse.Namespace) -> int:
    from paravec.commands.eval import _load, _model_id
    from paravec.eval.mmeb_v2 import evaluate_mmeb_v2, select_tasks, summary_markdown

    with _user_errors():  # check the data before loading a model
        select_tasks(args.data, args.tasks)
    embedder = _load(args.model, args)
    with _user_errors():
        result = evaluate_mmeb_v2(
            embedder, args.data, args.out, args.tasks, num_frames=args.num_frames,
            mode=args.mode, tie_rule=args.tie_rule, batch_size=args.batch_size,
            model_id=_model_id(embedder, args.model), show_progress=True,
        )
    print(summary_markdown(result["summary"]))
    print(f"scores, leaderboard.json and summary written to {args.out}")
    return 0
