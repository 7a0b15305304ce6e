"""truncate: the first dim coordinates, re-normalised exactly as the model code normalises."""

import numpy as np
import pytest
import torch

from paravec.vectors import truncate


def test_truncation_equals_torch_normalize_of_the_leading_dimensions():
    x = np.random.default_rng(0).standard_normal((5, 32)).astype(np.float32)
    got = truncate(x, 8)
    expected = torch.nn.functional.normalize(torch.from_numpy(x[:, :8]), dim=-1).numpy()
    assert got.dtype == np.float32 and got.shape == (5, 8)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-6)


def test_one_vector_float16_and_full_dimension():
    x = np.random.default_rng(1).standard_normal(16)
    np.testing.assert_allclose(truncate(x, 4), x[:4] / np.linalg.norm(x[:4]))
    half = truncate(x.astype(np.float16), 4)
    assert half.dtype == np.float16
    np.testing.assert_allclose(half.astype(np.float64), x[:4] / np.linalg.norm(x[:4]), atol=2e-3)
    np.testing.assert_allclose(truncate(x, 16), x / np.linalg.norm(x))


def test_a_zero_head_stays_zero():
    x = np.zeros((2, 6), dtype=np.float32)
    x[1, 0] = 3.0
    np.testing.assert_array_equal(truncate(x, 2), [[0, 0], [1, 0]])


@pytest.mark.parametrize("dim", [0, -1, 17])
def test_dimensions_out_of_range_are_refused_with_the_range(dim):
    with pytest.raises(ValueError, match=rf"dim {dim} is out of range: .* 16 dimensions, so dim must be 1\.\.16"):
        truncate(np.ones((2, 16), dtype=np.float32), dim)


@pytest.mark.parametrize("dim", [2.0, True, "4"])
def test_non_integer_dimensions_are_refused(dim):
    with pytest.raises(ValueError, match="dim must be an integer"):
        truncate(np.ones((2, 16), dtype=np.float32), dim)


def test_quantised_codes_cannot_be_truncated():
    with pytest.raises(ValueError, match="float embeddings, got int8"):
        truncate(np.ones((2, 16), dtype=np.int8), 4)
