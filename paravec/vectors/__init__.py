"""Smaller vectors and searching them: truncation, quantisation, faiss indexes, their evaluation.

numpy and faiss only (no torch), so indexing and search run without loading a model.

- :mod:`paravec.vectors.truncate`  Matryoshka truncation: first ``dim`` dimensions, re-normalised
- :mod:`paravec.vectors.quantize`  float16/int8/uint8/binary/ubinary codes as sentence-transformers
  makes them, and their calibration ranges (:class:`Calibration`, saved beside quantised output)
- :mod:`paravec.vectors.store`     quantised output on disk: ``emb.npy`` and ``emb.calibration.npz``
- :mod:`paravec.vectors.kinds`     the faiss index kinds (flat, hnsw, ivfpq, binary) and their parameters
- :mod:`paravec.vectors.ranking`   top-k lists with deterministic ties
- :mod:`paravec.vectors.rescore`   stored corpus vectors that reorder a compact index's shortlist
- :mod:`paravec.vectors.index`     :class:`VectorIndex`: build, search, save and load an index folder
- :mod:`paravec.vectors.evaluate`  recall against exact search, index size, Recall@K/NDCG@10 from qrels
"""

from paravec.vectors.evaluate import Qrels, index_size_bytes, read_qrels, recall_against_exact, retrieval_scores
from paravec.vectors.index import IndexSize, SearchResult, VectorIndex
from paravec.vectors.kinds import KINDS
from paravec.vectors.quantize import PRECISIONS, Calibration, calibration_path, dequantize, quantize
from paravec.vectors.store import write_embeddings
from paravec.vectors.truncate import truncate

__all__ = [
    "KINDS", "PRECISIONS", "Calibration", "IndexSize", "Qrels", "SearchResult", "VectorIndex", "calibration_path",
    "dequantize", "index_size_bytes", "quantize", "read_qrels", "recall_against_exact", "retrieval_scores", "truncate",
    "write_embeddings",
]
