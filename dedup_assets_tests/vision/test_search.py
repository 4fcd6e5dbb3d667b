import numpy as np

from dedup_assets.vision.search import (
    pair_inner_products,
    streamed_neighbours,
    top_inner_products,
    torch_top_inner_products,
)


def test_embedding_neighbours_respect_the_similarity_floor():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(200, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[:5] + 0.05 * rng.normal(size=(5, 64)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    # References in uneven chunks (stored partitions), as the stage streams them.
    chunks = [vectors[:3], vectors[3:120], vectors[120:]]
    found = streamed_neighbours(queries, iter(chunks), min_similarity=0.9, k=10, use_gpu=False)
    assert sorted(zip(found.query.tolist(), found.reference.tolist())) == [(i, i) for i in range(5)]
    assert (found.score >= 0.9).all()


def test_streamed_neighbours_equal_one_exact_search():
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(500, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.integers(0, 500, 20)]
    chunked = streamed_neighbours(queries, (vectors[i:i + 64] for i in range(0, 500, 64)), -1.0, k=7, use_gpu=False)
    whole = streamed_neighbours(queries, iter([vectors]), -1.0, k=7, use_gpu=False)
    assert np.array_equal(chunked.reference, whole.reference) and np.allclose(chunked.score, whole.score)
    expected = np.argsort(-(queries @ vectors.T), axis=1)[:, :7]
    assert np.array_equal(chunked.reference.reshape(20, 7), expected)


def test_top_inner_products_in_blocks_equal_one_exact_search():
    rng = np.random.default_rng(3)
    references = rng.normal(size=(300, 16)).astype(np.float32)
    queries = rng.normal(size=(45, 16)).astype(np.float32)
    # Blocks smaller than k and uneven, in both directions.
    scores, found = top_inner_products(queries, references, k=9, query_block=8, reference_block=7)
    expected = np.argsort(-(queries @ references.T), axis=1)[:, :9]
    order = np.argsort(-scores, axis=1)
    assert np.array_equal(np.take_along_axis(found, order, axis=1), expected)
    assert np.allclose(np.take_along_axis(scores, order, axis=1),
                       np.take_along_axis(queries @ references.T, expected, axis=1))
    # Stored float16 references, widened a block at a time: the products of their widening.
    stored = references.astype(np.float16)
    half_scores, half_found = top_inner_products(queries, stored, k=9, query_block=8, reference_block=7)
    wide_scores, wide_found = top_inner_products(queries, stored.astype(np.float32), k=9, reference_block=300)
    assert [set(row) for row in half_found.tolist()] == [set(row) for row in wide_found.tolist()]
    assert np.allclose(np.sort(half_scores, axis=1), np.sort(wide_scores, axis=1), atol=1e-6)
    # Fewer references than k: every one, once.
    _, few = top_inner_products(queries, references[:4], k=9)
    assert few.shape == (45, 4) and all(sorted(row) == [0, 1, 2, 3] for row in few.tolist())


def test_pair_inner_products_in_blocks_equal_the_pairs_dot_products():
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(50, 16)).astype(np.float32)
    a, b = rng.integers(0, 50, size=103), rng.integers(0, 50, size=103)
    expected = np.array([vectors[i] @ vectors[j] for i, j in zip(a, b)], np.float32)
    assert np.allclose(pair_inner_products(vectors, a, b, block=10), expected, atol=1e-5)  # uneven blocks
    assert pair_inner_products(vectors, a[:0], b[:0]).shape == (0,)


def test_coded_neighbours_over_chunks_find_the_near_copies():
    from dedup_assets.vision.search import coded_neighbours, encode, train_codec

    rng = np.random.default_rng(4)
    references = rng.normal(size=(4000, 64)).astype(np.float32)
    references /= np.linalg.norm(references, axis=1, keepdims=True)
    queries = references[:100] + 0.02 * rng.normal(size=(100, 64)).astype(np.float32)  # cosine ~0.99
    codec = train_codec(references, "IVF16,PQ32")
    codes = encode(codec, references)
    assert codes.shape == (4000, codec.sa_code_size()) and codes.dtype == np.uint8
    # Codes arrive per stored partition; ids count rows across them.
    scores, found = coded_neighbours(codec, (codes[i:i + 1000] for i in range(0, 4000, 1000)), queries, 5, probes=4)
    assert found.shape == (100, 5)
    assert (found[:, 0] == np.arange(100)).mean() >= 0.95  # each query's source ranks first,
    assert all(i in row for i, row in enumerate(found.tolist()))  # or at least among the five
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    none_scores, none_found = coded_neighbours(codec, iter([]), queries, 5, probes=4)
    assert none_found.shape == (100, 0) and none_scores.shape == (100, 0)


def test_the_pytorch_search_equals_the_cpu_search():
    # The GPU path where faiss has no GPU build; run here on PyTorch's CPU device, which
    # computes the same float32 products (the bench checks it on CUDA: bench/gpu.py).
    rng = np.random.default_rng(4)
    references = rng.normal(size=(300, 16)).astype(np.float32)
    queries = rng.normal(size=(45, 16)).astype(np.float32)
    cpu_scores, cpu_found = top_inner_products(queries, references, k=9)
    torch_scores, torch_found = torch_top_inner_products(queries, references, k=9, device="cpu", query_block=8)
    assert [set(row) for row in torch_found.tolist()] == [set(row) for row in cpu_found.tolist()]
    assert np.allclose(np.sort(torch_scores, axis=1), np.sort(cpu_scores, axis=1), atol=1e-5)
    # Stored float16 references travel as they are and are widened on the device.
    stored = references.astype(np.float16)
    cpu_scores, cpu_found = top_inner_products(queries, stored.astype(np.float32), k=9)
    torch_scores, torch_found = torch_top_inner_products(queries, stored, k=9, device="cpu", query_block=8)
    assert [set(row) for row in torch_found.tolist()] == [set(row) for row in cpu_found.tolist()]
    assert np.allclose(np.sort(torch_scores, axis=1), np.sort(cpu_scores, axis=1), atol=1e-5)


def test_references_held_as_tensors_on_a_device_are_searched_there_with_the_same_pairs():
    # Stored embeddings held on the GPU between batches arrive as tensors on it; PyTorch's
    # CPU device stands in for the GPU here.
    import torch

    rng = np.random.default_rng(9)
    vectors = rng.normal(size=(400, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    stored = vectors.astype(np.float16)
    queries = vectors[rng.integers(0, 400, 30)] + 0.05 * rng.normal(size=(30, 16)).astype(np.float32)
    on_host = streamed_neighbours(queries, (stored[i:i + 64] for i in range(0, 400, 64)), 0.3, k=7, use_gpu=False)
    held = [torch.from_numpy(stored[i:i + 64]) for i in range(0, 400, 64)]
    on_device = streamed_neighbours(queries, iter(held), 0.3, k=7, use_gpu=False)
    assert len(on_host.query) > 30
    assert set(zip(on_device.query.tolist(), on_device.reference.tolist())) == \
        set(zip(on_host.query.tolist(), on_host.reference.tolist()))
