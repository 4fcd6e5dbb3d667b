"""The embedding stage as plain Python: thumbnails in, float16 unit vectors out."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Sequence, TypeVar

import cv2
import numpy as np
import polars as pl

from dedup_assets.storage import StorageLayout
from dedup_assets.vision.embedders import Embedder, cuda_surely_absent, load_embedder, map_on_cores

log = logging.getLogger(__name__)

EMBEDDING_SCHEMA = {"blob_name": pl.String, "content_hash": pl.String, "model": pl.String, "embedding": pl.Binary}


RUNTIMES = ("auto", "torch", "onnx", "openvino")


def cpu_onnx_runtime(runtime: str) -> str | None:
    """Which runtime serves the ONNX export on the CPU for this setting (None: PyTorch).
    auto: OpenVINO when it is installed (a dependency; ~2× ONNX Runtime here, same
    vectors), else ONNX Runtime."""
    if runtime == "onnx":
        return "onnxruntime"
    if runtime == "openvino":
        return "openvino"
    if runtime == "auto":
        return "openvino" if importlib.util.find_spec("openvino") else "onnxruntime"
    return None


@functools.lru_cache(maxsize=2)
def cached_embedder(model: str, weights: str | None, device: str, runtime: str = "auto",
                    input_size: int | None = None):
    """`dedup run` materializes many batches in one process: load the weights once.

    runtime auto: the ONNX export served by OpenVINO on the CPU (bench/embedding_speed.py:
    1.8–2.3× ONNX Runtime, 5× PyTorch, same vectors), PyTorch (float16) on CUDA.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown embedding runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    on_cpu = device == "cpu" or (device == "auto" and cuda_surely_absent())
    onnx_runtime = cpu_onnx_runtime(runtime)
    if onnx_runtime and (runtime != "auto" or on_cpu):
        from dedup_assets.vision.onnx_embedders import load_exported

        exported = load_exported(model, weights, input_size, runtime=onnx_runtime)
        if exported is not None:
            return exported
    embedder = load_embedder(model, weights, device)
    if input_size:
        embedder.input_size = input_size
    if onnx_runtime and (runtime != "auto" or embedder.device == "cpu"):
        from dedup_assets.vision.onnx_embedders import onnx_embedder, record_export

        try:
            twin = onnx_embedder(embedder, input_size, runtime=onnx_runtime)
            record_export(model, weights, input_size, twin)
            return twin
        except Exception as error:
            if runtime != "auto":
                raise
            # Not every architecture exports; PyTorch computes the same vectors, slower.
            log.warning("ONNX export of %s failed (%s); using PyTorch", model, error)
    return embedder


def decode_thumbnail(data: bytes, relative_path: str) -> np.ndarray:
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if pixels is None:
        raise ValueError(f"thumbnail unreadable: {relative_path}")
    return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)


def load_thumbnails(layout: StorageLayout, relative_paths: list[str]) -> list[np.ndarray]:
    data = layout.read_thumbnails(relative_paths)
    return map_on_cores(lambda relative: decode_thumbnail(data[relative], relative), relative_paths)


# Images per forward pass by device (docs/performance.md §6-7).
PASS_SIZE = {"cpu": 8, "cuda": 256}


def pass_size(configured: int | None, embedder: Embedder) -> int:
    """The configured images per forward pass, else the device's."""
    if configured is not None:
        if configured < 1:
            raise ValueError(f"embeddings.batch_size must be at least 1, got {configured}")
        return configured
    return PASS_SIZE["cuda" if embedder.device.startswith("cuda") else "cpu"]


Item, Prepared = TypeVar("Item"), TypeVar("Prepared")


def prepared_ahead(prepare: Callable[[Item], Prepared], items: Sequence[Item]) -> Iterator[Prepared]:
    """prepare(item) for each item in order, the next one computed on a thread while the
    caller works on the current one."""
    if not items:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="dedup-prepare-ahead") as ahead:
        upcoming = ahead.submit(prepare, items[0])
        for following in [*items[1:], None]:
            current = upcoming.result()
            if following is not None:
                upcoming = ahead.submit(prepare, following)
            yield current


def embed_batch(hashes: pl.DataFrame, layout: StorageLayout, embedder: Embedder,
                batch_size: int = 32, on_progress: Callable[[int, int], None] | None = None) -> tuple[pl.DataFrame, float]:
    """One embedding per distinct content (identical copies share it), from thumbnails."""
    started = time.perf_counter()
    distinct = hashes.unique(subset="content_hash", keep="first", maintain_order=True)
    vectors: dict[str, bytes] = {}
    rows = distinct.select("content_hash", "thumbnail").rows()
    passes = [rows[start:start + batch_size] for start in range(0, len(rows), batch_size)]

    def inputs(chunk: list[tuple[str, str]]) -> np.ndarray:
        return embedder.preprocess(load_thumbnails(layout, [path for _, path in chunk]))

    # The next pass's thumbnails are read, decoded and resized while the network runs
    # this one: on the CPU that work (~1 ms per image, one thread) left a core idle,
    # 3.7 → 3.2 s per 1,000 images on 2 cores, the same vectors (docs/performance.md §2).
    done = 0
    with contextlib.closing(prepared_ahead(inputs, passes)) as ready:
        for chunk, prepared in zip(passes, ready):
            matrix = embedder.embed_preprocessed(prepared)
            for (content, _), vector in zip(chunk, matrix.astype("<f2")):
                vectors[content] = vector.tobytes()
            done += len(chunk)
            if on_progress:
                on_progress(done, len(rows))
    frame = pl.DataFrame({
        "blob_name": hashes["blob_name"],
        "content_hash": hashes["content_hash"],
        "model": [embedder.name] * hashes.height,
        "embedding": [vectors[c] for c in hashes["content_hash"]],
    }, schema=EMBEDDING_SCHEMA)
    return frame, time.perf_counter() - started
