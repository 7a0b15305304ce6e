"""The faiss index kinds ``paravec index`` builds, one registry entry each (:data:`KINDS`).

Every kind scores "higher is better" so that callers never need to know which faiss metric sits
underneath:

- ``flat``: ``IndexFlatIP``, exact inner product (cosine on L2-normalised embeddings).
- ``hnsw``: ``IndexHNSWFlat`` with the inner-product metric: a graph over the full vectors;
  approximate neighbours with exact scores.
- ``ivfpq``: ``IndexIVFPQ`` with the inner-product metric, trained on the corpus: ``nlist``
  k-means cells, residuals compressed by a product quantiser of ``pq_m`` sub-vectors with
  ``pq_bits`` bits each. Approximate neighbours with approximate scores, a fraction of the size.
- ``binary``: ``IndexBinaryFlat`` over ``numpy.packbits(x > 0)``, exact Hamming search; the
  score is ``d - 2 * hamming``, the inner product of the two +-1 sign vectors. 32 times smaller
  than float32.

Parameters (:class:`HNSWParams`, :class:`IVFPQParams`) are plain integers so they can be given
on the command line (``--param name=value``) and stored in ``index.json``; ``None`` means "pick
from the corpus size and dimension" (:meth:`IVFPQParams.resolve`), and the resolved values are
what gets stored.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import faiss
import numpy as np

from paravec.vectors.quantize import quantize


@dataclass(frozen=True)
class NoParams:
    """Kinds without tunable parameters."""

    def resolve(self, count: int, dim: int) -> "NoParams":
        return self


@dataclass(frozen=True)
class HNSWParams:
    """``m``: graph neighbours per node; ``ef_construction`` / ``ef_search``: candidate list sizes.

    faiss's defaults (40 / 16) favour build and query speed over recall; 200 / 128 cost a few
    times more and miss almost nothing at k = 10 (recall@10 1.0 against exact search on the
    clustered test corpus). ``ef_search`` is raised to ``k`` when a search asks for more.
    """

    m: int = 32
    ef_construction: int = 200
    ef_search: int = 128

    def resolve(self, count: int, dim: int) -> "HNSWParams":
        if self.m < 2:
            raise ValueError(f"m={self.m}: an HNSW graph needs at least 2 links per node (faiss crashes with 1)")
        return self


@dataclass(frozen=True)
class IVFPQParams:
    """IVF cells (``nlist``), cells searched (``nprobe``), PQ sub-vectors (``pq_m``) and bits (``pq_bits``).

    Defaults, chosen so that small corpora train too:

    - ``nlist = clamp(round(4 * sqrt(n)), 1, n // 39)``: faiss's usual 4*sqrt(n) rule, but never
      fewer than 39 training vectors per cell (k-means' own minimum; below it faiss warns and
      cells are noise).
    - ``nprobe = min(round(sqrt(nlist)) + 8, nlist)``: a large share of the cells when there are
      few (15 of 51 at 2,000 vectors), where extra cells cost little and neighbours often sit
      across a cell border; a small one when there are many (71 of 4,000 at a million).
    - ``pq_m``: the divisor of ``d`` nearest ``d / 4`` (4-dimensional sub-vectors: 2 bits per
      dimension at 8 bits per code, 16x smaller than float32).
    - ``pq_bits = clamp(floor(log2(n / 16)), 1, 8)``: 256 centroids per sub-quantiser from
      4,096 corpus vectors on, fewer below. Each sub-quantiser sees every corpus vector, so 16
      per centroid train it well (faiss asks for 39 before it stops warning; paravec tells its
      k-means that 16 suffice, which silences only that warning).
    """

    nlist: Optional[int] = None
    nprobe: Optional[int] = None
    pq_m: Optional[int] = None
    pq_bits: Optional[int] = None

    def resolve(self, count: int, dim: int) -> "IVFPQParams":
        nlist = self.nlist or max(1, min(round(4 * math.sqrt(count)), count // MIN_POINTS_PER_CENTROID))
        nprobe = self.nprobe or min(nlist, round(math.sqrt(nlist)) + 8)
        pq_m = self.pq_m or min(_divisors(dim), key=lambda m: (abs(m - dim / 4), m))
        pq_bits = self.pq_bits or max(1, min(8, int(math.log2(max(1, count // PQ_POINTS_PER_CENTROID)))))
        if nlist > count:
            raise ValueError(f"nlist={nlist} needs at least {nlist} corpus vectors to train, got {count}")
        if nprobe > nlist:
            raise ValueError(f"nprobe={nprobe} is more than nlist={nlist}")
        if dim % pq_m:
            raise ValueError(f"pq_m={pq_m} must divide the dimension {dim}")
        if not 1 <= pq_bits <= 16:
            raise ValueError(f"pq_bits={pq_bits} must be 1..16")
        if 2**pq_bits > count:
            raise ValueError(f"pq_bits={pq_bits} needs at least {2 ** pq_bits} corpus vectors to train, got {count}")
        return IVFPQParams(nlist=nlist, nprobe=nprobe, pq_m=pq_m, pq_bits=pq_bits)


#: faiss's k-means asks for this many training vectors per centroid (IVF cells).
MIN_POINTS_PER_CENTROID = 39
#: What a product quantiser's centroids need (see :class:`IVFPQParams`).
PQ_POINTS_PER_CENTROID = 16


def _divisors(n: int) -> list[int]:
    return [m for m in range(1, n + 1) if n % m == 0]


# ----------------------------------------------------------------------------- build / search


def _build_flat(vectors: np.ndarray, params: NoParams) -> faiss.Index:
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index


def _build_hnsw(vectors: np.ndarray, params: HNSWParams) -> faiss.Index:
    index = faiss.IndexHNSWFlat(vectors.shape[1], params.m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = params.ef_construction
    index.add(vectors)
    return index


def _build_ivfpq(vectors: np.ndarray, params: IVFPQParams) -> faiss.Index:
    quantizer = faiss.IndexFlatIP(vectors.shape[1])
    index = faiss.IndexIVFPQ(quantizer, vectors.shape[1], params.nlist, params.pq_m, params.pq_bits,
                             faiss.METRIC_INNER_PRODUCT)
    index.pq.cp.min_points_per_centroid = PQ_POINTS_PER_CENTROID
    index.train(vectors)
    index.add(vectors)
    return index


def _build_binary(vectors: np.ndarray, params: NoParams) -> faiss.IndexBinary:
    codes = quantize(vectors, "ubinary")
    index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    index.add(codes)
    return index


def _search_float(index: faiss.Index, queries: np.ndarray, k: int, params: Any) -> tuple[np.ndarray, np.ndarray]:
    return index.search(queries, k)


def _search_hnsw(index: faiss.Index, queries: np.ndarray, k: int, params: HNSWParams):
    return index.search(queries, k, params=faiss.SearchParametersHNSW(efSearch=max(params.ef_search, k)))


def _search_ivfpq(index: faiss.Index, queries: np.ndarray, k: int, params: IVFPQParams):
    return index.search(queries, k, params=faiss.SearchParametersIVF(nprobe=params.nprobe))


def _search_binary(index: faiss.IndexBinary, queries: np.ndarray, k: int, params: NoParams):
    hamming, rows = index.search(quantize(queries, "ubinary"), k)
    return queries.shape[1] - 2 * hamming.astype(np.float32), rows


@dataclass(frozen=True)
class IndexKind:
    """How one kind is built, searched, stored and described."""

    name: str
    summary: str
    params: type
    build: Callable[[np.ndarray, Any], Any]
    #: (queries float32 [q, d], k, params) -> (scores, rows); rows -1 where faiss found fewer than k.
    raw_search: Callable[[Any, np.ndarray, int, Any], tuple[np.ndarray, np.ndarray]]
    binary: bool  # a faiss IndexBinary (its own read/write/serialise functions)
    #: First-stage scores are approximations, so rescoring with stored vectors can reorder them.
    rescorable: bool

    def make_params(self, values: Optional[Mapping[str, int]] = None) -> Any:
        """The kind's parameters from a name -> int mapping; unknown names are an error naming them."""
        values = dict(values or {})
        known = [f.name for f in dataclasses.fields(self.params)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            listed = ", ".join(known) if known else "none"
            raise ValueError(f"{', '.join(unknown)}: not a parameter of index kind {self.name!r} (its parameters: {listed})")
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"parameter {name} must be a positive integer, got {value!r}")
        return self.params(**{name: int(value) for name, value in values.items()})

    def faiss_dim(self, dim: int) -> int:
        """The ``d`` faiss reports for embeddings of ``dim`` dimensions (bits, whole bytes, for binary)."""
        return 8 * ((dim + 7) // 8) if self.binary else dim

    def write(self, index: Any, path: str) -> None:
        (faiss.write_index_binary if self.binary else faiss.write_index)(index, path)

    def read(self, path: str) -> Any:
        return (faiss.read_index_binary if self.binary else faiss.read_index)(path)

    def serialized_size(self, index: Any) -> int:
        """Bytes of the index as written to disk (codes, graph or cells, and trained quantisers)."""
        serialize = faiss.serialize_index_binary if self.binary else faiss.serialize_index
        return int(serialize(index).nbytes)


KINDS: dict[str, IndexKind] = {
    kind.name: kind
    for kind in (
        IndexKind("flat", "exact inner product (IndexFlatIP)", NoParams, _build_flat, _search_float, False, False),
        IndexKind("hnsw", "HNSW graph, inner product (IndexHNSWFlat)", HNSWParams, _build_hnsw, _search_hnsw, False, False),
        IndexKind("ivfpq", "inverted lists + product quantiser, inner product (IndexIVFPQ)", IVFPQParams,
                  _build_ivfpq, _search_ivfpq, False, True),
        IndexKind("binary", "sign bits, exact Hamming (IndexBinaryFlat)", NoParams, _build_binary, _search_binary, True, True),
    )
}


def get_kind(name: str) -> IndexKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown index kind {name!r}; choose one of {', '.join(KINDS)}") from None
