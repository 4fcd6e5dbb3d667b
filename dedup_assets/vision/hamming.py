"""Exact two-nearest-neighbour search between two small sets of binary descriptors.

Lowe's ratio test over ORB descriptors needs, for each descriptor of one image, its
nearest and second-nearest descriptor of the other by Hamming distance: about a million
distances per pair of 1,000-keypoint images, three quarters of verification's time with
faiss's `IndexBinaryFlat` (which counts bits one 64-bit word at a time). Compiled by
numba for the CPU it runs on, the loop below is vectorised by LLVM (AVX2/AVX-512
popcounts where present): 2.9x faster than faiss here, with identical results
(docs/performance.md).

The same popcount serves the near-hash candidate search (`nearest_hashes`): each query's
nearest stored 64-bit wavelet hashes, ranked together with their colour signatures.
"""

from __future__ import annotations

import os
import platform
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence


def _prefer_512_bit_vectors() -> None:
    """On AVX-512 CPUs LLVM vectorises for 256-bit registers by default (its tuning for
    Intel server parts, against their clock drop in 512-bit code); this popcount loop
    runs 1.3x faster in 512-bit ones (0.47 -> 0.36 ms per 1,000 x 1,000 descriptors
    here). numba takes its target features from NUMBA_CPU_FEATURES, read when it first
    compiles: set before numba is imported, unless the user set it (or the CPU name)."""
    if platform.machine().lower() not in ("x86_64", "amd64") or {"NUMBA_CPU_FEATURES", "NUMBA_CPU_NAME"} & set(os.environ):
        return
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    features = llvm.get_host_cpu_features().flatten()
    if "+avx512f" in features.split(","):
        os.environ["NUMBA_CPU_FEATURES"] = features + ",-prefer-256-bit"


_prefer_512_bit_vectors()

import numba  # noqa: E402  (after the features are chosen)
import numpy as np  # noqa: E402
from numba.core import types  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

from dedup_assets.vision.cores import usable_cores  # noqa: E402

_NO_KEY = np.uint64(0xFFFFFFFFFFFFFFFF)
_INDEX_BITS = np.uint64(32)
_INDEX_MASK = np.uint64(0xFFFFFFFF)


@intrinsic
def _popcount(typingctx, word):
    """LLVM's ctpop: one instruction, and vectorisable (numba has no popcount of its own)."""
    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.uint64(types.uint64), codegen


@numba.njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _row_two_nearest(a0, a1, a2, a3, b0, b1, b2, b3, index, keys):
    """One row of a (four words) against b's word columns: the (distance << 32 | row)
    keys of its nearest and second-nearest rows of b. `keys`: scratch, one per row of b."""
    best = _NO_KEY
    for j in range(b0.shape[0]):
        distance = _popcount(a0 ^ b0[j]) + _popcount(a1 ^ b1[j]) + _popcount(a2 ^ b2[j]) + _popcount(a3 ^ b3[j])
        key = (distance << _INDEX_BITS) | index[j]
        keys[j] = key
        best = min(best, key)
    keys[best & _INDEX_MASK] = _NO_KEY
    runner_up = _NO_KEY
    for j in range(b0.shape[0]):
        runner_up = min(runner_up, keys[j])
    return best, runner_up


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _word_columns(b: np.ndarray):
    # One contiguous array per word, and (distance, index) packed into one integer, so
    # that the inner loop and its minimum vectorise.
    index = np.arange(b.shape[0]).astype(np.uint64)
    return (np.ascontiguousarray(b[:, 0]), np.ascontiguousarray(b[:, 1]), np.ascontiguousarray(b[:, 2]),
            np.ascontiguousarray(b[:, 3]), index, np.empty(b.shape[0], np.uint64))


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _two_nearest_words(a: np.ndarray, b: np.ndarray):
    """a (n, 4) and b (m, 4) as uint64 words → per row of a: index of its nearest row of
    b, that distance, and the second-nearest distance."""
    n = a.shape[0]
    nearest = np.empty(n, np.int64)
    first = np.empty(n, np.int64)
    second = np.empty(n, np.int64)
    b0, b1, b2, b3, index, keys = _word_columns(b)
    for i in range(n):
        best, runner_up = _row_two_nearest(a[i, 0], a[i, 1], a[i, 2], a[i, 3], b0, b1, b2, b3, index, keys)
        nearest[i] = best & _INDEX_MASK
        first[i] = best >> _INDEX_BITS
        second[i] = runner_up >> _INDEX_BITS
    return nearest, first, second


@numba.njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _ratio_test_into(a, b, ratio, query, train, kept):
    """Rows of a (n, 4 words) whose nearest row of b is nearer than `ratio` times the
    second nearest, and those nearest rows, written to query/train from `kept` on; the
    new count. The test inside the search spares NumPy's passes over its outputs."""
    b0, b1, b2, b3, index, keys = _word_columns(b)
    for i in range(a.shape[0]):
        best, runner_up = _row_two_nearest(a[i, 0], a[i, 1], a[i, 2], a[i, 3], b0, b1, b2, b3, index, keys)
        if np.float64(best >> _INDEX_BITS) < ratio * np.float64(runner_up >> _INDEX_BITS):  # as NumPy compares
            query[kept] = i
            train[kept] = best & _INDEX_MASK
            kept += 1
    return kept


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _ratio_test_words(a: np.ndarray, b: np.ndarray, ratio: float):
    query = np.empty(a.shape[0], np.int64)
    train = np.empty(a.shape[0], np.int64)
    kept = _ratio_test_into(a, b, ratio, query, train, 0)
    return query[:kept], train[:kept]


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _ratio_test_many_words(words: np.ndarray, starts: np.ndarray, set_a: np.ndarray, set_b: np.ndarray,
                           ratio: float):
    """`_ratio_test_words` of pairs of sets stacked in `words` (set k: rows starts[k] to
    starts[k + 1]): all matches in order, and where each pair's end."""
    rows = 0
    for p in range(set_a.shape[0]):
        rows += starts[set_a[p] + 1] - starts[set_a[p]]
    query = np.empty(rows, np.int64)
    train = np.empty(rows, np.int64)
    ends = np.empty(set_a.shape[0], np.int64)
    kept = 0
    for p in range(set_a.shape[0]):
        a = words[starts[set_a[p]]:starts[set_a[p] + 1]]
        b = words[starts[set_b[p]]:starts[set_b[p] + 1]]
        kept = _ratio_test_into(a, b, ratio, query, train, kept)
        ends[p] = kept
    return query, train, ends


def two_nearest(descriptors_a: np.ndarray, descriptors_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each 32-byte descriptor (uint8 rows) of a: the row of b nearest by Hamming
    distance, that distance and the second-nearest distance. b needs at least two rows."""
    return _two_nearest_words(*_words(descriptors_a, descriptors_b))


def ratio_test(descriptors_a: np.ndarray, descriptors_b: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """(rows of a, their nearest rows of b) where `two_nearest` gives first < ratio × second."""
    return _ratio_test_words(*_words(descriptors_a, descriptors_b), float(ratio))


def ratio_test_many(pairs: Sequence[tuple[np.ndarray, np.ndarray]], ratio: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """`ratio_test` of each pair, in one compiled call: a thread verifying pairs gives up
    and takes back the GIL once for them all, not once per pair (waiting to take it back
    cost verification ~9 % of its matching time on 2 threads, docs/performance.md §2)."""
    for a, b in pairs:
        _words(a, b)  # the same checks as one pair at a time
    if not pairs:
        return []
    unique, set_a, set_b = _distinct_sets(pairs)
    words = np.concatenate([np.ascontiguousarray(d, dtype=np.uint8) for d in unique]).view(np.uint64)
    starts = np.zeros(len(unique) + 1, np.int64)
    np.cumsum([len(d) for d in unique], out=starts[1:])
    query, train, ends = _ratio_test_many_words(words, starts, set_a, set_b, float(ratio))
    begins = np.r_[0, ends[:-1]]
    return [(query[begin:end], train[begin:end]) for begin, end in zip(begins, ends)]


def _distinct_sets(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Each descriptor set once (an image takes part in many pairs), and each pair's two
    positions among them."""
    slot: dict[int, int] = {}
    unique: list[np.ndarray] = []
    for descriptors in (d for pair in pairs for d in pair):
        if id(descriptors) not in slot:
            slot[id(descriptors)] = len(unique)
            unique.append(descriptors)
    return (unique, np.array([slot[id(a)] for a, _ in pairs], np.int64),
            np.array([slot[id(b)] for _, b in pairs], np.int64))


def _words(descriptors_a: np.ndarray, descriptors_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if descriptors_a.shape[1] != 32 or descriptors_b.shape[1] != 32:
        raise ValueError(f"expected 32-byte binary descriptors, got {descriptors_a.shape[1]} and {descriptors_b.shape[1]} bytes")
    if len(descriptors_b) < 2:
        raise ValueError("the second-nearest neighbour needs at least two descriptors in b")
    return (np.ascontiguousarray(descriptors_a, dtype=np.uint8).view(np.uint64),
            np.ascontiguousarray(descriptors_b, dtype=np.uint8).view(np.uint64))


class ResidentDescriptors:
    """Descriptor sets copied to a device once and kept there, the least recently used
    given up first beyond `budget_bytes`. An image takes part in ~50 pairs of a batch, over
    many passes of `two_nearest_many`; sent with each, its bytes were most of the host's
    work per pass (a pass of 128 pairs holds ~128 distinct sets: copying them together
    cost ~15 µs per pair, one host thread's ~64k pairs/s, docs/performance.md §7). Sets are
    known by identity (a set held keeps its array alive, so the identity stays its own).
    Sets sent together share their device memory until the last of them is given up."""

    def __init__(self, device: str, budget_bytes: int):
        self.device, self.budget_bytes = device, budget_bytes
        self._held: OrderedDict[int, tuple[np.ndarray, object]] = OrderedDict()
        self._lock = threading.Lock()
        self.held_bytes = 0
        self.sent = 0  # sets copied to the device so far

    def tensors(self, sets: Sequence[np.ndarray]) -> list:
        """Each set (distinct arrays of uint8 rows) as a tensor on the device, the missing
        ones sent together; the others kept while the budget allows."""
        import torch

        with self._lock:
            missing = [d for d in sets if id(d) not in self._held]
            if missing:
                sent = torch.from_numpy(np.concatenate([np.ascontiguousarray(d, np.uint8) for d in missing]))
                for descriptors, tensor in zip(missing, sent.to(self.device).split([len(d) for d in missing])):
                    self._held[id(descriptors)] = (descriptors, tensor)
                    self.held_bytes += descriptors.nbytes
                self.sent += len(missing)
            tensors = []
            for descriptors in sets:
                self._held.move_to_end(id(descriptors))
                tensors.append(self._held[id(descriptors)][1])
            while self.held_bytes > self.budget_bytes and len(self._held) > len(sets):  # this call's stay
                _, (descriptors, _) = self._held.popitem(last=False)
                self.held_bytes -= descriptors.nbytes
            return tensors


def two_nearest_many(pairs: Sequence[tuple[np.ndarray, np.ndarray]], device: str,
                     pairs_per_pass: int = 128, kernel: str = "torch",
                     resident: ResidentDescriptors | None = None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """`two_nearest` of many pairs of descriptor sets at once, with PyTorch on `device` (a
    GPU): each distance is popcount(a) + popcount(b) - 2·(a·b) over the descriptors' 256
    bits, the products of a pass of `pairs_per_pass` pairs on the device together. Exact:
    the values are integers below 2,048, which float16 holds exactly. Same distances as
    `two_nearest`. kernel "torch": one batched matrix product and `topk`, the same nearest
    row wherever it is strictly nearest (a tie, first == second, is what no ratio test
    keeps); "triton": one fused kernel (`hamming_triton`), the same nearest row always.
    Each b needs at least two rows. `resident`: sets already on the device are not sent
    again (without it each pass sends its sets)."""
    import torch

    if kernel not in ("torch", "triton"):
        raise ValueError(f"unknown kernel {kernel!r}: use torch or triton")
    exact = torch.float16 if str(device).startswith("cuda") else torch.float32  # CPUs lack fast float16 products
    shifts = torch.arange(8, dtype=torch.uint8, device=device)
    resident = resident or ResidentDescriptors(device, 0)
    results: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    with torch.inference_mode():
        for start in range(0, len(pairs), pairs_per_pass):
            chunk = pairs[start:start + pairs_per_pass]
            # Each image's descriptors sent (and unpacked) once per pass, whatever its pairs.
            unique, set_a, set_b = _distinct_sets(chunk)
            index_a, index_b = torch.from_numpy(set_a).to(device), torch.from_numpy(set_b).to(device)
            lengths = torch.tensor([len(d) for d in unique], device=device)
            held = resident.tensors(unique)
            if kernel == "triton":
                from dedup_assets.vision.hamming_triton import two_nearest_pass

                starts = torch.from_numpy(np.cumsum([0] + [len(d) for d in unique[:-1]])).to(device)
                nearest, first, second = two_nearest_pass(torch.cat(held), starts, lengths, index_a, index_b)
            else:
                packed = torch.nn.utils.rnn.pad_sequence(held, batch_first=True)  # zero rows after each set
                rows = packed.shape[1]
                bits = ((packed[..., None] >> shifts) & 1).reshape(len(unique), rows, 256).to(exact)
                counts = bits.sum(-1)
                # Padding rows lie farther than any real descriptor (at most 256 bits away).
                counts[torch.arange(rows, device=device)[None] >= lengths[:, None]] = 1024
                products = torch.bmm(bits[index_a], bits[index_b].transpose(1, 2))
                distances = counts[index_a][:, :, None] + counts[index_b][:, None, :] - 2 * products
                best, closest = distances.topk(2, dim=-1, largest=False)
                nearest, first, second = closest[..., 0], best[..., 0], best[..., 1]
            nearest, first, second = (t.to(torch.int64).cpu().numpy() for t in (nearest, first, second))
            for k, (a, _) in enumerate(chunk):
                n = len(a)
                results.append((nearest[k, :n], first[k, :n], second[k, :n]))
    return results


# Stored hashes compared with every query at once: 16 KB of hashes stay in L1 while each
# query's distances are counted (vectorised), then only the few within the radius are ranked.
_HASH_BLOCK = 2048


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _nearest_hashes(query_hashes, query_colours, query_keys, hashes, colours, keys, radius, max_colour, limit,
                    found, found_scores, found_keys, found_hamming, found_colour):
    """For each query, the `limit` stored rows of least score among those within `radius`
    bits whose colour distance (mean |Δ| per byte) is at most `max_colour`, skipping rows
    of the query's own key; the score is hamming / (radius + 1) + colour / max_colour, ties
    to the lower key. Results go into the (queries, limit) arrays, -1 where fewer."""
    colour_bytes = query_colours.shape[1]
    colour_scale = 1.0 / max(max_colour, 1e-9)
    distances = np.empty(_HASH_BLOCK, np.uint64)
    counts = np.zeros(len(query_hashes), np.int64)
    worst = np.zeros(len(query_hashes), np.int64)  # the slot to replace once full
    for start in range(0, len(hashes), _HASH_BLOCK):
        stop = min(start + _HASH_BLOCK, len(hashes))
        for q in range(len(query_hashes)):
            word = query_hashes[q]
            for j in range(stop - start):
                distances[j] = _popcount(word ^ hashes[start + j])
            for j in range(stop - start):
                if distances[j] > radius:
                    continue
                r = start + j
                if keys[r] == query_keys[q]:
                    continue
                total = 0
                for c in range(colour_bytes):
                    total += abs(np.int64(query_colours[q, c]) - np.int64(colours[r, c]))
                colour = np.float32(total / colour_bytes)
                if colour > max_colour:
                    continue
                score = distances[j] / (radius + 1.0) + colour * colour_scale
                if counts[q] < limit:
                    slot = counts[q]
                    counts[q] += 1
                elif score < found_scores[q, worst[q]] or (
                        score == found_scores[q, worst[q]] and keys[r] < found_keys[q, worst[q]]):
                    slot = worst[q]
                else:
                    continue
                found[q, slot], found_scores[q, slot], found_keys[q, slot] = r, score, keys[r]
                found_hamming[q, slot], found_colour[q, slot] = distances[j], colour
                if counts[q] == limit:
                    w = 0
                    for s in range(1, limit):
                        if found_scores[q, s] > found_scores[q, w] or (
                                found_scores[q, s] == found_scores[q, w] and found_keys[q, s] > found_keys[q, w]):
                            w = s
                    worst[q] = w


def nearest_hashes(query_hashes: np.ndarray, query_colours: np.ndarray, query_keys: np.ndarray,
                   hashes: np.ndarray, colours: np.ndarray, keys: np.ndarray,
                   radius: int, max_colour: float, limit: int, threads: int = 0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(query, row, hamming, colour distance) of each query's `limit` nearest stored
    64-bit hashes within `radius` bits and `max_colour` (see `_nearest_hashes`). Keys are
    int64 codes ordered as the names they stand for: equal keys never pair, and ties go
    to the lower key. Memory: `limit` results per query, however many rows match.
    threads: the queries split among them (0: one per usable core)."""
    n = len(query_hashes)
    found = np.full((n, limit), -1, np.int64)
    scores = np.zeros((n, limit), np.float64)
    found_keys = np.zeros((n, limit), np.int64)
    hamming = np.zeros((n, limit), np.int32)
    colour = np.zeros((n, limit), np.float32)
    if n and len(hashes) and limit > 0:
        query_hashes, query_colours, query_keys = (np.ascontiguousarray(query_hashes, np.uint64),
                                                   np.ascontiguousarray(query_colours, np.uint8),
                                                   np.ascontiguousarray(query_keys, np.int64))
        stored = (np.ascontiguousarray(hashes, np.uint64), np.ascontiguousarray(colours, np.uint8),
                  np.ascontiguousarray(keys, np.int64))

        def search(part: slice) -> None:  # each thread fills its own queries' rows
            _nearest_hashes(query_hashes[part], query_colours[part], query_keys[part], *stored,
                            np.uint64(radius), np.float32(max_colour), limit,
                            found[part], scores[part], found_keys[part], hamming[part], colour[part])

        bounds = np.linspace(0, n, min(threads or usable_cores(), n) + 1).astype(int)
        with ThreadPoolExecutor(len(bounds) - 1) as pool:
            list(pool.map(search, [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]))
    query, slot = np.nonzero(found >= 0)
    return query.astype(np.int64), found[query, slot], hamming[query, slot], colour[query, slot]
