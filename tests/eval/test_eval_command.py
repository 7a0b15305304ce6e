"""``paravec eval``: the converter end to end, and bad input caught before any model loads.

The model-backed runs (``eval mmeb`` / ``eval retrieval`` with a real preset) are covered by the
end-to-end tests that use ``paravec.load``.
"""

from __future__ import annotations

import pytest

from paravec import cli
from paravec.eval.retrieval import read_captions


@pytest.fixture
def run(monkeypatch, capsys):
    """Run ``paravec`` through the real entry point with only the eval command registered."""
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("eval",))

    def invoke(*argv: str) -> tuple[int, str, str]:
        status = cli.main(list(argv))
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return invoke


def test_eval_is_a_registered_command():
    assert "eval" in cli.COMMAND_MODULES


def test_convert_writes_a_corpus_the_retrieval_evaluation_reads(run, tmp_path):
    src = tmp_path / "Urban1k"
    (src / "image").mkdir(parents=True)
    (src / "caption").mkdir()
    for stem in ("1", "2"):
        (src / "image" / f"{stem}.jpg").write_bytes(b"")
        (src / "caption" / f"{stem}.txt").write_text(f"caption {stem}")
    status, out, _ = run("eval", "convert", "--format", "urban1k", "--src", str(src), "--out", str(tmp_path / "u"))
    assert status == 0 and "wrote 2 images and 2 captions" in out
    corpus = read_captions(tmp_path / "u")
    assert corpus.images == ["image/1.jpg", "image/2.jpg"] and corpus.captions == ["caption 1", "caption 2"]


def test_bad_input_is_a_one_line_error_before_loading_a_model(run, tmp_path):
    missing = tmp_path / "nothing.json"
    status, _, err = run("eval", "convert", "--format", "flickr30k", "--src", str(missing), "--out", str(tmp_path))
    assert status == 2 and f"{missing} does not exist" in err

    (tmp_path / "empty").mkdir()
    status, _, err = run("eval", "mmeb", "--model", "no-such-model", "--data", str(tmp_path / "empty"),
                         "--out", str(tmp_path / "out"))
    assert status == 2 and "no subset parquet files" in err and len(err.strip().splitlines()) == 1

    status, _, err = run("eval", "retrieval", "--model", "no-such-model", "--data", str(tmp_path / "empty"))
    assert status == 2 and "captions.jsonl does not exist" in err

    status, _, err = run("eval", "retrieval", "--model", "m", "--data", str(tmp_path), "--show", "2")
    assert status == 2 and "--show needs --out" in err


# ---------------------------------------------------------------- end to end, real tiny model
PRESET = "tiny-qwen2-vl"


@pytest.fixture(scope="module")
def tiny_model():
    import paravec

    return paravec.load(PRESET)


def naive_precision_at_1(model, data_dir, image_root, subset):
    """Reference: encode every query and candidate of every row separately, strict argmax."""
    import numpy as np
    import pyarrow.parquet as pq

    from paravec.data.images import load_image
    from paravec.items import Item

    def item(text, path):
        return Item(text=text or None, image=load_image(image_root, path) if path else None)

    rows = pq.read_table(data_dir / f"{subset}.parquet").to_pylist()
    outcomes = []
    for row in rows:
        query = model.encode([item(row["qry_text"], row["qry_img_path"])])[0]
        candidates = model.encode([item(t, p) for t, p in zip(row["tgt_text"], row["tgt_img_path"])], batch_size=1)
        scores = candidates @ query
        margin = scores[0] - np.max(scores[1:])
        outcomes.append((bool(margin > 0), abs(float(margin))))
    return outcomes


@pytest.fixture(scope="module")
def tiny_mmeb(tmp_path_factory):
    """Two small subsets: image queries with text labels, and text queries with image candidates."""
    from .helpers import solid_image, write_mmeb_parquet

    root = tmp_path_factory.mktemp("mmeb")
    colours = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}
    paths = {name: solid_image(root / "images", f"Colours/{name}.png", rgb, size=28) for name, rgb in colours.items()}
    names = list(colours)
    write_mmeb_parquet(root / "data" / "ColourCls.parquet", [
        {"qry_text": "<|image_1|> Represent the given image for classification", "qry_img_path": paths[name],
         "tgt_text": [name] + [n for n in names if n != name], "tgt_img_path": [""] * 4}
        for name in names
    ])
    write_mmeb_parquet(root / "data" / "ColourT2I.parquet", [
        {"qry_text": f"Find me an image of the colour {name}", "qry_img_path": "",
         "tgt_text": ["<|image_1|> Represent the given image."] * 3,
         "tgt_img_path": [paths[name]] + [paths[n] for n in names if n != name][:2]}
        for name in names
    ])
    return root / "data", root / "images"


def test_mmeb_command_end_to_end_matches_a_naive_evaluation(run, tiny_model, tiny_mmeb, tmp_path):
    import json

    from paravec.eval.gallery import gallery_size

    data, images = tiny_mmeb
    out = tmp_path / "out"
    args = ("eval", "mmeb", "--model", PRESET, "--data", str(data), "--image-root", str(images), "--out", str(out),
            "--batch-size", "3", "--show", "2", "--show-k", "2", "--compare-model", PRESET)
    status, stdout, err = run(*args)
    assert status == 0, err
    from paravec.eval.mmeb import read_predictions

    for subset in ("ColourCls", "ColourT2I"):
        score = json.loads((out / f"{subset}_score.json").read_text())
        predicted = [row["correct"] for row in read_predictions(out, subset)]
        assert score["num_pred"] == 4 and score["num_correct"] == sum(predicted)
        reference = naive_precision_at_1(tiny_model, data, images, subset)
        # Batch composition moves scores by ~1e-6; compare every row decided by a clear margin.
        decided = [(got, correct) for got, (correct, margin) in zip(predicted, reference) if margin > 1e-4]
        assert len(decided) >= 3
        assert all(got == correct for got, correct in decided)
        compared = json.loads((out / "compare" / f"{subset}_score.json").read_text())
        assert compared["num_correct"] == score["num_correct"]  # the same preset, compared with itself
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["num_subsets"] == 2 and "Overall" in (out / "summary.md").read_text()
    from PIL import Image

    assert Image.open(out / "gallery.png").size == gallery_size(2, 2, 2)

    status, _, _ = run(*args[:-6])  # rerun without gallery/compare: everything comes from the cache
    assert status == 0
    assert all(json.loads((out / f"{s}_score.json").read_text())["num_encoded"] == 0 for s in ("ColourCls", "ColourT2I"))


def test_retrieval_command_end_to_end(run, tiny_model, tmp_path):
    import json

    from paravec.eval.retrieval import write_captions

    from .helpers import solid_image

    colours = [(220, 30, 30), (30, 200, 30), (30, 30, 220)]
    pairs = [(solid_image(tmp_path / "corpus", f"img/{i}.png", rgb, size=28), [f"colour {i}", f"shade {i}"])
             for i, rgb in enumerate(colours)]
    write_captions(tmp_path / "corpus" / "captions.jsonl", pairs)
    out = tmp_path / "out"
    status, stdout, err = run("eval", "retrieval", "--model", PRESET, "--data", str(tmp_path / "corpus"),
                              "--out", str(out), "--show", "2", "--show-k", "2")
    assert status == 0, err
    scores = json.loads((out / "retrieval_scores.json").read_text())
    assert (scores["num_images"], scores["num_captions"]) == (3, 6)
    for direction in ("text_to_image", "image_to_text"):
        assert scores[direction]["10"] == 1.0  # every item is within the top 10 of a 3-image corpus
        assert 0.0 <= scores[direction]["1"] <= scores[direction]["5"] <= 1.0
    assert "| text -> image |" in stdout and (out / "gallery.png").is_file()
