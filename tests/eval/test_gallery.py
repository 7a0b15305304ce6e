"""The gallery PNG: exact size, one block of columns per model, correct candidates framed green."""

from __future__ import annotations

import numpy as np
from PIL import Image

from paravec.eval.gallery import (
    CELL_PX,
    CORRECT_COLOR,
    HEADER_PX,
    GalleryRow,
    Ranked,
    Shown,
    gallery_size,
    mmeb_gallery_rows,
    render_gallery,
    retrieval_gallery_rows,
)
from paravec.eval.mmeb import evaluate_mmeb, find_subsets, read_predictions
from paravec.eval.retrieval import evaluate_retrieval, write_captions

from .helpers import TableEncoder, solid_image, write_mmeb_parquet

GREEN_RGB = tuple(int(CORRECT_COLOR[i:i + 2], 16) for i in (1, 3, 5))


def green_columns(path, k_columns: int) -> list[bool]:
    """For each cell column, whether it holds pixels of the 'correct' frame colour."""
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    mask = (np.abs(pixels - np.array(GREEN_RGB)) <= 8).all(axis=2)
    return [bool(mask[:, c * CELL_PX:(c + 1) * CELL_PX].any()) for c in range(k_columns)]


def make_rows(k: int) -> list[GalleryRow]:
    picture = Image.new("RGB", (40, 30), (200, 120, 40))
    query = Shown("Find a caption for this picture " * 3, picture)
    right = [Ranked(Shown("the right answer", None), 0.9, True)] + [
        Ranked(Shown(f"distractor {j}", picture), 0.5 - j / 10, False) for j in range(k - 1)]
    wrong = [Ranked(Shown(f"wrong {j}", picture), 0.8 - j / 10, False) for j in range(k)]
    return [GalleryRow("row 0", query, [right, wrong]), GalleryRow("row 1", Shown("text only query", None), [wrong, wrong])]


def test_png_has_the_documented_size_and_a_second_model_adds_columns(tmp_path):
    k = 3
    rows = make_rows(k)
    one = [GalleryRow(r.label, r.query, r.results[:1]) for r in rows]
    size_one = render_gallery(one, ["model A"], tmp_path / "one.png", k=k)
    size_two = render_gallery(rows, ["model A", "model B"], tmp_path / "two.png", k=k)
    assert size_one == ((1 + k) * CELL_PX, HEADER_PX + 2 * CELL_PX) == gallery_size(2, 1, k)
    assert size_two == ((1 + 2 * k) * CELL_PX, HEADER_PX + 2 * CELL_PX)
    assert Image.open(tmp_path / "one.png").size == size_one
    assert Image.open(tmp_path / "two.png").size == size_two

    # Model A found the right answer first (green frame in its first column); model B never did.
    assert green_columns(tmp_path / "two.png", 1 + 2 * k) == [False, True, False, False, False, False, False]
    swapped = [GalleryRow(r.label, r.query, r.results[::-1]) for r in rows]
    render_gallery(swapped, ["model B", "model A"], tmp_path / "swapped.png", k=k)
    assert green_columns(tmp_path / "swapped.png", 1 + 2 * k) == [False, False, False, False, True, False, False]
    # The second model's block is drawn, not blank.
    pixels = np.asarray(Image.open(tmp_path / "two.png").convert("L"))
    assert (pixels[HEADER_PX:, (1 + k) * CELL_PX:] < 200).mean() > 0.005


def test_mmeb_rows_follow_each_runs_predictions(tmp_path):
    images, data = tmp_path / "images", tmp_path / "data"
    colours = {"red": (255, 0, 0), "green": (0, 255, 0)}
    paths = {name: solid_image(images, f"S/{name}.png", colour) for name, colour in colours.items()}
    write_mmeb_parquet(data / "S.parquet", [
        {"qry_text": "<|image_1|> colour?", "qry_img_path": paths[name], "tgt_text": [name, other, "blue"],
         "tgt_img_path": ["", "", ""]}
        for name, other in (("red", "green"), ("green", "red"))
    ])
    good = {"red": [1, 0, 0], "green": [0, 1, 0], "blue": [0, 0, 1]}
    bad = {"red": [0, 1, 0], "green": [1, 0, 0], "blue": [0, 0, 1]}  # swaps the labels: always wrong
    for name, labels in (("good", good), ("bad", bad)):
        model = TableEncoder(lambda s, labels=labels: good[next(n for n, c in colours.items() if c == s[1])]
                             if s[1] is not None else labels[s[0]], dim=3, name=name)
        evaluate_mmeb(model, data, images, tmp_path / name)
    rows = mmeb_gallery_rows(find_subsets(data), images, [tmp_path / "good", tmp_path / "bad"], n=2, k=2)
    assert [row.label for row in rows] == ["S #0", "S #1"]
    for r, row in enumerate(rows):
        assert row.query.image is not None and row.query.text == "colour?"
        good_top, bad_top = row.results
        assert good_top[0].correct and not any(candidate.correct for candidate in bad_top[:1])
        expected = read_predictions(tmp_path / "bad", "S")[r]
        assert [c.score for c in bad_top] == expected["scores"][:2]
    render_gallery(rows, ["good", "bad"], tmp_path / "gallery.png", k=2)
    assert green_columns(tmp_path / "gallery.png", 5)[1] and not green_columns(tmp_path / "gallery.png", 5)[3]


def test_retrieval_rows_alternate_directions(tmp_path):
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        solid_image(tmp_path, f"{i}.png", colour)
    write_captions(tmp_path / "captions.jsonl", [("0.png", ["red", "scarlet"]), ("1.png", ["blue"])])
    result = evaluate_retrieval(TableEncoder(), tmp_path)
    rows = retrieval_gallery_rows([result, result], None, n=3, k=2)
    assert [row.label.split(",")[0] for row in rows] == ["text -> image", "text -> image", "image -> text"]
    assert rows[0].query.text == "red" and rows[0].results[0][0].shown.image is not None
    assert rows[2].query.image is not None and rows[2].results[0][0].shown.text is not None
    for row in rows:
        assert len(row.results) == 2 and all(len(ranked) == 2 for ranked in row.results)
