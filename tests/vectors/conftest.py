"""A synthetic corpus shaped like real embeddings: clusters, and inside them a decaying spectrum.

Real embedding sets are far from isotropic: they form topical clusters, and within a cluster
most of the variance lies in a few directions (a power-law PCA spectrum). Isotropic noise would
make every compressed index look worse than it is on real data, a single tight cluster better.
"""

import numpy as np
import pytest


def clustered_corpus(n: int, d: int, *, clusters: int = 40, spread: float = 0.5, decay: float = 1.0,
                     seed: int = 0) -> np.ndarray:
    """``n`` unit vectors: ``clusters`` random unit centres plus offsets whose i-th principal
    direction has scale ``(i + 1) ** -decay`` (total offset length about ``spread``)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    scales = (1.0 + np.arange(d)) ** -decay
    scales *= spread / np.linalg.norm(scales)
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0]
    vectors = centres[rng.integers(0, clusters, n)] + (rng.standard_normal((n, d)) * scales) @ basis.T
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="session")
def corpus_and_queries():
    """2,000 corpus vectors and 200 queries from the same distribution, 64 dimensions."""
    vectors = clustered_corpus(2200, 64)
    return vectors[:2000], vectors[2000:]
