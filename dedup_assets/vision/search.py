"""Candidate search over embeddings with faiss (exact or through a compressed index),
on the CPU or a GPU; the near-hash search is `hamming.nearest_hashes`.

A search takes a query set and a reference set (the new batch, and every stored image),
and returns pairs as index arrays into them; no all-pairs Python loop anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import faiss
import numpy as np


@dataclass(frozen=True)
class PairIndices:
    query: np.ndarray  # int64 indices into the query set
    reference: np.ndarray  # int64 indices into the reference set
    score: np.ndarray  # Hamming distance (int) or cosine similarity (float)


def _gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _torch_cuda_available() -> bool:
    from dedup_assets.vision.embedders import cuda_surely_absent

    if cuda_surely_absent():  # known without importing PyTorch
        return False
    import torch

    return torch.cuda.is_available()


def held_vectors_device() -> str | None:
    """Where stored embeddings held between batches belong: on the GPU when the exact
    search runs there through PyTorch (they then cross to it once, not once per batch),
    else in the host's memory (None; faiss-gpu takes host arrays)."""
    return "cuda" if not _gpu_available() and _torch_cuda_available() else None


# Stored rows searched together (a few partitions): per-chunk work done once per chunk.
REFERENCE_BLOCK = 8192
# Similarities computed at once: at most 2,048 queries x 2,048 references on the CPU
# (16 MB float32 and 32 MB of partial-sort indices; a whole chunk of 8,192 at once held
# four times that and was no faster), the whole chunk on a GPU.
QUERY_BLOCK = 2048
CPU_REFERENCE_BLOCK = 2048


def top_inner_products(queries: np.ndarray, references: np.ndarray, k: int,
                       query_block: int = QUERY_BLOCK, reference_block: int = CPU_REFERENCE_BLOCK
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The k largest inner products of each query with the references (unsorted), and
    their reference indices: exact, one BLAS product and a partial sort per block.
    Float16 references are widened a block at a time.
    On the CPU this is 3-5x faster than `faiss.knn` (docs/performance.md, §3-4)."""
    k = min(k, len(references))
    scores = np.full((len(queries), k), -np.inf, np.float32)
    found = np.full((len(queries), k), -1, np.int64)
    for q in range(0, len(queries), query_block):
        heap = faiss.ResultHeap(min(query_block, len(queries) - q), k, keep_max=True)
        for r in range(0, len(references), reference_block):
            similarity = queries[q:q + query_block] @ np.asarray(references[r:r + reference_block], np.float32).T
            kk = min(k, similarity.shape[1])
            best = np.argpartition(similarity, -kk, axis=1)[:, -kk:] if kk < similarity.shape[1] \
                else np.broadcast_to(np.arange(kk), similarity.shape)
            heap.add_result(np.ascontiguousarray(np.take_along_axis(similarity, best, axis=1)),
                            np.ascontiguousarray(best + r, dtype=np.int64))
        heap.finalize()
        scores[q:q + query_block], found[q:q + query_block] = heap.D, heap.I
    return scores, found


def torch_top_inner_products(queries, references, k: int, device: str = "cuda",
                             query_block: int = QUERY_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """`top_inner_products` through PyTorch on `device`, in float32 as on the CPU: the GPU
    search of a host whose faiss has no GPU build (PyPI's faiss-gpu wheels need CUDA 12's
    cuBLAS, which a CUDA 13 host lacks). Float16 references travel as they are and are
    widened on the device: half the transfer, the same float32 products. References
    already held there (a tensor) are searched where they are; so are queries given as a
    float32 tensor there (`streamed_neighbours` sends them once per search, not per chunk)."""
    import torch

    k = min(k, len(references))
    if isinstance(references, torch.Tensor):
        stored, device = references.float(), references.device
    else:
        stored = torch.from_numpy(np.ascontiguousarray(references)).to(device).float()
    if not isinstance(queries, torch.Tensor):
        queries = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    scores = np.empty((len(queries), k), np.float32)
    found = np.empty((len(queries), k), np.int64)
    with torch.inference_mode():
        for q in range(0, len(queries), query_block):
            block = queries[q:q + query_block].to(device)
            values, indices = torch.topk(block @ stored.T, k, dim=1, sorted=False)
            scores[q:q + len(block)], found[q:q + len(block)] = values.cpu().numpy(), indices.cpu().numpy()
    return scores, found


# Pairs whose two embeddings are gathered at once: 2 x 21 MB at 1,280 dimensions.
PAIRS_PER_BLOCK = 4096


def pair_inner_products(vectors: np.ndarray, a: np.ndarray, b: np.ndarray,
                        block: int = PAIRS_PER_BLOCK, others: np.ndarray | None = None) -> np.ndarray:
    """vectors[a[i]] . vectors[b[i]] for each pair (others[b[i]] when given), a block of
    pairs at a time: gathering every pair's two rows at once held 2 x 156 MB for a
    batch's 30k pairs, the verification step's peak (docs/performance.md, §3)."""
    others = vectors if others is None else others
    out = np.empty(len(a), np.float32)
    for start in range(0, len(a), block):
        end = start + block
        out[start:end] = np.einsum("ij,ij->i", vectors[a[start:end]], others[b[start:end]])
    return out


def streamed_neighbours(queries: np.ndarray, reference_chunks: Iterable[np.ndarray], min_similarity: float,
                        k: int = 32, use_gpu: bool | None = None) -> PairIndices:
    """Up to k nearest references per query with cosine ≥ min_similarity, exact, over
    references that arrive in chunks (float32 or float16 matrices, a few stored partitions
    at a time; or PyTorch tensors held on a device, searched there): memory stays at one
    chunk plus a k-best heap per query, whatever the number of references.
    Reference indices count rows across the chunks in the order given.
    use_gpu None: faiss-gpu where installed, else PyTorch on CUDA where present, else the CPU."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    heap = faiss.ResultHeap(len(queries), k, keep_max=True)
    gpu = faiss.StandardGpuResources() if (use_gpu if use_gpu is not None else _gpu_available()) else None
    torch_cuda = gpu is None and use_gpu is not False and _torch_cuda_available()
    sent = {}  # device: the queries there, sent once for every chunk searched on it

    def queries_on(device):
        if device not in sent:
            import torch

            sent[device] = torch.from_numpy(queries).to(device)
        return sent[device]

    offset = 0
    for chunk in reference_chunks:
        if len(queries) and len(chunk):
            kk = min(k, len(chunk))
            if torch_cuda or not isinstance(chunk, np.ndarray):  # float16 chunks go to the GPU as they are
                device = "cuda" if isinstance(chunk, np.ndarray) else chunk.device
                similarity, found = torch_top_inner_products(queries_on(device), chunk, kk, device)
            elif gpu is not None:
                similarity, found = faiss.knn_gpu(gpu, queries, np.ascontiguousarray(chunk, dtype=np.float32), kk,
                                                  metric=faiss.METRIC_INNER_PRODUCT)
            else:
                similarity, found = top_inner_products(queries, chunk, kk)
            heap.add_result(similarity, np.where(found >= 0, found + offset, -1))
        offset += len(chunk)
    heap.finalize()
    keep = (heap.D >= min_similarity) & (heap.I >= 0)
    query = np.repeat(np.arange(len(queries), dtype=np.int64), k).reshape(-1, k)
    return PairIndices(query[keep], heap.I[keep].astype(np.int64), heap.D[keep].astype(np.float32))


def train_codec(sample: np.ndarray, spec: str) -> faiss.Index:
    """A compressed inverted-file index (faiss factory `spec`, e.g. "IVF1024,PQ64"),
    trained on a sample of embeddings and empty: its codes are computed per stored
    partition (`encode`) and gathered for each search (`coded_neighbours`)."""
    codec = faiss.index_factory(sample.shape[1], spec, faiss.METRIC_INNER_PRODUCT)
    inverted = faiss.downcast_index(faiss.extract_index_ivf(codec))  # raises for a spec without an inverted file
    if hasattr(inverted, "do_polysemous_training"):
        # The factory turns it on for IVF-PQ; its codes' reordering (for Hamming
        # pre-filtering, unused here) was 16x the rest of the training.
        inverted.do_polysemous_training = False
    codec.train(np.ascontiguousarray(sample, dtype=np.float32))
    return codec


def encode(codec: faiss.Index, vectors: np.ndarray) -> np.ndarray:
    """Each vector's standalone code (its list number and its compressed residual)."""
    if len(vectors) == 0:
        return np.zeros((0, codec.sa_code_size()), np.uint8)
    return codec.sa_encode(np.ascontiguousarray(vectors, dtype=np.float32))


def coded_neighbours(codec: faiss.Index, code_chunks: Iterable[np.ndarray], queries: np.ndarray, k: int,
                     probes: int) -> tuple[np.ndarray, np.ndarray]:
    """Approximate k nearest references per query among coded references that arrive in
    chunks (ids count rows across the chunks): (scores, ids), id -1 where fewer exist.
    Scores are the codec's approximations (after its transform), for ranking only."""
    searcher = faiss.clone_index(codec)
    inverted = faiss.extract_index_ivf(searcher)
    offset = 0
    for codes in code_chunks:
        if len(codes):
            inverted.add_sa_codes(np.ascontiguousarray(codes), np.arange(offset, offset + len(codes), dtype=np.int64))
            offset += len(codes)
    searcher.ntotal = inverted.ntotal
    inverted.nprobe = probes
    if offset == 0 or len(queries) == 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    return searcher.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, offset))
