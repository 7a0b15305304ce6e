"""``paravec index build|search|eval``: faiss indexes over encoded corpora (:mod:`paravec.vectors`).

- ``build --embeddings corpus.npy --ids ids.txt|--ids-from items.jsonl --kind KIND --out DIR``:
  an index folder (layout in :mod:`paravec.vectors.index`) whose ids manifest maps rows to the
  user's ids. ``--rescore [PRECISION]`` also stores the corpus vectors, for binary and ivfpq.
- ``search --index DIR --queries q.npy --out results.jsonl``: one line per query,
  ``{"query": row, "ids": [...], "scores": [...]}``, best first.
- ``eval --index DIR --queries q.npy --qrels qrels.jsonl``: Recall@1, Recall@10 and NDCG@10
  (definitions and the qrels format in :mod:`paravec.vectors.evaluate`).

Embeddings and queries are float ``.npy`` arrays (``paravec encode`` output at float32 or
float16): the index kinds quantise for themselves. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from paravec.cli import CommandError
from paravec.commands.options import positive_int
from paravec.vectors.evaluate import DEFAULT_KS, NDCG_AT, read_qrels, retrieval_scores
from paravec.vectors.index import DEFAULT_RESCORE_MULTIPLIER, VectorIndex
from paravec.vectors.kinds import KINDS
from paravec.vectors.rescore import RESCORE_PRECISIONS

QRELS_HELP = (
    'JSONL, one line per query: {"query": ROW, "relevant": ["id", ...]} or {"query": ROW, "relevant": {"id": GAIN}}; '
    "ROW is the query's 0-based row in --queries, ids are index ids, gains > 0 (a list means gain 1)"
)


def register(subparsers) -> None:
    parser = subparsers.add_parser("index", help="build, search and evaluate faiss indexes of encoded embeddings",
                                   description="Build a faiss index over encoded embeddings with an ids manifest, "
                                               "search it, and score retrieval against qrels.")
    actions = parser.add_subparsers(dest="index_command", required=True)

    kinds = "; ".join(f"{name}: {kind.summary}" for name, kind in KINDS.items())
    build = actions.add_parser("build", help="index an encoded corpus", description=f"Index kinds: {kinds}.")
    build.add_argument("--embeddings", required=True, type=Path, help="float .npy [n, d], e.g. from paravec encode")
    ids = build.add_mutually_exclusive_group(required=True)
    ids.add_argument("--ids", type=Path, help="text file: one id per line, in the rows' order")
    ids.add_argument("--ids-from", type=Path, metavar="ITEMS_JSONL",
                     help="the JSONL that was encoded: each non-blank line's 'id' field, in order")
    build.add_argument("--kind", choices=list(KINDS), default="flat", help="index kind (default flat)")
    build.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                       help="a kind parameter, repeatable: hnsw m, ef_construction, ef_search; "
                            "ivfpq nlist, nprobe, pq_m, pq_bits (default: chosen from n and d)")
    build.add_argument("--rescore", nargs="?", const="float32", default=None, choices=list(RESCORE_PRECISIONS),
                       help="binary/ivfpq: also store the corpus vectors (default float32) to rescore a shortlist")
    build.add_argument("--out", required=True, type=Path, help="index folder to write (replaced atomically)")
    build.set_defaults(func=run_build)

    search = actions.add_parser("search", help="top-k ids and scores for each query")
    _add_search_options(search)
    search.add_argument("--out", required=True, type=Path, help='results JSONL: {"query": row, "ids": [...], "scores": [...]}')
    search.set_defaults(func=run_search)

    evaluate = actions.add_parser("eval", help=f"Recall@1/10 and NDCG@{NDCG_AT} of the index against qrels",
                                  description="Recall@K: share of queries with a relevant id in the top K. "
                                              f"NDCG@{NDCG_AT}: linear gains, log2 discount. qrels: {QRELS_HELP}.")
    _add_search_options(evaluate, with_k=False)
    evaluate.add_argument("--qrels", required=True, type=Path, help=QRELS_HELP)
    evaluate.set_defaults(func=run_eval)


def _add_search_options(parser: argparse.ArgumentParser, with_k: bool = True) -> None:
    parser.add_argument("--index", required=True, type=Path, help="an index folder from paravec index build")
    parser.add_argument("--queries", required=True, type=Path, help="float .npy [q, d] of query embeddings")
    if with_k:
        parser.add_argument("--k", type=positive_int, default=10, help="results per query (default 10)")
    parser.add_argument("--rescore-multiplier", type=positive_int, default=DEFAULT_RESCORE_MULTIPLIER,
                        help=f"with stored rescoring vectors: shortlist k times this (default {DEFAULT_RESCORE_MULTIPLIER})")
    parser.add_argument("--no-rescore", action="store_true", help="ignore stored rescoring vectors (first stage alone)")


# ------------------------------------------------------------------------------------- build


def run_build(args: argparse.Namespace) -> int:
    embeddings = load_float_array(args.embeddings)
    ids = read_ids_file(args.ids) if args.ids is not None else read_ids_from_items(args.ids_from)
    source = args.ids if args.ids is not None else args.ids_from
    if len(ids) != embeddings.shape[0]:
        raise CommandError(f"{source} has {len(ids)} ids but {args.embeddings} has {embeddings.shape[0]} rows")
    params = parse_params(args.param)
    try:
        index = VectorIndex.build(embeddings, ids, args.kind, params=params, rescore=args.rescore)
    except ValueError as error:
        raise CommandError(f"{args.kind} index over {args.embeddings}: {error}") from None
    index.save(args.out)
    size = index.size()
    print(f"indexed {index.count} x {index.dim} vectors ({args.kind}{', rescore ' + args.rescore if args.rescore else ''}) "
          f"in {args.out}: {size.index} bytes of index + {size.rescore} of rescoring vectors")
    return 0


def load_float_array(path: Path) -> np.ndarray:
    """A float ``[n, d]`` array from ``.npy``; every problem is one line naming the file."""
    if not path.is_file():
        raise CommandError(f"{path}: no such file")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise CommandError(f"{path}: not a .npy array ({str(error).splitlines()[0] if str(error) else error!r})") from None
    if not isinstance(array, np.ndarray) or array.ndim != 2 or 0 in array.shape:
        raise CommandError(f"{path}: expected a non-empty [n, d] array, got shape {getattr(array, 'shape', None)}")
    if not np.issubdtype(array.dtype, np.floating):
        raise CommandError(f"{path}: expected float embeddings, got {array.dtype} (index float32/float16 output of "
                           "paravec encode; the index kinds quantise themselves)")
    return array


def read_ids_file(path: Path) -> list[str]:
    if not path.is_file():
        raise CommandError(f"{path}: no such file")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as error:
        raise CommandError(f"{path}: not UTF-8 text ({error.reason})") from None
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last id, it does not start another
    ids = [line.removesuffix("\r") for line in lines]
    for number, name in enumerate(ids, start=1):
        if not name:
            raise CommandError(f"{path}, line {number}: empty id")
    return _unique(ids, path, lambda row: f"line {row + 1}")


def read_ids_from_items(path: Path) -> list[str]:
    """The ``id`` field of each non-blank line: the same rows, in the same order, as ``paravec encode`` embeds."""
    if not path.is_file():
        raise CommandError(f"{path}: no such file")
    ids, lines = [], []
    with path.open(encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as error:
                raise CommandError(f"{path}, line {number}: malformed JSON ({error.msg})") from None
            name = row.get("id") if isinstance(row, dict) else None
            if not isinstance(name, str) or not name:
                raise CommandError(f"{path}, line {number}: no 'id' string (--ids-from needs one on every line)")
            ids.append(name)
            lines.append(number)
    return _unique(ids, path, lambda row: f"line {lines[row]}")


def _unique(ids: list[str], path: Path, where) -> list[str]:
    seen: dict[str, int] = {}
    for row, name in enumerate(ids):
        if name in seen:
            raise CommandError(f"{path}, {where(row)}: id {name!r} already used at {where(seen[name])}")
        seen[name] = row
    return ids


def parse_params(pairs: list[str]) -> dict[str, int]:
    params = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CommandError(f"--param {pair!r}: expected NAME=VALUE")
        try:
            params[name.strip()] = int(value)
        except ValueError:
            raise CommandError(f"--param {pair!r}: {value!r} is not an integer") from None
    return params


# ------------------------------------------------------------------------------ search / eval


def load_index(path: Path) -> VectorIndex:
    try:
        return VectorIndex.load(path)
    except ValueError as error:
        raise CommandError(str(error)) from None


def search(args: argparse.Namespace, k: int):
    index = load_index(args.index)
    queries = load_float_array(args.queries)
    if queries.shape[1] != index.dim:
        raise CommandError(f"{args.queries} has {queries.shape[1]} dimensions, the index {args.index} {index.dim}")
    try:
        result = index.search(queries, k, rescore=False if args.no_rescore else None,
                              rescore_multiplier=args.rescore_multiplier)
    except ValueError as error:
        raise CommandError(f"{args.queries}: {error}") from None
    return index, result


def run_search(args: argparse.Namespace) -> int:
    from paravec.core.atomic import atomic_file

    _, result = search(args, args.k)
    with atomic_file(args.out, "w") as stream:
        for query in range(result.rows.shape[0]):
            hits = result.hits(query)
            line = {"query": query, "ids": [name for name, _ in hits], "scores": [score for _, score in hits]}
            stream.write(json.dumps(line, ensure_ascii=False) + "\n")
    print(f"wrote the top {args.k} of {result.rows.shape[0]} queries to {args.out}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    index, result = search(args, max(*DEFAULT_KS, NDCG_AT))
    try:
        qrels = read_qrels(args.qrels, index.ids, query_count=result.rows.shape[0])
        scores = retrieval_scores(result, qrels, DEFAULT_KS)
    except ValueError as error:
        raise CommandError(str(error)) from None
    print(f"{len(qrels)} queries with qrels, index {args.index} ({index.kind.name})")
    for name, value in scores.items():
        print(f"{name}\t{value:.4f}")
    return 0
