"""Scenes of coloured shapes for the built-in mini benchmark: vocabulary, layout, drawing, captions.

A scene is plain data (:class:`Scene`): every random choice (positions, colour jitter, texture
phase and noise seed) is drawn by the caller from a seeded generator and stored in the scene, so
:func:`render` is a pure function and the same seed always gives the same pixels.

Scenes are drawn at four times their size and reduced by box averaging, so edges are
anti-aliased the same way on every platform without depending on a font or a resampling filter.
Backgrounds are grey (zero saturation), shapes saturated: colour is always visible, and the
tests can find shapes by saturation alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64
CROP_SIZE = 48
_SUPERSAMPLE = 4

SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "orange": (240, 135, 20),
    "yellow": (230, 205, 25),
    "green": (35, 160, 60),
    "blue": (40, 85, 220),
    "purple": (145, 55, 195),
}
COLOR_NAMES = tuple(COLORS)
SIZES: dict[str, float] = {"small": 7.0, "large": 11.5}  # radius in pixels of a 64-pixel image
SIZE_NAMES = tuple(SIZES)
BACKGROUNDS = ("plain", "striped", "dotted", "checkered", "noisy")
COUNT_WORDS = ("zero", "one", "two", "three", "four", "five", "six")

# Colour-shape combinations that never appear in any training image: one per colour and one per
# shape, so every colour and every shape is still seen in training, only not together.
HELD_OUT_COMBOS = frozenset({
    ("red", "star"), ("orange", "circle"), ("yellow", "cross"),
    ("green", "triangle"), ("blue", "diamond"), ("purple", "square"),
})

CELLS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
CELL_PHRASES = {
    "top left": "in the top left", "top": "at the top", "top right": "in the top right",
    "left": "on the left", "center": "in the center", "right": "on the right",
    "bottom left": "in the bottom left", "bottom": "at the bottom", "bottom right": "in the bottom right",
}
_CELL_CENTERS = (13.0, 32.0, 51.0)
_COLOR_JITTER = 10
_GAP = 3.0  # minimum free pixels between two shapes


def plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("s") else "s")


@dataclass(frozen=True)
class Obj:
    """What a shape is, independent of where it is drawn."""

    shape: str
    color: str
    size: str

    @property
    def phrase(self) -> str:
        return f"{self.size} {self.color} {self.shape}"

    @property
    def held_out(self) -> bool:
        return (self.color, self.shape) in HELD_OUT_COMBOS

    @property
    def radius(self) -> float:
        return SIZES[self.size]


@dataclass(frozen=True)
class Placed:
    """A shape with its centre (pixels of the 64-pixel image) and its jittered colour."""

    obj: Obj
    x: float
    y: float
    rgb: tuple[int, int, int]

    def crop_box(self) -> tuple[int, int, int, int]:
        """A box around the shape with a small margin, clipped to the image."""
        half = self.obj.radius + 3
        return (max(0, math.floor(self.x - half)), max(0, math.floor(self.y - half)),
                min(IMAGE_SIZE, math.ceil(self.x + half)), min(IMAGE_SIZE, math.ceil(self.y + half)))


@dataclass(frozen=True)
class Background:
    kind: str
    level: int        # grey level of the light parts
    phase: int        # pattern offset in pixels
    vertical: bool    # stripe direction
    noise_seed: int   # for the noisy texture


@dataclass(frozen=True)
class Scene:
    background: Background
    objects: tuple[Placed, ...]
    outline: bool = False  # shapes drawn as outlines only (never in training)


def random_background(rng: np.random.Generator, kind: Optional[str] = None) -> Background:
    kind = kind if kind is not None else str(rng.choice(BACKGROUNDS))
    return Background(kind, int(rng.integers(185, 236)), int(rng.integers(0, 8)),
                      bool(rng.integers(0, 2)), int(rng.integers(0, 2**31)))


def jittered_rgb(rng: np.random.Generator, color: str) -> tuple[int, int, int]:
    jitter = rng.integers(-_COLOR_JITTER, _COLOR_JITTER + 1, size=3).tolist()
    return tuple(min(255, max(0, base + delta)) for base, delta in zip(COLORS[color], jitter))


def _apart(centres: Sequence[tuple[float, float, float]], x: float, y: float, radius: float) -> bool:
    return all(math.hypot(cx - x, cy - y) >= cr + radius + _GAP for cx, cy, cr in centres)


def _coloured(rng: np.random.Generator, objs: Sequence[Obj], centres: Sequence[tuple[float, float]]) -> tuple[Placed, ...]:
    return tuple(Placed(obj, round(float(x), 2), round(float(y), 2), jittered_rgb(rng, obj.color))
                 for obj, (x, y) in zip(objs, centres))


def place_at_cell(rng: np.random.Generator, obj: Obj, cell: str) -> Placed:
    """Put ``obj`` near the centre of one cell of a 3x3 grid (jitter small enough to stay in it)."""
    row, column = divmod(CELLS.index(cell), 3)
    low, high = obj.radius + 1, IMAGE_SIZE - obj.radius - 1
    x = float(np.clip(_CELL_CENTERS[column] + rng.uniform(-2, 2), low, high))
    y = float(np.clip(_CELL_CENTERS[row] + rng.uniform(-2, 2), low, high))
    return _coloured(rng, [obj], [(x, y)])[0]


def place_scattered(
    rng: np.random.Generator,
    objs: Sequence[Obj],
    accept: Optional[Callable[[tuple[Placed, ...]], bool]] = None,
    tries: int = 2000,
) -> tuple[Placed, ...]:
    """Non-overlapping random positions for ``objs`` (in order), optionally meeting ``accept``."""
    for _ in range(tries):
        centres: list[tuple[float, float, float]] = []
        for obj in objs:
            low, high = obj.radius + 1, IMAGE_SIZE - obj.radius - 1
            for _ in range(100):
                x, y = rng.uniform(low, high, size=2).tolist()
                if _apart(centres, x, y, obj.radius):
                    centres.append((x, y, obj.radius))
                    break
            else:
                break
        if len(centres) < len(objs):
            continue
        placed = _coloured(rng, objs, [(x, y) for x, y, _ in centres])
        if accept is None or accept(placed):
            return placed
    raise RuntimeError(f"could not place {len(objs)} shapes in {tries} tries")


def place_in_line(rng: np.random.Generator, objs: Sequence[Obj], axis: str) -> tuple[Placed, ...]:
    """``objs`` in order from left to right (``axis="horizontal"``) or top to bottom, within 10
    pixels of each other on the other axis, with at least 4 clear pixels between neighbours so
    the order is unambiguous. The spare room is spread at random over the gaps."""
    if axis not in ("horizontal", "vertical"):
        raise ValueError(f"axis must be horizontal or vertical, got {axis!r}")
    radii = [obj.radius for obj in objs]
    steps = [radii[i] + radii[i + 1] + 4 for i in range(len(objs) - 1)]
    start, end = radii[0] + 1, IMAGE_SIZE - radii[-1] - 1
    slack = end - start - sum(steps)
    if slack < 0:
        raise ValueError(f"{len(objs)} shapes of radii {radii} do not fit in a line")
    extra = np.sort(rng.uniform(0, slack, size=len(objs))).tolist()
    along = [start + sum(steps[:i]) + extra[i] for i in range(len(objs))]
    widest = max(radii)
    base = float(rng.uniform(widest + 1, IMAGE_SIZE - widest - 1))
    across = [min(IMAGE_SIZE - r - 1, max(r + 1, base + float(rng.uniform(-5, 5)))) for r in radii]
    centres = list(zip(along, across)) if axis == "horizontal" else list(zip(across, along))
    return _coloured(rng, objs, centres)


def _background_pixels(background: Background) -> np.ndarray:
    """The grey background as a uint8 array of shape [IMAGE_SIZE, IMAGE_SIZE]."""
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]
    level = background.level
    pixels = np.full((IMAGE_SIZE, IMAGE_SIZE), level, dtype=np.int32)
    phase = background.phase
    if background.kind == "striped":
        along = xx if background.vertical else yy
        pixels[((along + phase) // 4) % 2 == 1] = level - 45
    elif background.kind == "dotted":
        dots = (((xx + phase) % 8) // 2 == 1) & (((yy + phase) % 8) // 2 == 1)
        pixels[dots] = level - 70
    elif background.kind == "checkered":
        pixels[(((xx + phase) // 8) + ((yy + phase) // 8)) % 2 == 1] = level - 40
    elif background.kind == "noisy":
        noise = np.random.default_rng(background.noise_seed).normal(0.0, 22.0, size=pixels.shape)
        pixels = pixels + np.round(noise).astype(np.int32)
    elif background.kind != "plain":
        raise ValueError(f"unknown background {background.kind!r}")
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _outline_points(shape: str, x: float, y: float, r: float) -> list[tuple[float, float]]:
    """Polygon vertices of ``shape`` centred at (x, y) with half-extent ``r``."""

    def ring(count: int, radii: Sequence[float], start: float = -90.0) -> list[tuple[float, float]]:
        points = []
        for k in range(count):
            angle = math.radians(start + 360.0 * k / count)
            radius = radii[k % len(radii)]
            points.append((x + radius * math.cos(angle), y + radius * math.sin(angle)))
        return points

    if shape == "square":
        h = 0.82 * r
        return [(x - h, y - h), (x + h, y - h), (x + h, y + h), (x - h, y + h)]
    if shape == "triangle":
        return [(px, py + 0.25 * r) for px, py in ring(3, [r])]
    if shape == "star":
        return ring(10, [r, 0.45 * r])
    if shape == "diamond":
        return [(x, y - r), (x + 0.75 * r, y), (x, y + r), (x - 0.75 * r, y)]
    if shape == "cross":
        w = 0.34 * r
        return [(x - w, y - r), (x + w, y - r), (x + w, y - w), (x + r, y - w), (x + r, y + w),
                (x + w, y + w), (x + w, y + r), (x - w, y + r), (x - w, y + w), (x - r, y + w),
                (x - r, y - w), (x - w, y - w)]
    raise ValueError(f"unknown shape {shape!r}")


def render(scene: Scene) -> Image.Image:
    """Draw ``scene`` as a 64x64 RGB image."""
    grey = Image.fromarray(_background_pixels(scene.background), mode="L").convert("RGB")
    big = grey.resize((IMAGE_SIZE * _SUPERSAMPLE,) * 2, Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(big)
    s = _SUPERSAMPLE
    for placed in scene.objects:
        x, y, r = placed.x * s, placed.y * s, placed.obj.radius * s
        fill = None if scene.outline else placed.rgb
        outline = placed.rgb if scene.outline else None
        width = 2 * s if scene.outline else 0
        if placed.obj.shape == "circle":
            draw.ellipse([x - r, y - r, x + r, y + r], fill=fill, outline=outline, width=width)
        else:
            draw.polygon(_outline_points(placed.obj.shape, x, y, r), fill=fill, outline=outline, width=width)
    return big.reduce(_SUPERSAMPLE)


def crop(image: Image.Image, placed: Placed) -> Image.Image:
    """The region around one shape, resized to CROP_SIZE x CROP_SIZE (MMEB grounding targets)."""
    return image.crop(placed.crop_box()).resize((CROP_SIZE, CROP_SIZE), Image.Resampling.BILINEAR)


@dataclass(frozen=True)
class CaptionScene:
    """What a caption says about a scene; two scenes with equal ``CaptionScene`` match the same
    captions. One object: ``layout`` is its grid cell. Two: ``"horizontal"`` (objects[0] on the
    left) or ``"vertical"`` (objects[0] on top)."""

    background: str
    objects: tuple[Obj, ...]
    layout: str

    def realise(self, rng: np.random.Generator) -> Scene:
        background = random_background(rng, self.background)
        if len(self.objects) == 1:
            return Scene(background, (place_at_cell(rng, self.objects[0], self.layout),))
        return Scene(background, place_in_line(rng, self.objects, self.layout))

    def caption(self, rng: np.random.Generator) -> str:
        """An English caption; two-object scenes are described from either side at random."""
        ground = f"on a {self.background} background"
        if len(self.objects) == 1:
            return f"a {self.objects[0].phrase} {CELL_PHRASES[self.layout]} {ground}"
        first, second = self.objects
        forward, backward = ("to the left of", "to the right of") if self.layout == "horizontal" else ("above", "below")
        if rng.integers(0, 2):
            return f"a {first.phrase} {forward} a {second.phrase} {ground}"
        return f"a {second.phrase} {backward} a {first.phrase} {ground}"

    def has_held_out(self) -> bool:
        return any(obj.held_out for obj in self.objects)

    def variants(self) -> list["CaptionScene"]:
        """Every scene differing in one detail: a colour, shape, size, background or position,
        or (two objects) swapped colours, swapped shapes or swapped places. These are the near
        misses that make retrieval hard."""
        out: list[CaptionScene] = []

        def with_object(index: int, obj: Obj) -> CaptionScene:
            objs = list(self.objects)
            objs[index] = obj
            return CaptionScene(self.background, tuple(objs), self.layout)

        for index, obj in enumerate(self.objects):
            out += [with_object(index, Obj(obj.shape, c, obj.size)) for c in COLOR_NAMES if c != obj.color]
            out += [with_object(index, Obj(s, obj.color, obj.size)) for s in SHAPES if s != obj.shape]
            out += [with_object(index, Obj(obj.shape, obj.color, z)) for z in SIZE_NAMES if z != obj.size]
        out += [CaptionScene(b, self.objects, self.layout) for b in BACKGROUNDS if b != self.background]
        if len(self.objects) == 1:
            out += [CaptionScene(self.background, self.objects, c) for c in CELLS if c != self.layout]
        else:
            a, b = self.objects
            out.append(CaptionScene(self.background, (b, a), self.layout))
            out.append(CaptionScene(self.background, (Obj(a.shape, b.color, a.size), Obj(b.shape, a.color, b.size)), self.layout))
            out.append(CaptionScene(self.background, (Obj(b.shape, a.color, a.size), Obj(a.shape, b.color, b.size)), self.layout))
        return [variant for variant in dict.fromkeys(out) if variant != self]


def describe(scene: Scene) -> dict:
    """JSON-ready description of a scene (the generation metadata written next to the data)."""
    return {
        "background": scene.background.kind,
        "outline": scene.outline,
        "objects": [
            {"shape": p.obj.shape, "color": p.obj.color, "size": p.obj.size, "x": p.x, "y": p.y,
             "box": list(p.crop_box())}
            for p in scene.objects
        ],
    }
