"""A picture of what the models retrieve: queries beside each model's top-k candidates.

The paper's Figures 4-5 put a query next to the candidates two models rank first; this module
draws the same kind of grid as a PNG, one row per query. Column 0 shows the query (image and/or
wrapped text); then each model gets ``k`` columns, best candidate first, with its similarity.
The correct candidate has a thick green frame, others a thin grey one, so wins and losses read
at a glance. Drawing uses matplotlib's object API on the Agg canvas: no display, no global
pyplot state.

Layout is fixed in pixels (see :func:`gallery_size`) so figures line up across runs.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from PIL import Image

from paravec.eval.cache import ItemRef, image_loader
from paravec.eval.mmeb import read_predictions, read_subset
from paravec.eval.retrieval import RetrievalResult
from paravec.items import MMEB_IMAGE_PLACEHOLDER

CELL_PX = 200
HEADER_PX = 36
DPI = 100
CORRECT_COLOR = "#1a9850"
WRONG_COLOR = "#9e9e9e"
QUERY_COLOR = "#2c7bb6"
MAX_TEXT_LINES = 9


@dataclass(frozen=True)
class Shown:
    """Something to draw in a cell: text, an image, or both."""

    text: Optional[str]
    image: Optional[Image.Image]


@dataclass(frozen=True)
class Ranked:
    shown: Shown
    score: float
    correct: bool


@dataclass(frozen=True)
class GalleryRow:
    label: str
    query: Shown
    results: Sequence[Sequence[Ranked]]  # one list per model, best first


def gallery_size(num_rows: int, num_models: int, k: int, cell_px: int = CELL_PX) -> tuple[int, int]:
    """(width, height) in pixels of a gallery with these dimensions."""
    return (1 + num_models * k) * cell_px, HEADER_PX + num_rows * cell_px


def render_gallery(
    rows: Sequence[GalleryRow],
    model_names: Sequence[str],
    path: Path,
    *,
    k: int,
    cell_px: int = CELL_PX,
) -> tuple[int, int]:
    """Draw ``rows`` to a PNG at ``path``; return its (width, height) in pixels."""
    if not rows:
        raise ValueError("nothing to draw: the gallery has no rows")
    for row in rows:
        if len(row.results) != len(model_names):
            raise ValueError(
                f"row {row.label!r} has results for {len(row.results)} models, expected {len(model_names)}")
    width, height = gallery_size(len(rows), len(model_names), k, cell_px)
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    figure.patch.set_facecolor("white")

    def place(column: int, row: int):
        left = column * cell_px / width
        bottom = 1 - (HEADER_PX + (row + 1) * cell_px) / height
        axes = figure.add_axes((left, bottom, cell_px / width, cell_px / height))
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1)
        axes.axis("off")
        return axes

    header_y = 1 - HEADER_PX / 2 / height
    figure.text(0.5 * cell_px / width, header_y, "query", ha="center", va="center", fontsize=10, weight="bold")
    for m, name in enumerate(model_names):
        centre = (1 + m * k + k / 2) * cell_px / width
        figure.text(centre, header_y, f"{name}: top {k}", ha="center", va="center", fontsize=10, weight="bold")
        boundary = (1 + m * k) * cell_px / width  # a rule before each model's block
        figure.add_artist(Line2D([boundary, boundary], [0, 1], color="#444444", linewidth=1.5))
    for r, row in enumerate(rows):
        _draw_cell(place(0, r), row.query, f"{row.label}", QUERY_COLOR, 3.0, cell_px)
        for m, ranked in enumerate(row.results):
            for j, candidate in enumerate(ranked[:k]):
                color, line = (CORRECT_COLOR, 5.0) if candidate.correct else (WRONG_COLOR, 1.0)
                _draw_cell(place(1 + m * k + j, r), candidate.shown, f"#{j + 1}  {candidate.score:.3f}",
                           color, line, cell_px)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, facecolor="white")
    return width, height


def _draw_cell(axes, shown: Shown, title: str, frame_color: str, frame_width: float, cell_px: int) -> None:
    pad = 0.03
    axes.add_patch(Rectangle((pad / 2, pad / 2), 1 - pad, 1 - pad, fill=False,
                             edgecolor=frame_color, linewidth=frame_width, transform=axes.transAxes))
    axes.text(0.5, 0.96, title, ha="center", va="top", fontsize=7, color="#333333")
    text_top = 0.88
    if shown.image is not None:
        image = np.asarray(shown.image.convert("RGB"))
        height, width = image.shape[:2]
        box = 0.55  # the image fits in a box this share of the cell, centred under the title
        scale = box / max(height, width)
        w, h = width * scale, height * scale
        top = 0.89
        axes.imshow(image, extent=(0.5 - w / 2, 0.5 + w / 2, top - h, top), aspect="auto", interpolation="antialiased")
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1)
        text_top = top - h - 0.02
    if shown.text:
        characters = max(12, int(cell_px / 6.2))
        lines = textwrap.wrap(shown.text, width=characters)
        room = max(1, int(text_top / 0.085)) if shown.image is not None else MAX_TEXT_LINES
        if len(lines) > min(room, MAX_TEXT_LINES):
            lines = lines[:min(room, MAX_TEXT_LINES)]
            lines[-1] = lines[-1][: characters - 3] + "..."
        axes.text(0.5, text_top, "\n".join(lines), ha="center", va="top", fontsize=7, wrap=False)


def _display_text(text: Optional[str]) -> Optional[str]:
    if not text:
        return None
    return " ".join(text.replace(MMEB_IMAGE_PLACEHOLDER, " ").split()) or None


def _thumbnail(image: Optional[Image.Image], cell_px: int) -> Optional[Image.Image]:
    if image is None:
        return None
    image = image.copy()
    image.thumbnail((cell_px, cell_px))
    return image


def _spread(count: int, total: int) -> list[int]:
    """``count`` indices spread evenly over ``range(total)``, deterministic."""
    if total <= 0 or count <= 0:
        return []
    return sorted(set(np.linspace(0, total - 1, num=min(count, total)).round().astype(int).tolist()))


def mmeb_gallery_rows(
    data_files: dict[str, list[Path]],
    image_root: Optional[Path],
    run_dirs: Sequence[Path],
    n: int,
    k: int,
    cell_px: int = CELL_PX,
) -> list[GalleryRow]:
    """``n`` rows spread over the subsets and their rows, ranked by each run's ``<Subset>_pred.jsonl``.

    ``data_files`` maps each subset to its parquet files (see :func:`paravec.eval.mmeb.find_subsets`);
    ``run_dirs`` are the output directories of the evaluations to compare, in column order.
    """
    load = image_loader(image_root)
    names = list(data_files)
    if n < len(names):  # one row from each of n subsets spread over the list (it is sorted by name)
        shares = dict.fromkeys((names[i] for i in _spread(n, len(names))), 1)
    else:
        shares = {name: n // len(names) + (1 if i < n % len(names) else 0) for i, name in enumerate(names)}
    rows: list[GalleryRow] = []
    for name, share in shares.items():
        subset = read_subset(name, data_files[name])
        predictions = [read_predictions(run, name) for run in run_dirs]

        def shown(index: int) -> Shown:
            return _shown(subset.unique_refs[index], load, cell_px)

        for row in _spread(share, subset.num_rows):
            candidates = subset.candidate_ids[row]
            results = [
                [Ranked(shown(candidates[j]), score, j == 0)
                 for j, score in zip(run[row]["top"][:k], run[row]["scores"][:k])]
                for run in predictions
            ]
            rows.append(GalleryRow(f"{name} #{row}", shown(subset.query_ids[row]), results))
    return rows


def retrieval_gallery_rows(
    results: Sequence[RetrievalResult],
    image_root: Optional[Path],
    n: int,
    k: int,
    cell_px: int = CELL_PX,
) -> list[GalleryRow]:
    """``n`` queries alternating text -> image and image -> text, ranked by each result."""
    corpus = results[0].corpus
    load = image_loader(image_root if image_root is not None else corpus.source.parent)

    def image(i: int) -> Shown:
        return _shown(ItemRef(None, corpus.images[i], None, (corpus.source, corpus.lines[i], "image")), load, cell_px)

    def caption(c: int) -> Shown:
        return Shown(corpus.captions[c], None)

    t2i_queries = _spread((n + 1) // 2, len(corpus.captions))
    i2t_queries = _spread(n // 2, len(corpus.images))
    rows = []
    for c in t2i_queries:
        ranked = [[Ranked(image(i), float(s), i == corpus.caption_image[c])
                   for i, s in zip(result.t2i_indices[c][:k], result.t2i_scores[c][:k])] for result in results]
        rows.append(GalleryRow(f"text -> image, caption {c}", caption(c), ranked))
    for i in i2t_queries:
        ranked = [[Ranked(caption(c), float(s), corpus.caption_image[c] == i)
                   for c, s in zip(result.i2t_indices[i][:k], result.i2t_scores[i][:k])] for result in results]
        rows.append(GalleryRow(f"image -> text, image {i}", image(i), ranked))
    return rows


def _shown(ref: ItemRef, load, cell_px: int) -> Shown:
    return Shown(_display_text(ref.text), _thumbnail(load(ref), cell_px))
