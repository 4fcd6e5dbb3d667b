"""GPU rates and the 3M-image estimate: float16 embeddings, verification (ORB's ratio
tests, in the fused Triton kernel and PyTorch's path, torch-orb's features described on
the device, ALIKED many pairs per pass, LightGlue one pair at a time), ORB's fits screened
and fitted on the device (vision/consensus.py, beside every fit on the host) and the exact
embedding search on the GPU
(faiss-gpu where installed, else PyTorch), each beside its CPU counterpart measured in
the same run (ORB for verification), with the GPU named next to the figures.

    .venv/bin/python bench/gpu.py [--device cuda] [--images 4096] [--pairs 2000] [--glue-pairs 500]
                                  [--vectors 1000000] [--batch 1000] [--skip hash,aliked,lightglue,torch-orb,kernel,screen,search,reads] [--scaling]

The images are the cascade bench set (1,000 JPEGs of ~1200 px, 40 % edited copies,
generated once under $DEDUP_HOME/bench/cascade_1000), decoded to thumbnails once and
repeated up to --images. Pairs to verify are what the pipeline would send: each image's
embedding neighbours above cosine 0.5; describing and matching are timed apart and
combined at the pipeline's 25 pairs per image.
Without CUDA it runs on the CPU (a smoke test: --device cpu --images 64 --pairs 40
--glue-pairs 4 --vectors 20000). Each measurement that fails (a package or weights
missing on the host) prints why and the run goes on; the estimate then names what it lacks.
"""

from __future__ import annotations

import argparse
import inspect
import os
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faiss
import numpy as np

from dedup_assets.settings import apply_defaults

CORPUS = 3_000_000
PAIRS_PER_IMAGE = 25  # measured on look-alike collections (docs/performance.md, bench/cascade.py)
BATCH = 1000  # images per partition


def synchronised(device: str):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def rate(count: int, work, device: str = "cpu", repeats: int = 3) -> float:
    """Best of `repeats` (after one warm-up), in items per second."""
    work()
    synchronised(device)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        synchronised(device)
        best = min(best, time.perf_counter() - started)
    return count / best


def measured(label: str, work):
    """work(), or None after printing why it could not be measured."""
    try:
        return work()
    except Exception as error:  # a host without one package still measures the rest
        print(f"{label}: not measured ({type(error).__name__}: {str(error).strip()[:300]})", flush=True)
        traceback.print_exc(limit=3)
        return None


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return f"CPU only ({os.cpu_count()} cores)"


def bench_set_thumbnails(count: int) -> tuple[Path, list[np.ndarray]]:
    from dedup_assets.demo_data import build_cascade_bench_set
    from dedup_assets.vision.decode import decode_thumbnail

    folder = Path(os.environ["DEDUP_HOME"]) / "bench" / "cascade_1000"
    if len(list(folder.iterdir()) if folder.exists() else []) != 1000:
        print(f"generating 1000 images in {folder} ...", flush=True)
        build_cascade_bench_set(folder, count=1000)
    files = sorted(folder.iterdir())
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        decoded = list(pool.map(lambda path: decode_thumbnail(path.read_bytes()).thumbnail, files))
    return folder, [decoded[i % len(decoded)] for i in range(count)]


def folder_inventory(folder: Path):
    """The bench set as the hash stage gets it: (its source, its inventory)."""
    from dedup_assets.ledger import _to_frame
    from dedup_assets.sources.local import LocalFolderSource

    source = LocalFolderSource(folder)
    return source, _to_frame(source.iter_blobs())


def hash_stage_rate(folder: Path, scratch: str, workers: int = 0):
    """The wavelet_hashes stage on every core of this host (it is CPU work); its last
    run's hashes and thumbnails stay in `scratch` for the embeddings stage."""
    from dedup_assets.hash_stage import hash_blobs
    from dedup_assets.storage import StorageLayout

    source, inventory = folder_inventory(folder)
    layout = StorageLayout(scratch)
    results = []
    per_s = rate(inventory.height, lambda: results.append(hash_blobs(source, inventory, layout, workers=workers)),
                 repeats=1)  # workers 0: one per core
    return per_s, results[-1].hashes, layout


def hash_stage_costs(folder: Path, workers: int = 0) -> tuple[float, float]:
    """(seconds per batch, seconds per image) of the hash stage, from batches of a quarter
    of the bench set and of all of it, each into a fresh data root (thumbnails written).
    Starting the worker processes is a cost per batch: on one H200 host 400 images took
    1.5-1.65 s and 1,000 took 1.76-1.95 s, so one batch size's rate misjudges another's."""
    from dedup_assets.hash_stage import hash_blobs
    from dedup_assets.storage import StorageLayout

    source, inventory = folder_inventory(folder)

    def seconds(rows: int) -> float:
        best = float("inf")
        for _ in range(2):
            with tempfile.TemporaryDirectory() as scratch:
                started = time.perf_counter()
                hash_blobs(source, inventory.head(rows), StorageLayout(scratch), workers=workers)
                best = min(best, time.perf_counter() - started)
        return best

    quarter, whole = inventory.height // 4, inventory.height
    quarter_s, whole_s = seconds(quarter), seconds(whole)
    per_image = max((whole_s - quarter_s) / (whole - quarter), 0.0)
    return max(whole_s - per_image * whole, 0.0), per_image


def embedding_stage_rate(hashes, layout, device: str, batch_size: int) -> float:
    """The embeddings stage as the asset runs it: stored thumbnails decoded, then embedded."""
    from dedup_assets.embedding_stage import cached_embedder, embed_batch

    embedder = cached_embedder("efficientnet_lite0", None, device)  # the asset's default runtime there
    return rate(hashes.height, lambda: embed_batch(hashes, layout, embedder, batch_size), device)


def embedding_rates(thumbnails: list[np.ndarray], device: str, batch_size: int) -> tuple[dict[str, float], np.ndarray]:
    from dedup_assets.embedding_stage import cached_embedder
    from dedup_assets.vision.embedders import load_efficientnet_lite0

    rates = {}
    embedder = load_efficientnet_lite0(device)  # float16 on CUDA
    precision = "float16" if embedder.half else "float32"
    outputs = []  # the timed passes' vectors: the candidate pairs come from them

    def embed_all() -> None:
        outputs[:] = [embedder.embed(thumbnails, batch_size=batch_size)]

    # The first entry is the device's default precision: the estimate uses it.
    rates[f"PyTorch {precision}, {device}"] = rate(len(thumbnails), embed_all, device)
    vectors = outputs[0]
    if embedder.half:
        embedder.model, embedder.half = embedder.model.float(), False
        rates[f"PyTorch float32, {device} (baseline)"] = rate(
            len(thumbnails), lambda: embedder.embed(thumbnails, batch_size=batch_size), device)
    on_cpu = measured("embeddings on the CPU", lambda: cached_embedder("efficientnet_lite0", None, "cpu"))
    if on_cpu is not None:  # the CPU default: OpenVINO where installed, else ONNX Runtime
        sample = thumbnails[: min(len(thumbnails), 256)]
        rates[f"{on_cpu.runtime} float32, CPU ({os.cpu_count()} cores, the CPU default)"] = rate(
            len(sample), lambda: on_cpu.embed(sample, batch_size=8), repeats=1)
    return rates, vectors.astype(np.float32)


def candidate_pairs(vectors: np.ndarray, count: int) -> np.ndarray:
    """The pipeline's embedding candidates (nearest neighbours above cosine 0.5)."""
    distinct = vectors[: min(len(vectors), 1000)]  # the thumbnails repeat after 1,000
    similarities, neighbours = faiss.knn(distinct, distinct, PAIRS_PER_IMAGE + 1, faiss.METRIC_INNER_PRODUCT)
    rows = np.repeat(np.arange(len(distinct)), PAIRS_PER_IMAGE + 1)
    keep = (neighbours.ravel() > rows) & (similarities.ravel() >= 0.5)
    pairs = np.stack([rows[keep], neighbours.ravel()[keep]], axis=1)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))][:count]  # sorted by image, as verify_pairs gets them


def verification_rates(verifier, thumbnails, pairs, workers: int, device: str,
                       opencv_threads_off: bool = True, describers: int | None = None) -> tuple[float, float]:
    """(images described per second, pairs matched per second): verify_pairs describes each
    image of a batch once, then matches its pairs. Timed apart, because a sample of pairs
    has far fewer pairs per described image than a batch (25). A verifier taking pairs
    many at a time (ALIKED) is given them as verify_pairs gives them: images prepared on
    the threads and described together, pairs matched together, fits on the threads.
    OpenCV's own threads are off while several of ours run, as in verify_pairs
    (opencv_threads_off False: left as the caller set them). `describers`: threads that
    describe (verify_pairs: every core), if not `workers`; with more of them, ORB's ratio
    tests run on them too and only the fits on `workers`, as in verify_pairs (there a slice
    ahead of the fits; here one after the other, so the rate is the lower bound)."""
    import contextlib

    from dedup_assets.verify_stage import PAIRS_PER_GROUP, matches_on_describing_threads
    from dedup_assets.vision.decode import opencv_single_threaded

    images = sorted({int(i) for i in pairs.ravel()})
    threads_setting = opencv_single_threaded if opencv_threads_off and max(workers, describers or 1) > 1 \
        else contextlib.nullcontext
    batched = getattr(verifier, "batches_pairs", False)
    describes_many = hasattr(verifier, "describe_many")
    matching_apart = matches_on_describing_threads(verifier, workers, describers or workers)

    def described_image(index: int):
        prepared = verifier.prepare(thumbnails[index])
        if not describes_many:
            verifier.describe(prepared)  # as verify_pairs: features once per image, kept for its pairs
        return prepared

    def describe() -> dict:
        with ThreadPoolExecutor(describers or workers, initializer=faiss.omp_set_num_threads, initargs=(1,)) as pool, \
                threads_setting():
            prepared = dict(zip(images, pool.map(described_image, images)))
            if describes_many:  # torch-orb equalises on the threads it is given, as in verify_many
                takes_map = "map_" in inspect.signature(verifier.describe_many).parameters
                verifier.describe_many(list(prepared.values()), *((pool.map,) if takes_map else ()))
        return prepared

    described = [describe()]  # the warm-up's, for the warm-up match
    describe_per_s = rate(len(images), lambda: described.append(describe()), device, repeats=1)

    def match() -> None:
        prepared = described[-1]
        with ThreadPoolExecutor(workers, initializer=faiss.omp_set_num_threads, initargs=(1,)) as pool, \
                threads_setting():
            if batched:
                verifier.verify_many([(prepared[int(a)], prepared[int(b)]) for a, b in pairs], pool.map)
            elif matching_apart:
                jobs = [(prepared[int(a)], prepared[int(b)]) for a, b in pairs]
                groups = [jobs[g:g + PAIRS_PER_GROUP] for g in range(0, len(jobs), PAIRS_PER_GROUP)]
                with ThreadPoolExecutor(describers) as matching:
                    matched = list(matching.map(verifier.match_many, groups))
                list(pool.map(lambda group: verifier.fit_many(*group, map), zip(groups, matched)))
            else:
                list(pool.map(lambda pair: verifier.verify_prepared(prepared[int(pair[0])], prepared[int(pair[1])]),
                              pairs))

    return describe_per_s, rate(len(pairs), match, device, repeats=1)


def batch_verification(hashes, layout, folder: Path, vectors: np.ndarray, device: str,
                       verifier_name: str = "orb", **options) -> tuple[float, int, int, int, int]:
    """verify_pairs over the bench set's whole batch, as `verified_pairs` runs it: the hash
    stage's stored thumbnails and rows, the pipeline's embedding candidates (its own search,
    `embedding_pairs`: ~25 pairs per image on this look-alike set), the default verifier and
    threads (on a many-core host: describing and ORB's ratio tests on every core, a slice
    ahead of the fits), or `verifier_name`'s (with `load_verifier`'s `options`). Its
    describing, matching and fitting overlap, which rates timed apart cannot show.
    (seconds, images, pairs, verifying threads, describing threads); every image's
    features described anew."""
    import polars as pl

    from dedup_assets.verify_stage import describing_threads, embedding_pairs, verification_threads, verify_pairs
    from dedup_assets.vision.cascade import CascadePolicy
    from dedup_assets.vision.verify import load_verifier

    # The thumbnails embedded are the set's files in order (repeated past 1,000): with
    # fewer (--images below 1,000), the batch is those first images.
    names = [path.name for path in sorted(folder.iterdir())][:len(vectors)]
    batch = pl.DataFrame({"blob_name": names,
                          "embedding": [vector.tobytes() for vector in vectors[:len(names)].astype("<f2")]})
    candidates = embedding_pairs(batch, [batch], 0.5).select(
        "blob_a", "blob_b", pl.lit("embedding").alias("found_by"), "cosine")
    features = hashes.select("blob_name", "wavelet_hash", "color_signature", "thumbnail")
    missing = set(names) - set(features["blob_name"])
    if missing:
        raise ValueError(f"{len(missing)} bench images not among the hash stage's rows, e.g. {sorted(missing)[:2]}")
    verifier, workers = load_verifier(verifier_name, device, **options), verification_threads()
    started = time.perf_counter()
    verify_pairs(candidates, features, layout, verifier, CascadePolicy(), workers, keep_features=False)
    return (time.perf_counter() - started, len(names), candidates.height, workers,
            describing_threads(verifier, workers))


def device_matching_rate(verifier, thumbnails, pairs, device: str) -> float:
    """Pairs per second through a batched verifier's matching on the device alone (the
    rest of `verify_many` is the host's fits; ORB's describing is the host's too)."""
    prepared = {int(i): verifier.prepare(thumbnails[int(i)]) for i in np.unique(pairs)}
    if hasattr(verifier, "describe_many"):
        verifier.describe_many(list(prepared.values()))
    else:
        for image in prepared.values():
            verifier.describe(image)
    jobs = [(prepared[int(a)], prepared[int(b)]) for a, b in pairs]
    return rate(len(pairs), lambda: verifier.match_many(jobs), device)


def ratio_kernel_rates(device: str, images: int = 256, pairs_count: int = 1024,
                       descriptors: int = 1000) -> dict[str, float]:
    """Pairs per second of ORB's two-nearest search on the device (`two_nearest_many`, the
    verifier's call, packing on the host included): the fused Triton kernel against the
    batched product and `topk` (the baseline, the path before it), on random descriptor
    sets of ORB's 1,000 rows; then the kernel alone at other tile sizes. Raises if the two
    disagree on any distance or strict nearest row."""
    import torch

    from dedup_assets.vision.hamming import two_nearest_many
    from dedup_assets.vision.hamming_triton import two_nearest_pass

    rng = np.random.default_rng(0)
    sets = [rng.integers(0, 256, (descriptors, 32), dtype=np.uint8) for _ in range(images)]
    chosen = rng.integers(0, images, (pairs_count, 2))
    pairs = [(sets[a], sets[b]) for a, b in chosen if a != b]
    found = {kernel: two_nearest_many(pairs, device, 256, kernel) for kernel in ("triton", "torch")}
    for (n1, f1, s1), (n2, f2, s2) in zip(found["triton"], found["torch"]):
        strictly = f2 < s2
        if not (np.array_equal(f1, f2) and np.array_equal(s1, s2) and np.array_equal(n1[strictly], n2[strictly])):
            raise AssertionError("the Triton kernel and PyTorch's search disagree")
    rates = {f"{kernel}, 256 pairs per pass, host packing included": rate(
        len(pairs), lambda kernel=kernel: two_nearest_many(pairs, device, 256, kernel), device)
        for kernel in ("torch", "triton")}
    # The kernel alone on one pass's tensors already on the device, at other tile sizes.
    stacked = torch.from_numpy(np.concatenate(sets)).to(device)
    starts = torch.arange(images, device=device) * descriptors
    lengths = torch.full((images,), descriptors, device=device)
    set_a, set_b = (torch.from_numpy(chosen[:256, k]).to(device) for k in (0, 1))
    for block_m, block_n, warps in ((64, 64, 4), (128, 64, 4), (128, 64, 8), (64, 128, 4), (128, 128, 8)):
        rates[f"triton kernel alone, tiles {block_m}x{block_n}, {warps} warps"] = rate(
            len(set_a), lambda: two_nearest_pass(stacked, starts, lengths, set_a, set_b, block_m, block_n, warps),
            device)
    return rates


def fit_rates(thumbnails, pairs, device: str, threads: int) -> dict:
    """ORB's fits of the same matched pairs three ways: every pair fitted on the host's
    threads by USAC_MAGSAC (the baseline), the screen on `device` first (pairs no
    homography could pass rejected there, the rest fitted on the host), and every
    screened pair fitted on `device` (`fits_on_device`: the host measures only the fits
    with enough inliers). Pairs/s of each, the decisions that differ from the baseline's,
    the pairs each decided on the device, and the device's part alone (the screen with and
    without its refits, the fits), so a run shows which of them would bound verification."""
    from dedup_assets.vision.cascade import CascadePolicy, decide
    from dedup_assets.vision.consensus import best_homographies, most_consistent
    from dedup_assets.vision.decode import opencv_single_threaded
    from dedup_assets.vision.verify import OrbVerifier

    verifier = OrbVerifier()  # described and matched once, on the host: the same matches for each
    prepared = {int(i): verifier.prepare(thumbnails[int(i)]) for i in np.unique(pairs)}
    for image in prepared.values():
        verifier.describe(image)
    jobs = [(prepared[int(a)], prepared[int(b)]) for a, b in pairs]
    matched = verifier.match_many(jobs)
    policy = CascadePolicy()
    ways = {"host": (None, False), "screen": (device, False), "device": (device, True)}
    results, rates = {}, {}

    def fits(way: str) -> None:
        verifier.screen_device, verifier.fits_on_device = ways[way]
        with ThreadPoolExecutor(threads, initializer=faiss.omp_set_num_threads, initargs=(1,)) as pool, \
                opencv_single_threaded():
            results[way] = verifier.fit_many(jobs, matched, pool.map)

    for way in ways:
        rates[way] = rate(len(jobs), lambda: fits(way), device, repeats=1)
    decided = {way: [decide(99, 99.0, 0.0, False, False, result, policy).is_duplicate for result in results[way]]
               for way in ways}
    figures = {"rates": rates,
               "different": {way: sum(x != y for x, y in zip(decided["host"], decided[way])) for way in ways},
               "screen rejected": sum(result.method == "screen" for result in results["screen"]),
               "fitted on the device": sum(result.method == "device" for result in results["device"])}
    points = [(a.features[0][found[0]], b.features[0][found[1]]) for (a, b), found in zip(jobs, matched)
              if found is not None and len(found[0]) >= verifier.min_inliers]
    points_a, points_b = [a for a, _ in points], [b for _, b in points]
    figures["alone"] = {
        "the screen": rate(len(jobs), lambda: most_consistent(points_a, points_b, device), device, repeats=1),
        "the screen without its refits": rate(len(jobs), lambda: most_consistent(points_a, points_b, device,
                                                                                 refits=0), device, repeats=1),
        "the fits": rate(len(jobs), lambda: best_homographies(points_a, points_b, device), device, repeats=1)}
    return figures


def thread_scaling(folder: Path, thumbnails, pairs) -> None:
    """How the host's CPU stages scale with threads and processes: ORB describing and
    matching at 1, 2, 4, ... threads, with OpenCV's own threads left on and set to 1, and
    the hash stage at as many worker processes. (On one H200 host's 16 cores, describing on
    16 threads went from 683 to 1,064 images/s with OpenCV's threads off, which the
    pipeline now does; the hash stage's 16 processes ran 4.6x one: docs/performance.md §7.)"""
    import cv2

    from dedup_assets.vision.verify import load_verifier

    counts = sorted({1, 2, 4, 8, os.cpu_count() or 1} & set(range(1, (os.cpu_count() or 1) + 1)))
    default_threads = cv2.getNumThreads()
    orb = load_verifier("orb", "cpu")
    for opencv_threads in (default_threads, 1):
        cv2.setNumThreads(opencv_threads)
        for workers in counts:
            described, matched = verification_rates(orb, thumbnails, pairs, workers, "cpu", opencv_threads_off=False)
            print(f"  ORB, {workers:>2} threads, OpenCV threads {opencv_threads:>2}: describes {described:,.0f} "
                  f"images/s, matches {matched:,.0f} pairs/s", flush=True)
    cv2.setNumThreads(default_threads)
    for workers in counts:
        with tempfile.TemporaryDirectory() as scratch:
            print(f"  hash stage, {workers:>2} worker processes: {hash_stage_rate(folder, scratch, workers)[0]:,.0f} "
                  "images/s", flush=True)


def per_image_verification(describe_per_s: float, match_per_s: float) -> float:
    """Images verified per second at the pipeline's pairs per image."""
    return 1 / (1 / describe_per_s + PAIRS_PER_IMAGE / match_per_s)


def search_rates(count: int, queries: int, device: str, dim: int = 1280) -> dict[str, float]:
    """One batch of `queries` new embeddings searched exactly (k = 32) against `count`
    stored ones arriving in the pipeline's chunks, through the pipeline's own
    `streamed_neighbours`: on the GPU (faiss-gpu where installed, else PyTorch on CUDA,
    float16 shipped and widened there) and on the CPU (against a tenth, scaled). Query x
    stored-vector comparisons per second."""
    from dedup_assets.corpus import StoredVectors, grouped
    from dedup_assets.vision.search import REFERENCE_BLOCK, _gpu_available, held_vectors_device, streamed_neighbours

    rng = np.random.default_rng(5)
    stored = rng.standard_normal((count, dim), dtype=np.float32)
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    stored = stored.astype(np.float16)  # as stored, and as the pipeline's search gets them
    # Edited copies of stored vectors (cosine ~0.94 to their original), so the floor keeps pairs.
    batch = stored[rng.integers(0, count, queries)] + 0.01 * rng.standard_normal((queries, dim), dtype=np.float32)
    batch /= np.linalg.norm(batch, axis=1, keepdims=True)

    def search(vectors: np.ndarray, use_gpu: bool | None):
        chunks = (vectors[i:i + REFERENCE_BLOCK] for i in range(0, len(vectors), REFERENCE_BLOCK))
        return streamed_neighbours(batch, chunks, 0.5, 32, use_gpu=use_gpu)

    rates = {}
    subset = stored[: max(queries, count // 10)]
    cpu_pairs = []
    rates["CPU exact float32, the pipeline's (baseline)"] = rate(
        queries, lambda: cpu_pairs.append(search(subset, False)), repeats=1) * len(subset)
    if device.startswith("cuda"):
        engine = "faiss-gpu flat" if _gpu_available() else "PyTorch float32 on CUDA (float16 shipped)"
        found = search(subset, None)  # the same pairs as on the CPU?
        same = set(zip(found.query.tolist(), found.reference.tolist())) == \
            set(zip(cpu_pairs[-1].query.tolist(), cpu_pairs[-1].reference.tolist()))
        print(f"search on {device} ({engine}) finds the CPU search's pairs: {same} "
              f"({len(found.query):,} pairs)", flush=True)
        rates[f"{engine}, the pipeline's on {device}"] = rate(queries, lambda: search(stored, None), device) * count
        if held_vectors_device() is not None:  # stored vectors held on the device between batches
            import polars as pl
            import torch

            parts = [StoredVectors(pl.Series([""] * len(rows)), torch.from_numpy(rows).to(device))
                     for rows in (stored[i:i + queries] for i in range(0, count, queries))]  # a partition per batch
            rates[HELD_ON_DEVICE] = rate(queries, lambda: streamed_neighbours(
                batch, (group.vectors for group in grouped(parts, REFERENCE_BLOCK, StoredVectors.joined)), 0.5, 32),
                device) * count
    return rates


HELD_ON_DEVICE = "PyTorch float32 on CUDA, stored float16 held on the device between batches"


def joined_and_widened(frame) -> np.ndarray:
    """How stored embeddings were read before the sixteenth session (the baseline): a
    Python bytes object per row, joined, widened to float32 on the host."""
    raw = b"".join(frame["embedding"].to_list())
    return np.frombuffer(raw, "<f2").reshape(frame.height, -1).astype(np.float32)


def stored_read_rates(partitions_count: int = 20, dim: int = 1280) -> dict[str, float]:
    """Stored embeddings read back per second as the cross-batch search reads them
    (Parquet partitions of BATCH float16 vectors, from the page cache), on the host CPU,
    and as they were read before. Every batch reads every stored embedding once, whatever
    the device; held in the process between batches (`corpus.ResidentEmbeddings`, the
    budget set to hold them all), a later batch scans them from memory instead."""
    import polars as pl

    from dedup_assets.corpus import ResidentEmbeddings, StoredVectors, embeddings_matrix, grouped, partitions
    from dedup_assets.storage import StorageLayout
    from dedup_assets.vision.search import REFERENCE_BLOCK

    rng = np.random.default_rng(6)
    with tempfile.TemporaryDirectory() as home:
        layout = StorageLayout(home)
        for index in range(partitions_count):
            vectors = rng.standard_normal((BATCH, dim), dtype=np.float32).astype("<f2")
            frame = pl.DataFrame({"blob_name": [f"{index}/{i}.jpg" for i in range(BATCH)],
                                  "embedding": [vector.tobytes() for vector in vectors]})
            layout.write_parquet(frame, layout.partition_path("embeddings", f"batch-{index:06d}"))
        readers = {"from Parquet, float16 as stored, reinterpreted by polars (the pipeline's)":
                   lambda frame: embeddings_matrix(frame, dtype=np.float16),
                   "from Parquet, bytes joined and widened on the host (before, baseline)": joined_and_widened}
        rates = {}
        for label, read in readers.items():
            rates[label] = rate(BATCH * partitions_count, lambda: sum(
                len(read(frame)) for frame in partitions(layout, "embeddings", ["blob_name", "embedding"])))
        resident = ResidentEmbeddings()
        rates[RESIDENT_READS] = rate(BATCH * partitions_count, lambda: sum(  # grouped as the search groups them
            len(group.vectors) for group in grouped(resident.partitions(layout, 2**40), REFERENCE_BLOCK,
                                                    StoredVectors.joined)))
        return rates


RESIDENT_READS = "held in the process between batches (resident_embeddings_mb: all of them)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="cuda, cuda:N or cpu (auto: cuda where available)")
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--glue-pairs", type=int, default=500, help="of those, matched by LightGlue (slow)")
    parser.add_argument("--skip", default="", help="comma-separated: hash, aliked, lightglue, torch-orb, kernel, "
                        "screen (the fits three ways), search, reads")
    parser.add_argument("--scaling", action="store_true",
                        help="also ORB verification and the hash stage at 1, 2, 4, ... threads/processes")
    parser.add_argument("--vectors", type=int, default=1_000_000, help="stored embeddings searched")
    parser.add_argument("--batch", type=int, default=BATCH,
                        help="images per batch (DEDUP_BATCH_SIZE): the search's queries, and the estimate's")
    args = parser.parse_args()
    apply_defaults()
    from dedup_assets.verify_stage import describing_threads, verification_threads
    from dedup_assets.vision.embedders import resolve_device
    from dedup_assets.vision.verify import load_verifier

    device = resolve_device(args.device)
    print(f"device: {device_name(device)}; host: {os.cpu_count()} CPU cores\n", flush=True)
    folder, thumbnails = bench_set_thumbnails(args.images)
    scratch = tempfile.TemporaryDirectory()

    skip = set(filter(None, args.skip.split(",")))
    hashed = None if "hash" in skip else measured("hash stage", lambda: hash_stage_rate(folder, scratch.name))
    if hashed:
        print(f"hash stage (CPU, {os.cpu_count()} workers): {hashed[0]:,.0f} images/s", flush=True)
    hash_costs = None if "hash" in skip else measured("hash stage's costs", lambda: hash_stage_costs(folder))
    if hash_costs:
        print(f"hash stage: {hash_costs[0]:.2f} s per batch + {hash_costs[1] * 1000:.3f} ms per image "
              f"(batches of 250 and 1,000 images)", flush=True)

    embedded = measured("embeddings", lambda: embedding_rates(thumbnails, device, args.batch_size))
    embeddings, vectors = embedded or ({}, None)
    for label, value in embeddings.items():
        print(f"embeddings, {label}: {value:,.0f} images/s", flush=True)
    stage_per_s = measured("embeddings stage", lambda: embedding_stage_rate(hashed[1], hashed[2], device,
                                                                             args.batch_size)) if hashed else None
    if stage_per_s:
        print(f"embeddings stage on {device} (stored thumbnails decoded on {os.cpu_count()} threads, "
              f"then embedded, {args.batch_size} per pass): {stage_per_s:,.0f} images/s", flush=True)

    verify_rates = {}
    batch_verified = None  # (images/s, pairs per image, verifier) of verify_pairs over the bench batch, the fastest
    # The pipeline's threads (verified_pairs.workers: 0; ORB describes on every core); --scaling tries others.
    threads = verification_threads()
    if vectors is not None:
        pairs = candidate_pairs(vectors, args.pairs)
        aliked = None if "aliked" in skip else measured("ALIKED", lambda: load_verifier("aliked", device))
        # Below this many keypoints in either image a pair that fails by features is aligned
        # densely (~50 ms of host CPU): ORB's limit, the default (hard-set F1 0.998), and a
        # lower one for ALIKED's sparser detector (F1 0.995, docs/performance.md §7).
        for limit in (aliked.low_texture_keypoints, 64) if aliked is not None else ():
            aliked.low_texture_keypoints = limit
            label = (f"ALIKED-n16 batched on {device} (dense below {limit} keypoints), "
                     f"fits on {threads} threads")
            verify_rates[label] = measured("ALIKED", lambda: verification_rates(
                aliked, thumbnails, pairs, threads, device, describers=describing_threads(aliked, threads)))
        if aliked is not None:
            matching = measured("ALIKED matching", lambda: device_matching_rate(aliked, thumbnails, pairs, device))
            if matching:
                print(f"ALIKED: matching alone on {device} ({aliked.pairs_per_pass} pairs per pass): "
                      f"{matching:,.0f} pairs/s", flush=True)
        if "lightglue" not in skip:
            # A GPU runs one pair at a time well; two threads overlap the host-side RANSAC.
            verify_rates[f"LightGlue (DISK 1024) on {device}"] = measured("LightGlue", lambda: verification_rates(
                load_verifier("lightglue", device), thumbnails, pairs[: args.glue_pairs],
                2 if device != "cpu" else 1, device))
        orb = measured("ORB", lambda: load_verifier("orb", device))
        if orb is not None and orb.batches_pairs:
            verify_rates[f"ORB, ratio tests batched on {device}, describing on {describing_threads(orb, threads)} "
                         f"threads, fits on {threads}"] = \
                measured("ORB on the device", lambda: verification_rates(
                    orb, thumbnails, pairs, threads, device, describers=describing_threads(orb, threads)))
            matching = measured("ORB matching", lambda: device_matching_rate(orb, thumbnails, pairs, device))
            if matching:
                print(f"ORB: ratio tests alone on {device} ({orb.pairs_per_pass} pairs per pass, "
                      f"{orb.ratio_kernel} search): {matching:,.0f} pairs/s", flush=True)
            kernels = None if "kernel" in skip else measured("ratio test kernels", lambda: ratio_kernel_rates(device))
            for label, value in (kernels or {}).items():
                print(f"ORB's two-nearest search on {device}, {label}: {value:,.0f} pairs/s (1,000 x 1,000 "
                      "descriptors; torch: the baseline)", flush=True)
        if orb is not None and orb.fits_on_device:
            label = f"ORB batched on {device}, fits screened there and the rest on the host (before device fits)"
            verify_rates[label] = measured("ORB without device fits", lambda: verification_rates(
                load_verifier("orb", device, device_fits=False), thumbnails, pairs, threads, device,
                describers=describing_threads(orb, threads)))
        if orb is not None and orb.screen_device:
            verify_rates[f"ORB batched on {device} without the fit screen (before it)"] = measured(
                "ORB without the screen", lambda: verification_rates(load_verifier("orb", device, screen_fits=False),
                                                                     thumbnails, pairs, threads, device,
                                                                     describers=describing_threads(orb, threads)))
        fitting = None if "screen" in skip else measured(
            "fits", lambda: fit_rates(thumbnails, pairs, device, threads))
        if fitting:
            rates, different = fitting["rates"], fitting["different"]
            print(f"ORB's fits, {len(pairs):,} pairs: all on {threads} threads (baseline) "
                  f"{rates['host']:,.0f} pairs/s; "
                  f"screened on {device}, the rest on {threads} threads {rates['screen']:,.0f} pairs/s "
                  f"({fitting['screen rejected']:,} rejected there, {different['screen']} decisions different); "
                  f"fitted on {device}, measured on {threads} threads {rates['device']:,.0f} pairs/s "
                  f"({fitting['fitted on the device']:,} fitted there, {different['device']} decisions different)",
                  flush=True)
            print(f"on {device} alone: " + "; ".join(f"{label} {value:,.0f} pairs/s"
                                                    for label, value in fitting["alone"].items()), flush=True)
        torch_orb = None if "torch-orb" in skip else measured("torch-orb", lambda: load_verifier("torch-orb", device))
        if torch_orb is not None:
            # ORB-style features described on the device (vision/orb_torch.py), CLAHE on the threads.
            verify_rates[f"torch-orb, described on {device} ({torch_orb.images_per_pass} per pass), "
                         f"fits on {threads} threads"] = measured("torch-orb", lambda: verification_rates(
                             torch_orb, thumbnails, pairs, threads, device))
        cpu_orb = load_verifier("orb", "cpu")
        cpu_describers = describing_threads(cpu_orb, threads)
        matching_on = f"ratio tests on {cpu_describers}, fits on {threads}" if cpu_describers > threads \
            else f"matching on {threads}"
        verify_rates[f"ORB on the CPU, describing on {cpu_describers} threads, {matching_on} (baseline)"] = \
            measured("ORB", lambda: verification_rates(cpu_orb, thumbnails, pairs, threads, "cpu",
                                                       describers=cpu_describers))
        whole_batch = [("orb", {}), ("torch-orb", {})]
        if orb is not None and orb.fits_on_device:  # the baseline: the screen's leftovers fitted on the host
            whole_batch.insert(1, ("orb", {"device_fits": False}))
        for name, options in whole_batch:
            if not hashed or name in skip:
                continue
            whole = measured(f"verify_pairs ({name})", lambda: batch_verification(hashed[1], hashed[2], folder,
                                                                                  vectors, device, name, **options))
            if whole:
                seconds, images_count, pairs_count, verifying, describing = whole
                name = f"{name}, fits on the host after the screen" if options else name
                print(f"verify_pairs on the bench batch as verified_pairs runs it ({name} on {device}, {verifying} "
                      f"verifying threads, {describing} describing on the host): {pairs_count:,} pairs of "
                      f"{images_count:,} images in {seconds:.1f} s, {pairs_count / seconds:,.0f} pairs/s, "
                      f"{images_count / seconds:,.0f} images/s at {pairs_count / images_count:.1f} pairs per image",
                      flush=True)
                if batch_verified is None or images_count / seconds > batch_verified[0]:
                    batch_verified = images_count / seconds, pairs_count / images_count, name
        if args.scaling:
            print(f"CPU scaling on this host ({os.cpu_count()} cores), {len(pairs)} pairs:", flush=True)
            measured("scaling", lambda: thread_scaling(folder, thumbnails, pairs))
        for label, value in verify_rates.items():
            if value:
                print(f"verification, {label}: describes {value[0]:,.0f} images/s, matches {value[1]:,.1f} pairs/s; "
                      f"{per_image_verification(*value):,.0f} images/s at {PAIRS_PER_IMAGE} pairs per image",
                      flush=True)

    searches = {} if "search" in skip else measured("search", lambda: search_rates(args.vectors, args.batch, device)) or {}
    for label, value in searches.items():
        print(f"search, {label}: {value / 1e6:,.0f} M query-vector comparisons/s "
              f"({args.batch:,} queries)", flush=True)
    reads = {} if "reads" in skip else measured("stored embeddings read back", stored_read_rates) or {}
    for label, value in reads.items():
        print(f"stored embeddings read back (host CPU), {label}: {value:,.0f} vectors/s", flush=True)
    reads_per_s = next(iter(reads.values()), None)
    resident_per_s = reads.get(RESIDENT_READS)
    scratch.cleanup()

    # 3M images, stages one after the other on this host (a conservative sum: on a real
    # deployment the CPU stages overlap the GPU ones, docs/deployment.md).
    embed_per_s = stage_per_s or next(iter(embeddings.values()), None)
    verify_per_s = max((per_image_verification(*value) for value in verify_rates.values() if value), default=None)
    verify_label = f"verification ({PAIRS_PER_IMAGE} pairs/image, fastest verifier)"
    if batch_verified:  # measured whole, its parts overlapping as in the pipeline
        verify_per_s = batch_verified[0]
        verify_label = f"verification ({batch_verified[2]}, verify_pairs, {batch_verified[1]:.1f} pairs/image)"
    search_per_s = max(searches.values(), default=None)
    stages = {
        "hash stage": hashed and CORPUS / hashed[0],  # at the bench set's 1,000 per batch
        "embeddings stage": embed_per_s and CORPUS / embed_per_s,
        verify_label: verify_per_s and CORPUS / verify_per_s,
        # Each batch searched against everything stored before it: N^2 / 2 comparisons...
        "embedding search (exact, all batches)": search_per_s and CORPUS * CORPUS / 2 / search_per_s,
    }
    # ...and every stored embedding read again by every batch: N^2 / (2 x batch) reads.
    for batch in sorted({args.batch, 10_000}):
        hours = dict(stages)
        if hash_costs:  # the pool's start-up once per batch
            hours["hash stage"] = CORPUS / batch * (hash_costs[0] + batch * hash_costs[1])
        # With resident_embeddings_mb covering them all (~2.6 GB per million images): each
        # partition read once, then scanned from memory by each batch.
        every_batch = reads_per_s and CORPUS * CORPUS / 2 / batch / reads_per_s  # nothing held
        note = ""
        if reads_per_s and (HELD_ON_DEVICE in searches or resident_per_s):
            note = (f"  (stored embeddings read from Parquet by each batch instead, resident_embeddings_mb: 0: "
                    f"{every_batch / 3600:.2f} h)")
        if HELD_ON_DEVICE in searches and reads_per_s:
            # Held on the GPU the search runs on: each partition read and sent there once,
            # then searched where it is (the search's rate above includes that).
            hours["stored embeddings, read once and held on the device"] = CORPUS / reads_per_s
        elif resident_per_s and reads_per_s:
            hours[f"stored embeddings, all held in the process ({batch:,} per batch)"] = (
                CORPUS / reads_per_s + CORPUS * CORPUS / 2 / batch / resident_per_s)
        else:
            hours[f"stored embeddings read by each batch ({batch:,} per batch)"] = every_batch
        print(f"\n3M images on this host ({device_name(device)}; {os.cpu_count()} CPU cores), {batch:,} per batch:")
        for stage, seconds in hours.items():
            print(f"  {stage:<62}" + (f"{seconds / 3600:8.2f} h" if seconds else "  not measured"))
        known = [seconds for seconds in hours.values() if seconds]
        print(f"  {'total':<62}{sum(known) / 3600:8.2f} h  (target: under 1 h)"
              + ("" if len(known) == len(hours) else f"; {len(hours) - len(known)} stage(s) not measured"))
        if note:
            print(note)


if __name__ == "__main__":
    main()
