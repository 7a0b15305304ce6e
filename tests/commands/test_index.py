"""paravec index build/search/eval: the files hold what the library computes; bad input is one named line."""

import argparse
import json

import numpy as np
import pytest

from paravec.cli import CommandError
from paravec.commands import index as index_command
from paravec.vectors import VectorIndex, read_qrels, retrieval_scores


def run(argv):
    """What ``paravec.cli.main`` does once ``index`` is in COMMAND_MODULES: parse, run, CommandError -> 2."""
    parser = argparse.ArgumentParser(prog="paravec")
    index_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args), None
    except CommandError as error:
        return 2, str(error)


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((300, 32)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    queries = corpus[:20] + 0.3 * rng.standard_normal((20, 32)).astype(np.float32)
    ids = [f"item-{i}" for i in range(300)]
    np.save(tmp_path / "corpus.npy", corpus)
    np.save(tmp_path / "queries.npy", queries)
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    # every query's relevant item is the corpus vector it was made from
    (tmp_path / "qrels.jsonl").write_text("".join(json.dumps({"query": q, "relevant": [ids[q]]}) + "\n" for q in range(20)))
    return tmp_path, corpus, queries, ids


@pytest.mark.parametrize("kind, extra", [("flat", []), ("binary", ["--rescore", "int8"]), ("ivfpq", ["--rescore"]),
                                         ("hnsw", ["--param", "m=8", "--param", "ef_search=40"])])
def test_build_search_and_eval_write_what_the_library_computes(files, capsys, kind, extra):
    folder, _, queries, ids = files
    out = folder / "index"
    assert run(["index", "build", "--embeddings", str(folder / "corpus.npy"), "--ids", str(folder / "ids.txt"),
                "--kind", kind, *extra, "--out", str(out)]) == (0, None)
    index = VectorIndex.load(out)
    assert index.ids == ids and index.kind.name == kind
    if kind == "hnsw":
        assert (index.params.m, index.params.ef_search) == (8, 40)

    results = folder / "results.jsonl"
    assert run(["index", "search", "--index", str(out), "--queries", str(folder / "queries.npy"), "--k", "5",
                "--rescore-multiplier", "3", "--out", str(results)]) == (0, None)
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    expected = index.search(queries, 5, rescore_multiplier=3)
    assert [line["query"] for line in lines] == list(range(20))
    assert [line["ids"] for line in lines] == [expected.ids(q) for q in range(20)]
    np.testing.assert_allclose([line["scores"] for line in lines], expected.scores, rtol=1e-6)

    capsys.readouterr()
    assert run(["index", "eval", "--index", str(out), "--queries", str(folder / "queries.npy"),
                "--qrels", str(folder / "qrels.jsonl")]) == (0, None)
    printed = dict(line.split("\t") for line in capsys.readouterr().out.splitlines() if "\t" in line)
    scores = retrieval_scores(index.search(queries, 10), read_qrels(folder / "qrels.jsonl", ids))
    assert {name: float(value) for name, value in printed.items()} == pytest.approx(scores, abs=5e-5)
    assert set(printed) == {"recall@1", "recall@10", "ndcg@10"}


def test_no_rescore_gives_the_first_stage(files):
    folder, _, queries, _ = files
    out = folder / "index"
    run(["index", "build", "--embeddings", str(folder / "corpus.npy"), "--ids", str(folder / "ids.txt"),
         "--kind", "binary", "--rescore", "--out", str(out)])
    run(["index", "search", "--index", str(out), "--queries", str(folder / "queries.npy"), "--no-rescore",
         "--out", str(folder / "r.jsonl")])
    lines = [json.loads(line)["ids"] for line in (folder / "r.jsonl").read_text().splitlines()]
    first_stage = VectorIndex.load(out).search(queries, 10, rescore=False)
    assert lines == [first_stage.ids(q) for q in range(20)]


def test_ids_from_the_encoded_items_file(files):
    folder = files[0]
    items = folder / "items.jsonl"
    items.write_text("".join(json.dumps({"text": f"caption {i}", "id": f"c{i}"}) + ("\n\n" if i == 3 else "\n")
                             for i in range(300)))
    assert run(["index", "build", "--embeddings", str(folder / "corpus.npy"), "--ids-from", str(items),
                "--out", str(folder / "index")]) == (0, None)
    assert VectorIndex.load(folder / "index").ids == [f"c{i}" for i in range(300)]


def _build(folder, *options):
    return run(["index", "build", "--embeddings", str(folder / "corpus.npy"), *options, "--out", str(folder / "index")])


def test_bad_build_input_is_one_named_line(files):
    folder, _, _, ids = files
    (folder / "short.txt").write_text("\n".join(ids[:299]) + "\n")
    (folder / "blank.txt").write_text("a\n\nb\n")
    (folder / "twice.txt").write_text("\n".join(ids[:299] + ["item-7"]) + "\n")
    (folder / "noid.jsonl").write_text('{"text": "a", "id": "x"}\n{"text": "b"}\n')
    np.save(folder / "codes.npy", np.zeros((300, 4), dtype=np.uint8))
    (folder / "bad.npy").write_bytes(b"not numpy")
    cases = [
        (["--ids", str(folder / "short.txt")], f"{folder / 'short.txt'} has 299 ids but {folder / 'corpus.npy'} has 300 rows"),
        (["--ids", str(folder / "missing.txt")], f"{folder / 'missing.txt'}: no such file"),
        (["--ids", str(folder / "blank.txt")], f"{folder / 'blank.txt'}, line 2: empty id"),
        (["--ids", str(folder / "twice.txt")], f"{folder / 'twice.txt'}, line 300: id 'item-7' already used at line 8"),
        (["--ids-from", str(folder / "noid.jsonl")], f"{folder / 'noid.jsonl'}, line 2: no 'id' string"),
        (["--ids", str(folder / "ids.txt"), "--param", "nlist"], "--param 'nlist': expected NAME=VALUE"),
        (["--ids", str(folder / "ids.txt"), "--param", "nlist=x"], "--param 'nlist=x': 'x' is not an integer"),
        (["--ids", str(folder / "ids.txt"), "--kind", "ivfpq", "--param", "m=4"], "m: not a parameter of index kind 'ivfpq'"),
        (["--ids", str(folder / "ids.txt"), "--kind", "flat", "--rescore"], "rescoring applies to"),
    ]
    for options, message in cases:
        status, error = _build(folder, *options)
        assert status == 2 and message in error and "\n" not in error, (options, error)
    assert not (folder / "index").exists()
    for name, message in [("codes.npy", "expected float embeddings, got uint8"), ("bad.npy", "not a .npy array"),
                          ("nowhere.npy", "no such file")]:
        status, error = run(["index", "build", "--embeddings", str(folder / name), "--ids", str(folder / "ids.txt"),
                             "--out", str(folder / "index")])
        assert status == 2 and error.startswith(str(folder / name)) and message in error, error


def test_bad_search_input_is_one_named_line(files):
    folder, _, queries, _ = files
    _build(folder, "--ids", str(folder / "ids.txt"))
    np.save(folder / "narrow.npy", queries[:, :16])
    out = folder / "r.jsonl"
    status, error = run(["index", "search", "--index", str(folder / "index"), "--queries", str(folder / "narrow.npy"),
                         "--out", str(out)])
    assert status == 2 and error == f"{folder / 'narrow.npy'} has 16 dimensions, the index {folder / 'index'} 32"
    (folder / "index" / "ids.json").unlink()
    status, error = run(["index", "search", "--index", str(folder / "index"), "--queries", str(folder / "queries.npy"),
                         "--out", str(out)])
    assert status == 2 and "ids.json is missing" in error and str(folder / "index") in error
    assert not out.exists()


def test_bad_qrels_are_named(files):
    folder, _, _, _ = files
    _build(folder, "--ids", str(folder / "ids.txt"))
    qrels = folder / "bad_qrels.jsonl"
    qrels.write_text('{"query": 0, "relevant": ["item-0"]}\n{"query": 25, "relevant": ["item-1"]}\n')
    status, error = run(["index", "eval", "--index", str(folder / "index"), "--queries", str(folder / "queries.npy"),
                         "--qrels", str(qrels)])
    assert status == 2 and error == f"{qrels}, line 2: query row 25, but there are 20 queries"
