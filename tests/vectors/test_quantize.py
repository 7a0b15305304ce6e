"""Quantisation: sentence-transformers' codes bit for bit, packbits for binary, bounded round trips."""

import numpy as np
import pytest
from sentence_transformers import quantize_embeddings as reference_quantize

from paravec.vectors import PRECISIONS, Calibration, calibration_path, dequantize, quantize

from .conftest import clustered_corpus


@pytest.fixture(scope="module")
def data():
    """A calibration corpus, and queries that fall partly outside its ranges (so clipping is exercised)."""
    corpus = clustered_corpus(500, 24, seed=3)
    corpus[:, 5] = 0.25  # a constant dimension: zero-width range, step 1 in sentence-transformers
    queries = 1.3 * clustered_corpus(60, 24, seed=4)
    return corpus, queries


@pytest.mark.parametrize("precision", ["float32", "int8", "uint8", "binary", "ubinary"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_codes_equal_sentence_transformers_on_the_same_data_and_ranges(data, precision, dtype):
    corpus, queries = (array.astype(dtype) for array in data)
    calibration = Calibration.from_embeddings(corpus) if PRECISIONS[precision].calibrated else None
    ours = quantize(queries, precision, calibration)
    if calibration is None:
        theirs = reference_quantize(queries, precision)
    else:
        theirs = reference_quantize(queries, precision, calibration_embeddings=corpus)
        np.testing.assert_array_equal(ours, reference_quantize(queries, precision, ranges=calibration.ranges))
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)


def test_int8_codes_saturate_outside_the_calibration_range(data):
    corpus, queries = data
    calibration = Calibration.from_embeddings(corpus)
    varying = calibration.ranges[1] > calibration.ranges[0]  # a constant dimension has steps of 1 instead
    codes = quantize(queries, "uint8", calibration)[:, varying]
    below = queries[:, varying] < calibration.ranges[0, varying]
    above = queries[:, varying] > calibration.ranges[1, varying]
    assert below.any() and above.any()
    assert (codes[below] == 0).all() and (codes[above] == 255).all()


def test_binary_packing_is_numpy_packbits_of_the_signs(data):
    _, queries = data
    packed = np.packbits(queries > 0, axis=-1)
    np.testing.assert_array_equal(quantize(queries, "ubinary"), packed)
    binary = quantize(queries, "binary")
    assert binary.dtype == np.int8
    np.testing.assert_array_equal(binary.astype(np.int16), packed.astype(np.int16) - 128)


def test_binary_bits_by_hand():
    # Signs 1 0 0 1 0 1 1 0 | 1 (then 7 padding zeros); zero counts as not positive.
    x = np.array([[1.0, -1.0, 0.0, 2.0, -3.0, 4.0, 5.0, -6.0, 7.0]])
    np.testing.assert_array_equal(quantize(x, "ubinary"), [[0b10010110, 0b10000000]])
    np.testing.assert_array_equal(quantize(x, "binary"), [[0b10010110 - 128, 0b10000000 - 128]])
    assert PRECISIONS["binary"].columns(9) == 2 and PRECISIONS["int8"].columns(9) == 9


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_round_trip_within_half_a_quantisation_step(data, precision):
    corpus, _ = data
    calibration = Calibration.from_embeddings(corpus)
    inside = clustered_corpus(300, 24, seed=5)
    inside = np.clip(inside, calibration.ranges[0], calibration.ranges[1])  # inside the calibrated range
    inside[:, 5] = 0.25
    codes = quantize(inside, precision, calibration)
    restored = dequantize(codes, precision, calibration)
    step = (calibration.ranges[1] - calibration.ranges[0]) / 255
    error = np.abs(restored - inside)
    varying = step > 0
    assert (error[:, varying] <= step[varying] / 2 * (1 + 1e-4) + 1e-7).all()  # bucket centre: half a step
    assert (error[:, ~varying] <= 0.5 + 1e-6).all()  # a constant dimension's bucket has width 1
    # Each centre lies inside its own bucket: quantising it again gives the same codes.
    np.testing.assert_array_equal(quantize(restored, precision, calibration), codes)


def test_int8_is_uint8_shifted_by_128(data):
    corpus, queries = data
    calibration = Calibration.from_embeddings(corpus)
    np.testing.assert_array_equal(quantize(queries, "int8", calibration).astype(np.int16),
                                  quantize(queries, "uint8", calibration).astype(np.int16) - 128)


def test_float16_is_a_cast_and_refuses_overflow():
    x = np.random.default_rng(0).standard_normal((4, 8))
    np.testing.assert_array_equal(quantize(x, "float16"), x.astype(np.float16))
    np.testing.assert_array_equal(dequantize(quantize(x, "float16"), "float16"), x.astype(np.float16).astype(np.float32))
    with pytest.raises(ValueError, match="beyond float16's range"):
        quantize(np.array([[1e5, 0.0]]), "float16")


def test_calibration_saves_and_loads_the_same_ranges(tmp_path, data):
    corpus, queries = data
    calibration = Calibration.from_embeddings(corpus)
    path = calibration.save(tmp_path / "emb.calibration.npz")
    loaded = Calibration.load(path)
    assert loaded.count == 500
    np.testing.assert_array_equal(loaded.ranges, calibration.ranges)
    np.testing.assert_array_equal(quantize(queries, "int8", loaded), quantize(queries, "int8", calibration))


def test_calibration_file_sits_beside_the_output():
    assert calibration_path("out/emb.npy").as_posix() == "out/emb.calibration.npz"
    assert calibration_path("out/emb.v2.npy").as_posix() == "out/emb.v2.calibration.npz"
    assert calibration_path("emb").as_posix() == "emb.calibration.npz"


def test_bad_calibration_files_are_named(tmp_path):
    missing = tmp_path / "missing.npz"
    with pytest.raises(ValueError, match=f"{missing}: no such calibration file"):
        Calibration.load(missing)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not an npz")
    with pytest.raises(ValueError, match=f"{garbage}: not a calibration file"):
        Calibration.load(garbage)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, ranges=np.zeros((3, 4), np.float32), count=np.int64(2))
    with pytest.raises(ValueError, match=rf"{wrong}: 'ranges' must be a float \[2, d\]"):
        Calibration.load(wrong)
    inverted = tmp_path / "inverted.npz"
    np.savez(inverted, ranges=np.array([[1.0], [0.0]], np.float32), count=np.int64(2))
    with pytest.raises(ValueError, match="minima <= maxima"):
        Calibration.load(inverted)


def test_scalar_codes_need_matching_calibration_and_float_finite_input(data):
    corpus, queries = data
    with pytest.raises(ValueError, match="int8 needs calibration ranges"):
        quantize(queries, "int8")
    with pytest.raises(ValueError, match="calibration ranges have 24 dimensions, the embeddings 8"):
        quantize(queries[:, :8], "uint8", Calibration.from_embeddings(corpus))
    with pytest.raises(ValueError, match="only float embeddings"):
        quantize(quantize(queries, "ubinary"), "ubinary")
    bad = queries.copy()
    bad[7, 3] = np.nan
    with pytest.raises(ValueError, match="row 7 has a non-finite value"):
        quantize(bad, "binary")
    with pytest.raises(ValueError, match="at least 2 embeddings"):
        Calibration.from_embeddings(corpus[:1])
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        quantize(queries, "int4")
    with pytest.raises(ValueError, match="cannot be dequantised"):
        dequantize(quantize(queries, "binary"), "binary")
