import io
import pickle

import pytest
from PIL import Image

from paravec.core.errors import BadSampleError

from paravec.data.images import load_image, resolve_image_path


def _save(path, image, format="PNG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=format)
    return path


def test_relative_path_loads_rgb_pixels(tmp_path):
    _save(tmp_path / "sub" / "a.png", Image.new("RGB", (5, 3), (10, 20, 30)))
    image = load_image(tmp_path, "sub/a.png")
    assert image.mode == "RGB" and image.size == (5, 3)
    assert image.getpixel((4, 2)) == (10, 20, 30)


@pytest.mark.parametrize("mode, value, expected", [
    ("L", 100, (100, 100, 100)),
    ("RGBA", (1, 2, 3, 255), (1, 2, 3)),
    ("P", 0, None),
])
def test_other_modes_become_rgb(tmp_path, mode, value, expected):
    source = Image.new(mode, (4, 4), value)
    _save(tmp_path / "x.png", source)
    image = load_image(tmp_path, "x.png")
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (expected if expected is not None else source.convert("RGB").getpixel((0, 0)))


def test_absolute_paths_stay_inside_the_root_unless_allowed(tmp_path):
    path = _save(tmp_path / "elsewhere" / "b.png", Image.new("RGB", (2, 2), (5, 5, 5)))
    (tmp_path / "some-root").mkdir()
    with pytest.raises(BadSampleError, match="outside the image root"):
        load_image(tmp_path / "some-root", str(path))
    image = load_image(tmp_path / "some-root", str(path), allow_outside_root=True)
    assert image.getpixel((0, 0)) == (5, 5, 5)
    assert load_image(None, str(path)).size == (2, 2)  # no root: nothing to confine to
    inside = _save(tmp_path / "some-root" / "c.png", Image.new("RGB", (3, 3)))
    assert load_image(tmp_path / "some-root", str(inside)).size == (3, 3)


def test_a_symlink_out_of_the_root_is_refused(tmp_path):
    secret = _save(tmp_path / "outside" / "secret.png", Image.new("RGB", (2, 2)))
    root = tmp_path / "root"
    root.mkdir()
    (root / "innocent.png").symlink_to(secret)
    with pytest.raises(BadSampleError, match="resolves to .*secret.png, outside the image root"):
        load_image(root, "innocent.png")
    (root / "inner").mkdir()
    _save(root / "real.png", Image.new("RGB", (4, 4)))
    (root / "inner" / "link.png").symlink_to(root / "real.png")  # a link that stays inside is fine
    assert load_image(root, "inner/link.png").size == (4, 4)


def test_dotdot_inside_root_is_fine(tmp_path):
    _save(tmp_path / "b.png", Image.new("RGB", (2, 2)))
    assert load_image(tmp_path, "sub/../b.png").size == (2, 2)


@pytest.mark.parametrize("path", ["../outside.png", "sub/../../outside.png", ".."])
def test_relative_path_may_not_leave_root(tmp_path, path):
    root = tmp_path / "root"
    _save(tmp_path / "outside.png", Image.new("RGB", (2, 2)))
    with pytest.raises(BadSampleError, match="leaves the image root"):
        load_image(root, path)


def test_relative_path_needs_a_root():
    with pytest.raises(BadSampleError, match="no image root"):
        resolve_image_path(None, "a.png")


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(BadSampleError, match="not found") as caught:
        load_image(tmp_path, "nope/c.png")
    assert caught.value.image_path == "nope/c.png"
    assert str(tmp_path / "nope" / "c.png") in str(caught.value)


def test_corrupt_file(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"this is not an image at all")
    with pytest.raises(BadSampleError, match="cannot decode"):
        load_image(tmp_path, "bad.png")


def test_truncated_file(tmp_path):
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buffer, format="PNG")
    (tmp_path / "cut.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(BadSampleError, match="cannot decode"):
        load_image(tmp_path, "cut.png")


def test_oversized_image_refused_before_decoding(tmp_path):
    _save(tmp_path / "big.png", Image.new("RGB", (100, 60)))
    assert load_image(tmp_path, "big.png", max_pixels=6000).size == (100, 60)
    with pytest.raises(BadSampleError, match="100x60"):
        load_image(tmp_path, "big.png", max_pixels=5999)


def test_error_keeps_its_fields_through_pickle_and_location():
    error = BadSampleError("broken", image_path="a.png").located(file="data.parquet", row=7)
    assert (error.file, error.row, error.image_path, error.reason) == ("data.parquet", 7, "a.png", "broken")
    assert str(error) == "data.parquet, row 7, image 'a.png': broken"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.file, copy.row, copy.image_path, str(copy)) == (error.file, error.row, error.image_path, str(error))
    # A location already known is not overwritten.
    assert error.located(file="other", row=1).row == 7
