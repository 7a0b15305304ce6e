"""Load one dataset image as RGB, failing with an error that names the bad sample.

Training, evaluation and encoding all read images through :func:`load_image`, so a missing file,
an undecodable file and an oversized file are reported the same way everywhere.

Path policy. Dataset files (MMEB-train, MMEB-eval, the mini benchmark) store image paths relative
to an image root, and every image must stay inside that root, symlinks resolved: ``../x.png``, an
absolute path elsewhere, or a link inside the root that points out of it are refused, since a
path that leaves the root almost always means the root is wrong, and a data file must not make
a tool read whatever file it names. ``allow_outside_root`` (``data.images_outside_root``,
``paravec encode --allow-images-outside-root``) lifts the rule for datasets that legitimately point
elsewhere on disk. Without an image root, absolute paths are taken as they are.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from PIL import Image

from paravec.core.errors import BadSampleError

PathLike = Union[str, os.PathLike]

# 8192 x 8192 is far above any MMEB image and every VLM processor downsizes to a few megapixels;
# the cap stops one corrupt or hostile header from allocating gigabytes inside a loader worker.
DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192


def resolve_image_path(root: Optional[PathLike], image_path: str, *, allow_outside_root: bool = False) -> Path:
    """Where ``image_path`` points (relative paths under ``root``), checked against the policy above."""
    if not image_path:
        raise BadSampleError("empty image path")
    path = Path(image_path)
    if not path.is_absolute():
        if root is None:
            raise BadSampleError("relative image path but no image root given", image_path=image_path)
        normalised = os.path.normpath(image_path)
        if normalised == ".." or normalised.startswith(".." + os.sep):
            raise BadSampleError("relative image path leaves the image root", image_path=image_path)
        path = Path(root) / normalised
    if root is not None and not allow_outside_root:
        real_root, real_path = os.path.realpath(root), os.path.realpath(path)
        if os.path.commonpath([real_root, real_path]) != real_root:
            raise BadSampleError(
                f"image path resolves to {real_path}, outside the image root {real_root} (a symlink or an absolute "
                "path; allow it with data.images_outside_root: true or --allow-images-outside-root)",
                image_path=image_path,
            )
    return path


def load_image(
    root: Optional[PathLike],
    image_path: str,
    *,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    allow_outside_root: bool = False,
) -> Image.Image:
    """Open ``image_path`` (relative to ``root`` unless absolute) and return it decoded as RGB.

    Raises :class:`BadSampleError` when the file is missing, cannot be decoded, or has more than
    ``max_pixels`` pixels (checked from the header, before decoding). Pillow's own
    decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) still applies on top of ``max_pixels``.
    """
    full_path = resolve_image_path(root, image_path, allow_outside_root=allow_outside_root)
    if not full_path.is_file():
        raise BadSampleError(f"image file not found: {full_path}", image_path=image_path)
    oversized: Optional[tuple[int, int]] = None
    try:
        with Image.open(full_path) as image:
            width, height = image.size
            if width * height > max_pixels:
                oversized = (width, height)
            else:
                return image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise BadSampleError(f"cannot decode image {full_path}: {error}", image_path=image_path) from error
    raise BadSampleError(
        f"image {full_path} is {oversized[0]}x{oversized[1]} pixels, above the limit of {max_pixels}",
        image_path=image_path,
    )
