"""CPU embedding throughput: the torch baseline beside channels-last, lower input sizes,
ONNX Runtime and int8, on the same thumbnails, in one run; plus how far each variant's
vectors move from the baseline's (cosine), the first check before re-scoring F1.

    .venv/bin/python bench/embedding_speed.py [--count 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from dedup_assets.demo_data import build_demo_set
from dedup_assets.settings import apply_defaults
from dedup_assets.vision.decode import decode_thumbnail
from dedup_assets.vision.embedders import load_efficientnet_lite0
from dedup_assets.vision.onnx_embedders import onnx_embedder


def thumbnails(count: int) -> list[np.ndarray]:
    folder = Path(os.environ["DEDUP_HOME"]) / "demo"
    if not (folder / "truth.csv").exists():
        build_demo_set(folder)
    paths = sorted((folder / "images").iterdir())
    return [decode_thumbnail(paths[i % len(paths)].read_bytes()).thumbnail for i in range(count)]


def rate(embed, images, repeats: int) -> tuple[float, np.ndarray]:
    vectors = embed(images[:32])  # warm-up (allocations, graph optimisation)
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        vectors = embed(images)
        rates.append(len(images) / (time.perf_counter() - started))
    return statistics.median(rates), vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    apply_defaults()
    torch.set_num_threads(args.threads)
    images = thumbnails(args.count)
    base = load_efficientnet_lite0("cpu")
    variants = {"torch fp32 224 (baseline)": lambda x: base.embed(x)}

    last = load_efficientnet_lite0("cpu")
    last.model = last.model.to(memory_format=torch.channels_last)
    variants["torch fp32 224 channels-last"] = lambda x: last.embed(x)
    for size in (160, 128):
        small = load_efficientnet_lite0("cpu")
        small.input_size = size
        variants[f"torch fp32 {size}"] = small.embed
    for size in (224, 160, 128):
        variants[f"onnxruntime fp32 {size}"] = onnx_embedder(base, size, threads=args.threads).embed
    for size in (224, 160):
        variants[f"onnxruntime int8 {size}"] = onnx_embedder(base, size, int8=True, calibration_images=images[:64],
                                                             threads=args.threads).embed

    print(f"{args.count} thumbnails, {args.threads} threads, EfficientNet-Lite0 (shipped weights)")
    print(f"{'variant':<34} {'images/s':>9} {'× base':>7} {'cos to base (min / mean)':>26}")
    reference = None
    for label, embed in variants.items():
        speed, vectors = rate(embed, images, args.repeats)
        if reference is None:
            reference, base_speed = vectors, speed
        cosine = np.einsum("ij,ij->i", vectors, reference)
        print(f"{label:<34} {speed:9.1f} {speed / base_speed:7.2f} {cosine.min():12.3f} / {cosine.mean():.3f}")


if __name__ == "__main__":
    main()
