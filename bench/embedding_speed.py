"""CPU embedding throughput: the torch baseline beside channels-last, lower input sizes,
ONNX Runtime, int8 and OpenVINO (float32, bfloat16, and int8 quantised by NNCF where
`nncf` is installed: not a dependency, the variant was not adopted), on the same
thumbnails, in one run; plus how far each variant's vectors move from the baseline's
(cosine), the first check before re-scoring F1.

    .venv/bin/python bench/embedding_speed.py [--count 256] [--threads 2] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dedup_assets.demo_data import build_demo_set
from dedup_assets.settings import apply_defaults
from dedup_assets.vision.decode import decode_thumbnail
from dedup_assets.vision.embedders import load_efficientnet_lite0
from dedup_assets.vision.onnx_embedders import OpenVinoSession, onnx_embedder


def thumbnails(count: int) -> list[np.ndarray]:
    folder = Path(os.environ["DEDUP_HOME"]) / "demo"
    if not (folder / "truth.csv").exists():
        build_demo_set(folder)
    paths = sorted((folder / "images").iterdir())
    return [decode_thumbnail(paths[i % len(paths)].read_bytes()).thumbnail for i in range(count)]


def openvino_int8(twin, images: list[np.ndarray], folder: str) -> Path | None:
    """NNCF's post-training quantisation of the ONNX export (its default preset, the
    images as calibration), saved as OpenVINO IR; None where nncf is not installed."""
    try:
        import nncf
        import openvino as ov
    except ImportError:
        print("openvino int8 224 (NNCF): skipped, nncf is not installed (pip install nncf==3.4.0)")
        return None
    calibration = nncf.Dataset([twin.preprocess([image]) for image in images])
    quantised = nncf.quantize(ov.Core().read_model(str(twin.path)), calibration, subset_size=len(images))
    path = Path(folder) / "int8.xml"
    ov.save_model(quantised, str(path))
    return path


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
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (the pipeline's: 8)")
    args = parser.parse_args()
    apply_defaults()
    torch.set_num_threads(args.threads)
    images = thumbnails(args.count)
    base = load_efficientnet_lite0("cpu")
    variants = {"torch fp32 224 (baseline)": base.embed}

    last = load_efficientnet_lite0("cpu")
    last.model = last.model.to(memory_format=torch.channels_last)
    variants["torch fp32 224 channels-last"] = last.embed
    for size in (160, 128):
        small = load_efficientnet_lite0("cpu")
        small.input_size = size
        variants[f"torch fp32 {size}"] = small.embed
    for size in (224, 160, 128):
        variants[f"onnxruntime fp32 {size}"] = onnx_embedder(base, size, threads=args.threads).embed
    for size in (224, 160):
        variants[f"onnxruntime int8 {size}"] = onnx_embedder(base, size, int8=True, calibration_images=images[:64],
                                                             threads=args.threads).embed
    openvino = {size: onnx_embedder(base, size, threads=args.threads, runtime="openvino") for size in (224, 160)}
    for size, twin in openvino.items():
        variants[f"openvino fp32 {size}"] = twin.embed
    variants["openvino bf16 224"] = dataclasses.replace(
        openvino[224], session=OpenVinoSession(openvino[224].path, args.threads, precision="bf16")).embed
    scratch = tempfile.TemporaryDirectory()
    int8 = openvino_int8(openvino[224], images, scratch.name)
    if int8:
        variants["openvino int8 224 (NNCF)"] = dataclasses.replace(
            openvino[224], session=OpenVinoSession(int8, args.threads)).embed

    print(f"{args.count} thumbnails, {args.threads} threads, {args.batch_size} per pass, "
          "EfficientNet-Lite0 (shipped weights)")
    print(f"{'variant':<34} {'images/s':>9} {'× base':>7} {'cos to base (min / mean)':>26}")
    reference = None
    for label, embed in variants.items():
        speed, vectors = rate(functools.partial(embed, batch_size=args.batch_size), images, args.repeats)
        if reference is None:
            reference, base_speed = vectors, speed
        cosine = np.einsum("ij,ij->i", vectors, reference)
        print(f"{label:<34} {speed:9.1f} {speed / base_speed:7.2f} {cosine.min():12.3f} / {cosine.mean():.3f}")
    scratch.cleanup()


if __name__ == "__main__":
    main()
