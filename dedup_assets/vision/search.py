"""Candidate search with faiss: Hamming radius over wavelet hashes, cosine over embeddings.

Both take a query set and a reference set (the new batch, and every stored image), and
return pairs as index arrays into them; no all-pairs Python loop anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from dedup_assets.vision.hashing import HASH_BITS, hash_to_bytes

# Exact search up to this many reference vectors; above it an HNSW graph.
EXACT_SEARCH_LIMIT = 200_000


@dataclass(frozen=True)
class PairIndices:
    query: np.ndarray  # int64 indices into the query set
    reference: np.ndarray  # int64 indices into the reference set
    score: np.ndarray  # Hamming distance (int) or cosine similarity (float)


def _gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def hamming_pairs(query_hashes: np.ndarray, reference_hashes: np.ndarray, radius: int) -> PairIndices:
    """Every (query, reference) pair whose 64-bit hashes differ in at most `radius` bits."""
    if len(query_hashes) == 0 or len(reference_hashes) == 0:
        return PairIndices(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32))
    index = faiss.IndexBinaryFlat(HASH_BITS)
    index.add(hash_to_bytes(reference_hashes))
    # faiss keeps distances strictly below the radius.
    limits, distances, neighbours = index.range_search(hash_to_bytes(query_hashes), radius + 1)
    query = np.repeat(np.arange(len(query_hashes), dtype=np.int64), np.diff(limits).astype(np.int64))
    return PairIndices(query, neighbours.astype(np.int64), distances.astype(np.int32))


class EmbeddingIndex:
    """Inner-product index over unit vectors: exact (flat) when small, HNSW when large;
    on GPU when faiss-gpu is installed and a GPU is present."""

    def __init__(self, vectors: np.ndarray, use_gpu: bool | None = None):
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.size, dim = vectors.shape
        if self.size <= EXACT_SEARCH_LIMIT:
            index = faiss.IndexFlatIP(dim)
            if (use_gpu if use_gpu is not None else _gpu_available()):
                index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
        else:
            index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 80
            index.hnsw.efSearch = 128
        index.add(vectors)
        self.index = index

    def neighbours(self, queries: np.ndarray, min_similarity: float, k: int = 32) -> PairIndices:
        """Up to k nearest references per query with cosine ≥ min_similarity."""
        if len(queries) == 0 or self.size == 0:
            return PairIndices(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
        k = min(k, self.size)
        similarity, neighbours = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        keep = (similarity >= min_similarity) & (neighbours >= 0)
        query = np.repeat(np.arange(len(queries), dtype=np.int64), k).reshape(-1, k)
        return PairIndices(query[keep], neighbours[keep].astype(np.int64), similarity[keep])
