"""The built-in mini benchmark: MMEB's four meta-tasks on drawn shapes, offline and in seconds.

``generate_mini_benchmark(out_dir)`` writes, in exactly the MMEB formats:

* ``train/<Subset>.parquet``: MMEB-train columns (``qry``, ``qry_image_path``, ``pos_text``,
  ``pos_image_path``, and ``neg_text``, ``neg_image_path`` on the subsets with hard negatives),
  for the in-distribution (IND) subsets only;
* ``eval/<Subset>.parquet``: MMEB-eval columns (``qry_text``, ``qry_img_path``, ``tgt_text``,
  ``tgt_img_path``), the correct candidate first, for every subset;
* ``images/<Subset>/{train,eval}/*.png``, the paths in the parquet files being relative to
  ``images/``;
* ``tasks.json`` (meta-task and IND/OOD split of each subset, read by the evaluation report),
  ``README.md``, and ``metadata/<Subset>.{train,eval}.jsonl`` with what each row was generated
  from (scene objects, answers), for tests and error analysis.

Difficulty. A tiny model trained for minutes learns a single-caption task almost perfectly, so
the benchmark leans on what small models find hard: counting, binding colours to shapes,
spatial relations, near-miss candidates that differ from the answer in one detail (one colour,
one shape, swapped colours between two objects, a neighbouring grid cell), composed retrieval,
and grounding among shapes that share a colour or a shape with the target. Out-of-distribution
subsets hold out colour-shape combinations (never drawn in any training image), an image style
(outlines), task types (colour classification, size questions, spatial referring expressions)
and edit compositions (two edits at once).

Instructions follow MMEB's wording; a subset uses the same strings in train and eval.
Determinism: every subset draws from ``numpy.random.default_rng([seed, crc32(subset),
crc32(part)])``, so subsets are independent of each other and of the worker that builds them,
and the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from paravec.data.mini_scenes import (
    BACKGROUNDS, CELLS, COLOR_NAMES, COUNT_WORDS, HELD_OUT_COMBOS, SHAPES, SIZE_NAMES,
    CELL_PHRASES, CaptionScene, Obj, Placed, Scene, crop, describe, place_in_line, place_scattered, plural,
    random_background, render,
)

CLASSIFICATION, VQA, RETRIEVAL, GROUNDING = "Classification", "VQA", "Retrieval", "Grounding"
IND, OOD = "IND", "OOD"

_IMAGE = "<|image_1|>\n"
CLASSIFY = _IMAGE + "Represent the given image for classification"
CLASSIFY_TEXTURE = _IMAGE + "Identify the background pattern shown in the image"
CLASSIFY_COLOR = _IMAGE + "Represent the given image for color classification"
ASK = _IMAGE + "Represent the given image with the following question: {question}"
TEXT_TO_IMAGE = "Find me an everyday image that matches the given caption: {caption}"
IMAGE_TO_TEXT = _IMAGE + "Find an image caption describing the given everyday image."
EDIT = _IMAGE + "Given an image, find a similar everyday image with the described changes: {change}"
GROUND_LABEL = _IMAGE + 'Select the portion of the image that isolates the object labeled as "{label}"'
GROUND_EXPRESSION = _IMAGE + "Select the portion of the image that follows the language expressions: {expression}"
IMAGE_TARGET = _IMAGE + "Represent the given image."
CROP_TARGET = _IMAGE + "Represent the given cropped image of the object"


@dataclass(frozen=True)
class BenchmarkSize:
    """How much to generate. ``train_rows``/``eval_rows`` are per subset; the candidate counts
    are upper bounds per eval row (retrieval lists are cut to what the pool offers)."""

    train_rows: int
    eval_rows: int
    caption_candidates: int
    edit_candidates: int
    near_misses: int
    grounding_other_crops: int


BENCHMARK_SIZES = {
    "small": BenchmarkSize(train_rows=12, eval_rows=8, caption_candidates=8, edit_candidates=8,
                           near_misses=2, grounding_other_crops=3),
    "default": BenchmarkSize(train_rows=500, eval_rows=150, caption_candidates=50, edit_candidates=30,
                             near_misses=4, grounding_other_crops=10),
}


class _Context:
    """Random streams and image output of one subset."""

    def __init__(self, subset: str, seed: int, size: BenchmarkSize, images_dir: Path) -> None:
        self.subset = subset
        self.seed = seed
        self.size = size
        self.images_dir = images_dir
        self._made_dirs: set[Path] = set()

    def rng(self, part: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, zlib.crc32(self.subset.encode()), zlib.crc32(part.encode())])

    def save(self, image: Image.Image, part: str, name: str) -> str:
        relative = f"{self.subset}/{part}/{name}.png"
        path = self.images_dir / relative
        if path.parent not in self._made_dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._made_dirs.add(path.parent)
        image.save(path, format="PNG", compress_level=1)
        return relative


Row = tuple[dict, dict]  # (parquet row, generation metadata)


# --------------------------------------------------------------------------- random objects

def _random_obj(rng: np.random.Generator, *, size: Optional[str] = None, held_out: bool = False,
                color: Optional[str] = None, shape: Optional[str] = None) -> Obj:
    """A random object; training-distribution objects never use a held-out colour-shape pair."""
    while True:
        obj = Obj(shape or str(rng.choice(SHAPES)), color or str(rng.choice(COLOR_NAMES)),
                  size or str(rng.choice(SIZE_NAMES)))
        if obj.held_out == held_out:
            return obj


def _distinct_objs(rng: np.random.Generator, count: int, *, sizes: Sequence[str],
                   distinct_shapes: bool = False, distinct_colors: bool = False) -> list[Obj]:
    """``count`` allowed objects with distinct (colour, shape) pairs, optionally all shapes or
    all colours distinct."""
    objs: list[Obj] = []
    while len(objs) < count:
        obj = _random_obj(rng, size=sizes[len(objs)])
        if any((o.color, o.shape) == (obj.color, obj.shape) for o in objs):
            continue
        if distinct_shapes and any(o.shape == obj.shape for o in objs):
            continue
        if distinct_colors and any(o.color == obj.color for o in objs):
            continue
        objs.append(obj)
    return objs


def _others_in_order(rng: np.random.Generator, answer: str, choices: Sequence[str]) -> list[str]:
    """The answer first, then the other choices in random order (MMEB: index 0 is correct)."""
    others = [choice for choice in choices if choice != answer]
    return [answer] + [others[i] for i in rng.permutation(len(others))]


# --------------------------------------------------------------------------- labelled tasks

@dataclass
class _Labelled:
    """An image with a query and a text answer from a fixed answer set (classification, VQA)."""

    scene: Scene
    query: str
    answer: str
    choices: tuple[str, ...]
    meta: dict


def _single_shape(rng: np.random.Generator, outline: bool = False) -> Scene:
    obj = _random_obj(rng)
    return Scene(random_background(rng), place_scattered(rng, [obj]), outline=outline)


def _shape_class(rng: np.random.Generator, outline: bool = False) -> _Labelled:
    scene = _single_shape(rng, outline)
    return _Labelled(scene, CLASSIFY, scene.objects[0].obj.shape, SHAPES, {})


def _texture_class(rng: np.random.Generator) -> _Labelled:
    objs = _distinct_objs(rng, int(rng.integers(1, 4)), sizes=["small"] * 3)
    scene = Scene(random_background(rng), place_scattered(rng, objs))
    return _Labelled(scene, CLASSIFY_TEXTURE, scene.background.kind, BACKGROUNDS, {})


def _color_class(rng: np.random.Generator) -> _Labelled:
    scene = _single_shape(rng)
    return _Labelled(scene, CLASSIFY_COLOR, scene.objects[0].obj.color, COLOR_NAMES, {})


def _count_vqa(rng: np.random.Generator) -> _Labelled:
    count = int(rng.integers(1, 7))
    # A few colours and shapes per scene, so that "how many red shapes" has answers above one.
    palette = list(rng.choice(COLOR_NAMES, size=2 + int(rng.integers(0, 2)), replace=False))
    kinds = list(rng.choice(SHAPES, size=2 + int(rng.integers(0, 2)), replace=False))
    objs = []
    while len(objs) < count:
        size = "large" if count <= 3 and rng.random() < 0.3 else "small"
        obj = Obj(str(rng.choice(kinds)), str(rng.choice(palette)), size)
        if not obj.held_out:
            objs.append(obj)
    scene = Scene(random_background(rng), place_scattered(rng, objs))
    kind = str(rng.choice(["total", "color", "shape"]))
    if kind == "total":
        question, answer = "How many shapes are in the image?", count
    elif kind == "color":
        color = objs[int(rng.integers(0, count))].color
        question, answer = f"How many {color} shapes are in the image?", sum(o.color == color for o in objs)
    else:
        shape = objs[int(rng.integers(0, count))].shape
        question, answer = f"How many {plural(shape)} are in the image?", sum(o.shape == shape for o in objs)
    return _Labelled(scene, ASK.format(question=question), COUNT_WORDS[answer], COUNT_WORDS[1:],
                     {"question_type": kind})


def _color_vqa(rng: np.random.Generator) -> _Labelled:
    count = int(rng.integers(2, 5))
    objs = _distinct_objs(rng, count, sizes=[str(rng.choice(SIZE_NAMES)) if count == 2 else "small"] * count,
                          distinct_shapes=True)
    scene = Scene(random_background(rng), place_scattered(rng, objs))
    asked = objs[int(rng.integers(0, count))]
    question = f"What color is the {asked.shape}?"
    return _Labelled(scene, ASK.format(question=question), asked.color, COLOR_NAMES, {"asked": asked.shape})


_NEIGHBOUR_WORDS = {"horizontal": ("to the left of", "to the right of"), "vertical": ("above", "below")}


def _relation_vqa(rng: np.random.Generator) -> _Labelled:
    axis = str(rng.choice(["horizontal", "vertical"]))
    objs = _distinct_objs(rng, 3, sizes=["small"] * 3, distinct_shapes=True, distinct_colors=True)
    scene = Scene(random_background(rng), place_in_line(rng, objs, axis))
    before_word, after_word = _NEIGHBOUR_WORDS[axis]
    # objs are in reading order: asking what is "before" object k (k >= 1) has answer k - 1.
    if rng.integers(0, 2):
        reference = int(rng.integers(1, 3))
        word, answer = before_word, objs[reference - 1]
    else:
        reference = int(rng.integers(0, 2))
        word, answer = after_word, objs[reference + 1]
    anchor = objs[reference]
    question = f"What shape is immediately {word} the {anchor.color} {anchor.shape}?"
    return _Labelled(scene, ASK.format(question=question), answer.shape, SHAPES, {"axis": axis})


def _size_vqa(rng: np.random.Generator) -> _Labelled:
    count = int(rng.integers(2, 4))
    objs = _distinct_objs(rng, count, sizes=["large"] + ["small"] * (count - 1),
                          distinct_shapes=True, distinct_colors=True)
    objs = [objs[i] for i in rng.permutation(count)]
    scene = Scene(random_background(rng), place_scattered(rng, objs))
    large = next(o for o in objs if o.size == "large")
    if rng.integers(0, 2):
        return _Labelled(scene, ASK.format(question="What color is the large shape?"), large.color,
                         COLOR_NAMES, {"question_type": "color"})
    return _Labelled(scene, ASK.format(question="Which shape is the large one?"), large.shape,
                     SHAPES, {"question_type": "shape"})


def _labelled_train(sample: Callable[[np.random.Generator], _Labelled]) -> Callable[[_Context], list[Row]]:
    def make(ctx: _Context) -> list[Row]:
        rng = ctx.rng("train")
        rows = []
        for i in range(ctx.size.train_rows):
            example = sample(rng)
            path = ctx.save(render(example.scene), "train", f"{i:05d}")
            row = {"qry": example.query, "qry_image_path": path, "pos_text": example.answer, "pos_image_path": ""}
            rows.append((row, {"answer": example.answer, **example.meta, "scene": describe(example.scene)}))
        return rows

    return make


def _labelled_eval(sample: Callable[[np.random.Generator], _Labelled]) -> Callable[[_Context], list[Row]]:
    def make(ctx: _Context) -> list[Row]:
        rng = ctx.rng("eval")
        rows = []
        for i in range(ctx.size.eval_rows):
            example = sample(rng)
            path = ctx.save(render(example.scene), "eval", f"{i:05d}")
            candidates = _others_in_order(rng, example.answer, example.choices)
            row = {"qry_text": example.query, "qry_img_path": path,
                   "tgt_text": candidates, "tgt_img_path": [""] * len(candidates)}
            rows.append((row, {"answer": example.answer, **example.meta, "scene": describe(example.scene)}))
        return rows

    return make


# --------------------------------------------------------------------------- caption retrieval

def _caption_scene(rng: np.random.Generator, held_out: bool = False) -> CaptionScene:
    """One or two objects; with ``held_out`` at least one uses a held-out colour-shape pair."""
    background = str(rng.choice(BACKGROUNDS))
    if rng.integers(0, 2):
        return CaptionScene(background, (_random_obj(rng, held_out=held_out),), str(rng.choice(CELLS)))
    while True:
        objs = [_random_obj(rng, held_out=held_out), _random_obj(rng, held_out=held_out and rng.random() < 0.3)]
        if objs[0] != objs[1]:
            break
    order = rng.permutation(2)
    return CaptionScene(background, (objs[order[0]], objs[order[1]]), str(rng.choice(["horizontal", "vertical"])))


def _in_distribution(scene: CaptionScene) -> bool:
    return not scene.has_held_out()


def _near_misses(rng: np.random.Generator, scene: CaptionScene, count: int, allow_held_out: bool) -> list[CaptionScene]:
    variants = [v for v in scene.variants() if allow_held_out or _in_distribution(v)]
    picks = rng.permutation(len(variants))[:count]
    return [variants[i] for i in picks]


def _fill_from_pool(rng: np.random.Generator, chosen: list, pool: Sequence, total: int,
                    excluded: Callable[[object], bool]) -> list:
    """Add random pool entries (not excluded, not already chosen) until ``total`` entries."""
    out = list(chosen)
    for index in rng.permutation(len(pool)):
        if len(out) >= total:
            break
        entry = pool[index]
        if entry not in out and not excluded(entry):
            out.append(entry)
    return out


def _caption_to_image_train(ctx: _Context) -> list[Row]:
    rng = ctx.rng("train")
    rows = []
    for i in range(ctx.size.train_rows):
        scene = _caption_scene(rng)
        caption = scene.caption(rng)
        path = ctx.save(render(scene.realise(rng)), "train", f"{i:05d}")
        row = {"qry": TEXT_TO_IMAGE.format(caption=caption), "qry_image_path": "",
               "pos_text": IMAGE_TARGET, "pos_image_path": path}
        rows.append((row, {"target": asdict(scene)}))
    return rows


def _caption_to_image_eval(held_out: bool) -> Callable[[_Context], list[Row]]:
    """Text-to-image rows: each row's candidates are its image, renderings of near-miss scenes,
    and other rows' images whose scene the caption does not describe."""

    def make(ctx: _Context) -> list[Row]:
        rng = ctx.rng("eval")
        scenes = [_caption_scene(rng, held_out) for _ in range(ctx.size.eval_rows)]
        targets = [(scene, ctx.save(render(scene.realise(rng)), "eval", f"{i:05d}")) for i, scene in enumerate(scenes)]
        rows = []
        for i, scene in enumerate(scenes):
            near = [(variant, ctx.save(render(variant.realise(rng)), "eval", f"{i:05d}_near{k}"))
                    for k, variant in enumerate(_near_misses(rng, scene, ctx.size.near_misses, held_out))]
            candidates = _fill_from_pool(rng, [targets[i]] + near, targets, ctx.size.caption_candidates,
                                         excluded=lambda entry, scene=scene: entry[0] == scene)
            caption = scene.caption(rng)
            row = {"qry_text": TEXT_TO_IMAGE.format(caption=caption), "qry_img_path": "",
                   "tgt_text": [IMAGE_TARGET] * len(candidates), "tgt_img_path": [path for _, path in candidates]}
            rows.append((row, {"caption": caption, "candidates": [asdict(s) for s, _ in candidates]}))
        return rows

    return make


def _image_to_caption_train(ctx: _Context) -> list[Row]:
    rng = ctx.rng("train")
    rows = []
    for i in range(ctx.size.train_rows):
        scene = _caption_scene(rng)
        path = ctx.save(render(scene.realise(rng)), "train", f"{i:05d}")
        near_miss = _near_misses(rng, scene, 1, allow_held_out=False)[0]
        row = {"qry": IMAGE_TO_TEXT, "qry_image_path": path, "pos_text": scene.caption(rng), "pos_image_path": "",
               "neg_text": near_miss.caption(rng), "neg_image_path": ""}
        rows.append((row, {"target": asdict(scene), "negative": asdict(near_miss)}))
    return rows


def _image_to_caption_eval(ctx: _Context) -> list[Row]:
    rng = ctx.rng("eval")
    scenes = [_caption_scene(rng) for _ in range(ctx.size.eval_rows)]
    rows = []
    for i, scene in enumerate(scenes):
        path = ctx.save(render(scene.realise(rng)), "eval", f"{i:05d}")
        near = _near_misses(rng, scene, ctx.size.near_misses + 2, allow_held_out=False)
        candidates = _fill_from_pool(rng, [scene] + near, scenes, ctx.size.caption_candidates,
                                     excluded=lambda entry, scene=scene: entry == scene)
        texts = [candidate.caption(rng) for candidate in candidates]
        row = {"qry_text": IMAGE_TO_TEXT, "qry_img_path": path, "tgt_text": texts, "tgt_img_path": [""] * len(texts)}
        rows.append((row, {"candidates": [asdict(c) for c in candidates], "scene_target": asdict(scene)}))
    return rows


# --------------------------------------------------------------------------- composed retrieval

_EDIT_ATTRIBUTES = ("color", "shape", "size", "background")
_EDIT_PHRASES = {
    "color": ("make it {v}", "the same shape but {v}", "change the color to {v}"),
    "shape": ("turn it into a {v}", "a {v} instead, same color", "change the shape to a {v}"),
    "size": ("make it {v}", "the same but {v}"),
    "background": ("put it on a {v} background", "change the background to {v}"),
}
_EDIT_VALUES = {"color": COLOR_NAMES, "shape": SHAPES, "size": SIZE_NAMES, "background": BACKGROUNDS}


def _edited(scene: CaptionScene, attribute: str, value: str) -> CaptionScene:
    """A one-object scene with one attribute changed (position cell unchanged)."""
    obj = scene.objects[0]
    if attribute == "background":
        return CaptionScene(value, scene.objects, scene.layout)
    fields = {"shape": obj.shape, "color": obj.color, "size": obj.size, attribute: value}
    return CaptionScene(scene.background, (Obj(**fields),), scene.layout)


def _current(scene: CaptionScene, attribute: str) -> str:
    return scene.background if attribute == "background" else getattr(scene.objects[0], attribute)


def _valid_edits(scene: CaptionScene, attribute: str) -> list[str]:
    return [value for value in _EDIT_VALUES[attribute]
            if value != _current(scene, attribute) and _in_distribution(_edited(scene, attribute, value))]


def _edit_phrase(rng: np.random.Generator, attribute: str, value: str) -> str:
    return str(rng.choice(_EDIT_PHRASES[attribute])).format(v=value)


def _reference_scene(rng: np.random.Generator) -> CaptionScene:
    return CaptionScene(str(rng.choice(BACKGROUNDS)), (_random_obj(rng),), str(rng.choice(CELLS)))


def _composed_train(ctx: _Context) -> list[Row]:
    rng = ctx.rng("train")
    rows = []
    for i in range(ctx.size.train_rows):
        reference = _reference_scene(rng)
        attribute = str(rng.choice(_EDIT_ATTRIBUTES))
        values = _valid_edits(reference, attribute)
        value = values[int(rng.integers(0, len(values)))]
        target = _edited(reference, attribute, value)
        # Hard negative: the same kind of edit with another value (or the unedited image).
        siblings = [v for v in values if v != value]
        negative = _edited(reference, attribute, siblings[int(rng.integers(0, len(siblings)))]) if siblings else reference
        row = {"qry": EDIT.format(change=_edit_phrase(rng, attribute, value)),
               "qry_image_path": ctx.save(render(reference.realise(rng)), "train", f"{i:05d}_ref"),
               "pos_text": IMAGE_TARGET,
               "pos_image_path": ctx.save(render(target.realise(rng)), "train", f"{i:05d}_target"),
               "neg_text": IMAGE_TARGET,
               "neg_image_path": ctx.save(render(negative.realise(rng)), "train", f"{i:05d}_neg")}
        rows.append((row, {"reference": asdict(reference), "edits": [[attribute, value]],
                           "target": asdict(target), "negative": asdict(negative)}))
    return rows


def _composed_eval(edit_count: int) -> Callable[[_Context], list[Row]]:
    """Composed retrieval rows with ``edit_count`` edits (1: CIRR-like; 2: held-out composition).

    Candidates: the target, the unedited reference, each single edit alone (two-edit rows), the
    same edits with other values, and other rows' targets whose scene differs from this target.
    """

    def make(ctx: _Context) -> list[Row]:
        rng = ctx.rng("eval")
        plans = []
        while len(plans) < ctx.size.eval_rows:
            reference = _reference_scene(rng)
            attributes = [str(a) for a in rng.choice(_EDIT_ATTRIBUTES, size=edit_count, replace=False)]
            target, edits = reference, []
            for attribute in attributes:
                values = _valid_edits(target, attribute)
                if not values:
                    break
                value = values[int(rng.integers(0, len(values)))]
                edits.append((attribute, value))
                target = _edited(target, attribute, value)
            if len(edits) == edit_count:
                plans.append((reference, edits, target))
        saved_targets = [(target, ctx.save(render(target.realise(rng)), "eval", f"{i:05d}_target"))
                         for i, (_, _, target) in enumerate(plans)]
        rows = []
        for i, (reference, edits, target) in enumerate(plans):
            distractors = [reference]
            if edit_count > 1:
                distractors += [_edited(reference, a, v) for a, v in edits]
            for attribute, _ in edits:
                siblings = _valid_edits(target, attribute)
                distractors += [_edited(target, attribute, siblings[k]) for k in rng.permutation(len(siblings))[:2]]
            distractors = [d for d in dict.fromkeys(distractors) if d != target]
            near = [(scene, ctx.save(render(scene.realise(rng)), "eval", f"{i:05d}_near{k}"))
                    for k, scene in enumerate(distractors)]
            candidates = _fill_from_pool(rng, [saved_targets[i]] + near, saved_targets, ctx.size.edit_candidates,
                                         excluded=lambda entry, target=target: entry[0] == target)
            change = " and ".join(_edit_phrase(rng, a, v) for a, v in edits)
            row = {"qry_text": EDIT.format(change=change),
                   "qry_img_path": near[0][1],  # the reference image, also a candidate
                   "tgt_text": [IMAGE_TARGET] * len(candidates), "tgt_img_path": [path for _, path in candidates]}
            rows.append((row, {"reference": asdict(reference), "edits": [list(e) for e in edits],
                               "candidates": [asdict(s) for s, _ in candidates]}))
        return rows

    return make


# --------------------------------------------------------------------------- grounding

@dataclass
class _Grounding:
    scene: Scene
    target: int
    query: str
    negative: int  # a distractor sharing the target's colour or shape where possible


def _labelled_grounding(rng: np.random.Generator) -> _Grounding:
    """3-5 shapes; the others share the target's colour or its shape where possible, so the
    label's two words must both be used."""
    count = int(rng.integers(3, 6))
    target = _random_obj(rng, size="large" if rng.random() < 0.3 else "small")
    objs = [target]
    while len(objs) < count:
        roll = rng.random()
        if roll < 0.4:
            candidate = _random_obj(rng, size="small", color=target.color)
        elif roll < 0.8:
            candidate = _random_obj(rng, size="small", shape=target.shape)
        else:
            candidate = _random_obj(rng, size="small")
        if all((o.color, o.shape) != (candidate.color, candidate.shape) for o in objs):
            objs.append(candidate)
    order = [int(i) for i in rng.permutation(count)]
    placed = place_scattered(rng, [objs[i] for i in order])
    target_index = order.index(0)
    negative_index = order.index(1)
    scene = Scene(random_background(rng), placed)
    return _Grounding(scene, target_index, GROUND_LABEL.format(label=f"{target.color} {target.shape}"), negative_index)


_EXTREMES = {
    "the leftmost shape": lambda p: p.x, "the rightmost shape": lambda p: -p.x,
    "the topmost shape": lambda p: p.y, "the bottommost shape": lambda p: -p.y,
}


def _spatial_grounding(rng: np.random.Generator) -> _Grounding:
    """Referring by position ("the leftmost shape"), never seen in training; the extreme shape
    leads the next one by at least 6 pixels."""
    expression = str(rng.choice(list(_EXTREMES)))
    key = _EXTREMES[expression]

    def clear_winner(placed: tuple[Placed, ...]) -> bool:
        ranked = sorted(key(p) for p in placed)
        return ranked[1] - ranked[0] >= 6

    objs = _distinct_objs(rng, int(rng.integers(3, 5)), sizes=["small"] * 4)
    placed = place_scattered(rng, objs, accept=clear_winner)
    target = min(range(len(placed)), key=lambda k: key(placed[k]))
    scene = Scene(random_background(rng), placed)
    return _Grounding(scene, target, GROUND_EXPRESSION.format(expression=expression), (target + 1) % len(placed))


def _grounding_train(ctx: _Context) -> list[Row]:
    rng = ctx.rng("train")
    rows = []
    for i in range(ctx.size.train_rows):
        example = _labelled_grounding(rng)
        image = render(example.scene)
        row = {"qry": example.query, "qry_image_path": ctx.save(image, "train", f"{i:05d}"),
               "pos_text": CROP_TARGET,
               "pos_image_path": ctx.save(crop(image, example.scene.objects[example.target]), "train", f"{i:05d}_target"),
               "neg_text": CROP_TARGET,
               "neg_image_path": ctx.save(crop(image, example.scene.objects[example.negative]), "train", f"{i:05d}_neg")}
        rows.append((row, {"target": example.target, "negative": example.negative, "scene": describe(example.scene)}))
    return rows


def _grounding_eval(sample: Callable[[np.random.Generator], _Grounding]) -> Callable[[_Context], list[Row]]:
    """Candidates: crops of every shape in the scene (target first), then crops of other rows'
    targets."""

    def make(ctx: _Context) -> list[Row]:
        rng = ctx.rng("eval")
        examples, crops = [], []
        for i in range(ctx.size.eval_rows):
            example = sample(rng)
            image = render(example.scene)
            order = [example.target] + [k for k in range(len(example.scene.objects)) if k != example.target]
            paths = [ctx.save(crop(image, example.scene.objects[k]), "eval", f"{i:05d}_obj{k}") for k in order]
            examples.append((example, ctx.save(image, "eval", f"{i:05d}")))
            crops.append(paths)
        rows = []
        for i, (example, image_path) in enumerate(examples):
            other_targets = [paths[0] for j, paths in enumerate(crops) if j != i]
            candidates = _fill_from_pool(rng, crops[i], other_targets,
                                         len(crops[i]) + ctx.size.grounding_other_crops, excluded=lambda _: False)
            row = {"qry_text": example.query, "qry_img_path": image_path,
                   "tgt_text": [CROP_TARGET] * len(candidates), "tgt_img_path": candidates}
            rows.append((row, {"target": example.target, "scene": describe(example.scene)}))
        return rows

    return make


# --------------------------------------------------------------------------- the task table

@dataclass(frozen=True)
class MiniTask:
    name: str
    meta_task: str
    split: str
    description: str
    make_eval: Callable[[_Context], list[Row]]
    make_train: Optional[Callable[[_Context], list[Row]]] = None  # IND subsets only


MINI_TASKS: tuple[MiniTask, ...] = (
    MiniTask("ShapeClass", CLASSIFICATION, IND, "one shape; name its shape (6 classes)",
             _labelled_eval(_shape_class), _labelled_train(_shape_class)),
    MiniTask("TextureClass", CLASSIFICATION, IND, "1-3 shapes; name the background pattern (5 classes)",
             _labelled_eval(_texture_class), _labelled_train(_texture_class)),
    MiniTask("ShapeOutlineClass", CLASSIFICATION, OOD, "ShapeClass with shapes drawn as outlines, a style never trained on",
             _labelled_eval(lambda rng: _shape_class(rng, outline=True))),
    MiniTask("ColorClass", CLASSIFICATION, OOD, "one shape; name its colour (held-out task type)",
             _labelled_eval(_color_class)),
    MiniTask("CountVQA", VQA, IND, "count all shapes, shapes of a colour, or shapes of a kind (1-6)",
             _labelled_eval(_count_vqa), _labelled_train(_count_vqa)),
    MiniTask("ColorVQA", VQA, IND, "2-4 shapes; the colour of the named shape (binding)",
             _labelled_eval(_color_vqa), _labelled_train(_color_vqa)),
    MiniTask("RelationVQA", VQA, IND, "three shapes in a row or column; the shape next to the named one",
             _labelled_eval(_relation_vqa), _labelled_train(_relation_vqa)),
    MiniTask("SizeVQA", VQA, OOD, "the colour or shape of the one large shape (held-out question type)",
             _labelled_eval(_size_vqa)),
    MiniTask("CaptionT2I", RETRIEVAL, IND, "caption to image, with near-miss images (one detail changed)",
             _caption_to_image_eval(held_out=False), _caption_to_image_train),
    MiniTask("CaptionI2T", RETRIEVAL, IND, "image to caption, with near-miss captions; hard negatives in train",
             _image_to_caption_eval, _image_to_caption_train),
    MiniTask("ComposedEdit", RETRIEVAL, IND, "image + one edit to image (CIRR-like); hard negatives in train",
             _composed_eval(edit_count=1), _composed_train),
    MiniTask("HeldOutComboT2I", RETRIEVAL, OOD, "caption to image for colour-shape pairs never drawn in training",
             _caption_to_image_eval(held_out=True)),
    MiniTask("DoubleEdit", RETRIEVAL, OOD, "image + two edits at once to image (held-out composition)",
             _composed_eval(edit_count=2)),
    MiniTask("RefShapeGround", GROUNDING, IND, "3-5 shapes; the crop of the labelled one (distractors share colour or shape); hard negatives in train",
             _grounding_eval(_labelled_grounding), _grounding_train),
    MiniTask("SpatialGround", GROUNDING, OOD, "the crop of the leftmost/rightmost/topmost/bottommost shape (held-out expression type)",
             _grounding_eval(_spatial_grounding)),
)
_TASKS_BY_NAME = {task.name: task for task in MINI_TASKS}


def mini_benchmark_tasks() -> dict[str, dict[str, str]]:
    """``{subset: {"meta_task": ..., "split": "IND" | "OOD"}}`` for every subset of the benchmark.

    Meta-task names are the MMEB report's: Classification, VQA, Retrieval, Grounding."""
    return {task.name: {"meta_task": task.meta_task, "split": task.split} for task in MINI_TASKS}


def mini_benchmark_corpus() -> tuple[str, ...]:
    """Every instruction and word the benchmark's texts use, one phrase per entry: the extra
    corpus for a tokenizer trained locally (presets), so that no benchmark word falls back to
    bytes."""
    instructions = (CLASSIFY, CLASSIFY_TEXTURE, CLASSIFY_COLOR, ASK, TEXT_TO_IMAGE, IMAGE_TO_TEXT, EDIT,
                    GROUND_LABEL, GROUND_EXPRESSION, IMAGE_TARGET, CROP_TARGET)
    phrases = [text.replace(_IMAGE, "").split("{")[0].strip() for text in instructions]
    phrases += [" ".join(phrase.format(v="").split()) for options in _EDIT_PHRASES.values() for phrase in options]
    phrases += ["How many shapes are in the image?", "What color is the", "What shape is",
                "Which shape is the large one?", "to the left of", "to the right of", "above", "below", "and"]
    phrases += [f"{where} on a background" for where in CELL_PHRASES.values()]
    phrases += [f"immediately {word}" for words in _NEIGHBOUR_WORDS.values() for word in words]
    phrases += list(_EXTREMES) + [f"the {size} {color} {plural(shape)}" for size in SIZE_NAMES
                                  for color in COLOR_NAMES for shape in SHAPES]
    phrases += [" ".join(words) for words in (SHAPES, COLOR_NAMES, SIZE_NAMES, BACKGROUNDS, COUNT_WORDS, CELLS)]
    return tuple(dict.fromkeys(phrases))


# --------------------------------------------------------------------------- writing

def _write_parquet(rows: list[dict], columns: Sequence[str], list_columns: Sequence[str], path: Path) -> None:
    arrays = {}
    for column in columns:
        kind = pa.list_(pa.string()) if column in list_columns else pa.string()
        arrays[column] = pa.array([row[column] for row in rows], type=kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(arrays), path)


def _write_jsonl(records: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, sort_keys=True) + "\n")


TRAIN_COLUMNS = ("qry", "qry_image_path", "pos_text", "pos_image_path")
NEGATIVE_COLUMNS = ("neg_text", "neg_image_path")
EVAL_COLUMNS = ("qry_text", "qry_img_path", "tgt_text", "tgt_img_path")


def _build_subset(name: str, out_dir: str, seed: int, size_name: str) -> dict[str, int]:
    """Generate and write one subset (run in a worker process); returns its row counts."""
    task = _TASKS_BY_NAME[name]
    out = Path(out_dir)
    ctx = _Context(name, seed, BENCHMARK_SIZES[size_name], out / "images")
    counts = {}
    if task.make_train is not None:
        rows = task.make_train(ctx)
        columns = TRAIN_COLUMNS + (NEGATIVE_COLUMNS if "neg_text" in rows[0][0] else ())
        _write_parquet([row for row, _ in rows], columns, (), out / "train" / f"{name}.parquet")
        _write_jsonl([meta for _, meta in rows], out / "metadata" / f"{name}.train.jsonl")
        counts["train_rows"] = len(rows)
    rows = task.make_eval(ctx)
    _write_parquet([row for row, _ in rows], EVAL_COLUMNS, ("tgt_text", "tgt_img_path"), out / "eval" / f"{name}.parquet")
    _write_jsonl([meta for _, meta in rows], out / "metadata" / f"{name}.eval.jsonl")
    counts["eval_rows"] = len(rows)
    counts["candidates_min"] = min(len(row["tgt_text"]) for row, _ in rows)
    counts["candidates_max"] = max(len(row["tgt_text"]) for row, _ in rows)
    return counts


_OUTPUTS = ("train", "eval", "images", "metadata", "tasks.json", "README.md")


def _readme(seed: int, size_name: str, tasks: dict[str, dict]) -> str:
    lines = [
        "# paravec mini benchmark",
        "",
        f"Generated by `paravec data mini` (seed {seed}, size {size_name}). Formats are MMEB's:",
        "`train/<Subset>.parquet` (MMEB-train columns, IND subsets only), `eval/<Subset>.parquet`",
        "(MMEB-eval columns, correct candidate at index 0), images under `images/` (parquet paths are",
        "relative to it), generation details per row in `metadata/`.",
        "",
        "Held-out colour-shape pairs (never in training images): "
        + ", ".join(f"{c} {s}" for c, s in sorted(HELD_OUT_COMBOS)) + ".",
        "",
        "| Subset | Meta-task | Split | Train rows | Eval rows | Candidates | Description |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, info in tasks.items():
        candidates = f"{info['candidates_min']}-{info['candidates_max']}"
        lines.append(f"| {name} | {info['meta_task']} | {info['split']} | {info.get('train_rows', 0)} | "
                     f"{info['eval_rows']} | {candidates} | {info['description']} |")
    return "\n".join(lines) + "\n"


def generate_mini_benchmark(out_dir: os.PathLike | str, *, seed: int = 0, size: str = "default",
                            workers: int = 1, overwrite: bool = False) -> dict[str, dict]:
    """Write the benchmark to ``out_dir`` (see the module docstring) and return the task table
    written to ``tasks.json``. ``out_dir`` must be empty or missing unless ``overwrite``, which
    replaces only what this function writes. ``workers > 1`` builds subsets in parallel processes
    (the output does not depend on it)."""
    if size not in BENCHMARK_SIZES:
        raise ValueError(f"unknown benchmark size {size!r}; expected one of {sorted(BENCHMARK_SIZES)}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; choose another directory or overwrite it")
        for name in _OUTPUTS:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    names = [task.name for task in MINI_TASKS]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            counts = list(pool.map(_build_subset, names, [str(out)] * len(names),
                                   [seed] * len(names), [size] * len(names)))
    else:
        counts = [_build_subset(name, str(out), seed, size) for name in names]
    tasks = {}
    for task, count in zip(MINI_TASKS, counts):
        tasks[task.name] = {"meta_task": task.meta_task, "split": task.split,
                            "description": task.description, **count}
    (out / "tasks.json").write_text(json.dumps(tasks, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out / "README.md").write_text(_readme(seed, size, tasks), encoding="utf-8")
    return tasks
