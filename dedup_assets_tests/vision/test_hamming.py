import numpy as np
import pytest

from dedup_assets.vision.hamming import (ResidentDescriptors, nearest_hashes, ratio_test, two_nearest,
                                         two_nearest_many)


def brute_force(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Every Hamming distance, bit by bit: (len(a), len(b))."""
    return np.unpackbits(a[:, None, :] ^ b[None, :, :], axis=2).sum(axis=2)


@pytest.mark.parametrize("n, m", [(1, 2), (7, 3), (300, 1001), (1000, 997)])
def test_two_nearest_are_the_exact_nearest_and_second_nearest(n, m):
    rng = np.random.default_rng(n * m)
    b = rng.integers(0, 256, (m, 32), dtype=np.uint8)
    a = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    a[: min(n, m) // 2] = b[: min(n, m) // 2] ^ (rng.random((min(n, m) // 2, 32)) < 0.03).astype(np.uint8)
    distances = brute_force(a, b)
    nearest, first, second = two_nearest(a, b)
    ordered = np.sort(distances, axis=1)
    assert np.array_equal(first, ordered[:, 0])
    assert np.array_equal(second, ordered[:, 1])
    assert np.array_equal(distances[np.arange(n), nearest], first)


@pytest.mark.parametrize("ratio", [0.8, 0.7, 1.0])
def test_the_ratio_test_keeps_the_rows_whose_nearest_is_clearly_nearer(ratio):
    rng = np.random.default_rng(int(ratio * 10))
    b = rng.integers(0, 256, (500, 32), dtype=np.uint8)
    b[1] = b[0]  # a's last two rows have two nearest rows at distance 0: a tie, never kept
    a = np.vstack([b[:200] ^ (rng.random((200, 32)) < 0.05).astype(np.uint8),  # near copies: kept
                   rng.integers(0, 256, (300, 32), dtype=np.uint8), b[:2]])
    nearest, first, second = two_nearest(a, b)
    keep = first < ratio * second
    query, train = ratio_test(a, b, ratio)
    assert np.array_equal(query, np.flatnonzero(keep)) and np.array_equal(train, nearest[keep])
    assert 150 < len(query) < 500 and 500 not in query and 501 not in query


def test_many_pairs_at_once_give_each_pairs_own_distances_and_nearest_rows():
    """The batched search (PyTorch; a GPU in production) pads sets of unequal sizes and
    shares an image's descriptors between its pairs: none of that may leak into a result."""
    pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    sets = [rng.integers(0, 256, (n, 32), dtype=np.uint8) for n in (400, 397, 120, 3, 2)]
    sets.append(sets[0] ^ (rng.random((400, 32)) < 0.03).astype(np.uint8))  # a near copy of the first
    pairs = [(i, j) for i in range(len(sets)) for j in range(len(sets)) if i != j]
    found = two_nearest_many([(sets[i], sets[j]) for i, j in pairs], "cpu", pairs_per_pass=7)  # mixed passes
    assert len(found) == len(pairs)
    for (i, j), (nearest, first, second) in zip(pairs, found):
        expected_nearest, expected_first, expected_second = two_nearest(sets[i], sets[j])
        assert np.array_equal(first, expected_first) and np.array_equal(second, expected_second)
        strictly = first < second  # a tie may name either row; no ratio test keeps it
        assert np.array_equal(nearest[strictly], expected_nearest[strictly])
    assert (found[pairs.index((0, 5))][1] < 30).all()


def test_sets_kept_on_the_device_are_sent_once_and_searched_as_before():
    """Kept between passes and calls (an image's pairs span many), each set is sent once;
    with room for fewer, the least recently used are given up and sent again. The
    results are those of sets sent with every pass (the same passes: a tie's row may
    depend on a pass's padding)."""
    pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    sets = [rng.integers(0, 256, (n, 32), dtype=np.uint8) for n in (50, 80, 120, 30, 64, 99)]
    pairs = [(sets[i], sets[j]) for i in range(len(sets)) for j in range(len(sets)) if i != j]
    def same(found, expected) -> bool:
        return all(np.array_equal(x, y) for got, wanted in zip(found, expected) for x, y in zip(got, wanted))

    resident = ResidentDescriptors("cpu", budget_bytes=2**20)
    kept = two_nearest_many(pairs[:15], "cpu", 5, resident=resident) + two_nearest_many(pairs[15:], "cpu", 5,
                                                                                         resident=resident)
    assert same(kept, two_nearest_many(pairs, "cpu", pairs_per_pass=5)) and resident.sent == len(sets)
    few = ResidentDescriptors("cpu", budget_bytes=2 * 120 * 32)
    assert same(two_nearest_many(pairs, "cpu", 2, resident=few), two_nearest_many(pairs, "cpu", pairs_per_pass=2))
    assert few.sent > len(sets) and few.held_bytes <= 4 * 120 * 32  # at most one pass's 4 sets


def test_ties_report_the_shared_distance_twice():
    b = np.zeros((3, 32), np.uint8)
    b[2] = 255
    nearest, first, second = two_nearest(np.zeros((1, 32), np.uint8), b)
    assert nearest[0] in (0, 1) and first[0] == second[0] == 0


def test_descriptors_of_another_length_or_too_few_are_refused():
    with pytest.raises(ValueError, match="32-byte"):
        two_nearest(np.zeros((4, 64), np.uint8), np.zeros((4, 64), np.uint8))
    with pytest.raises(ValueError, match="at least two"):
        two_nearest(np.zeros((4, 32), np.uint8), np.zeros((1, 32), np.uint8))


def test_a_users_numba_target_features_are_kept(tmp_path):
    """The module widens numba's vectors only when the user has not chosen the target."""
    import os
    import subprocess
    import sys

    script = ("import os, dedup_assets.vision.hamming as h, numpy as np\n"
              "d = np.arange(64, dtype=np.uint8).reshape(2, 32)\n"
              "print(os.environ['NUMBA_CPU_FEATURES'], h.two_nearest(d, d)[1].tolist())\n")
    env = {**os.environ, "NUMBA_CPU_FEATURES": "+sse2", "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         check=True, timeout=300).stdout.split()
    assert out == ["+sse2", "[0,", "0]"]


def test_the_fused_kernel_finds_the_exact_two_nearest_and_the_same_row_on_ties():
    """The Triton kernel (a GPU's, interpreted here on the CPU: TRITON_INTERPRET must be set
    before Triton is imported, hence a process of its own) gives `two_nearest`'s very
    results: across tiles of b, past a's last full block, for sets of 2 rows, and the
    lowest row on a tie as the compiled search does."""
    pytest.importorskip("triton")
    import os
    import subprocess
    import sys

    script = """
import numpy as np
from dedup_assets.vision.hamming import two_nearest, two_nearest_many
rng = np.random.default_rng(5)
sets = [rng.integers(0, 256, (n, 32), dtype=np.uint8) for n in (130, 64, 65, 2, 3)]
sets.append(sets[0] ^ (rng.random((130, 32)) < 0.03).astype(np.uint8))  # a near copy
sets.append(np.repeat(sets[4], 4, axis=0))  # every row four times: ties
pairs = [(i, j) for i in range(len(sets)) for j in range(len(sets)) if i != j]
found = two_nearest_many([(sets[i], sets[j]) for i, j in pairs], "cpu", pairs_per_pass=9, kernel="triton")
different = [(i, j) for (i, j), got in zip(pairs, found)
             if not all(np.array_equal(g, e) for g, e in zip(got, two_nearest(sets[i], sets[j])))]
ties = sum(int((got[1] == got[2]).sum()) for got in found)
near = int((found[pairs.index((0, 5))][1] < 30).sum())
print(len(pairs), different, ties > 0, near)
"""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["42", "[]", "True", "130"]


@pytest.mark.parametrize("capability, tiles", [(90, (64, 64, 4)), (90, (128, 128, 8)), (80, (64, 64, 4))])
def test_the_fused_kernel_compiles_for_the_gpus_tensor_cores(capability, tiles):
    """What the interpreter cannot check: the kernel compiles to a CUDA binary (Triton's
    own ptxas; no GPU needed) for Hopper (H100/H200) and Ampere, its products on the
    tensor cores (wgmma / mma), within the shared memory an SM has."""
    pytest.importorskip("triton")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from dedup_assets.vision.hamming_triton import _two_nearest_kernel

    block_m, block_n, warps = tiles
    signature = {"descriptors_ptr": "*u8", "starts_ptr": "*i64", "lengths_ptr": "*i64", "set_a_ptr": "*i64",
                 "set_b_ptr": "*i64", "out_ptr": "*i32", "rows": "i32",
                 "BLOCK_M": "constexpr", "BLOCK_N": "constexpr", "BYTES": "constexpr"}
    source = ASTSource(fn=_two_nearest_kernel, signature=signature,
                       constexprs={"BLOCK_M": block_m, "BLOCK_N": block_n, "BYTES": 32})
    compiled = triton.compile(source, target=GPUTarget("cuda", capability, 32), options={"num_warps": warps})
    assert compiled.asm["cubin"]
    assert ("wgmma" if capability >= 90 else "mma.sync") in compiled.asm["ptx"]
    assert compiled.metadata.shared <= 227 * 1024  # an H100 SM's most per block


def test_an_unknown_kernel_is_refused():
    pytest.importorskip("torch")
    sets = np.zeros((2, 32), np.uint8), np.zeros((2, 32), np.uint8)
    with pytest.raises(ValueError, match="unknown kernel 'cuda'"):
        two_nearest_many([sets], "cpu", kernel="cuda")


def nearest_by_brute_force(query_hashes, query_colours, query_keys, hashes, colours, keys, radius, max_colour, limit):
    expected = set()
    for q in range(len(query_hashes)):
        ranked = []
        for r in range(len(hashes)):
            distance = int(query_hashes[q] ^ hashes[r]).bit_count()
            colour = np.float32(np.abs(query_colours[q].astype(int) - colours[r].astype(int)).mean())
            if distance <= radius and colour <= max_colour and keys[r] != query_keys[q]:
                ranked.append((distance / (radius + 1) + float(colour) / max_colour, keys[r], r, distance, colour))
        expected |= {(q, r, d, float(c)) for _, _, r, d, c in sorted(ranked)[:limit]}
    return expected


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("limit", [1, 4, 50])
def test_nearest_hashes_are_each_querys_best_by_hash_and_colour(threads, limit):
    rng = np.random.default_rng(limit * 10 + threads)
    stored = 3000  # more than one block of stored hashes
    hashes = rng.choice(np.array([0, 1, 7, 0xF0F0, 2**63, 2**64 - 1], np.uint64), stored)  # many ties
    hashes[::7] = rng.integers(0, 2**63, len(hashes[::7]), dtype=np.int64).astype(np.uint64)
    colours = rng.integers(100, 110, (stored, 48), dtype=np.uint8)
    keys = rng.permutation(stored).astype(np.int64)
    queries = rng.integers(0, stored, 25)
    query_hashes = hashes[queries] ^ (np.uint64(1) << rng.integers(0, 64, 25).astype(np.uint64))
    query_hashes[:10] = hashes[queries[:10]]
    args = (query_hashes, colours[queries], keys[queries], hashes, colours, keys, 3, 4.0, limit)

    query, row, distance, colour = nearest_hashes(*args, threads=threads)
    got = set(zip(query.tolist(), row.tolist(), distance.tolist(), colour.tolist()))
    assert got == nearest_by_brute_force(*args)
    assert not (keys[row] == keys[queries][query]).any()  # its own key never
    assert np.bincount(query, minlength=25).max() <= limit


def test_nearest_hashes_of_nothing_is_nothing():
    empty = (np.zeros(0, np.uint64), np.zeros((0, 48), np.uint8), np.zeros(0, np.int64))
    one = (np.zeros(1, np.uint64), np.zeros((1, 48), np.uint8), np.zeros(1, np.int64))
    for query, stored in [(empty, one), (one, empty)]:
        assert all(len(part) == 0 for part in nearest_hashes(*query, *stored, 10, 12.0, 32))
