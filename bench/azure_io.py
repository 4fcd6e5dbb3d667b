"""Listing and download throughput against Azurite, beside the plain SDK loop.

    .venv/bin/python bench/azure_io.py [--blobs 3000] [--concurrency 16]

Starts its own Azurite (npm ci first), uploads small JPEGs, then times in one run:
listing (our paged listing vs `for blob in container.list_blobs()`), and downloading every
blob (our bounded concurrent downloader vs a sequential `download_blob().readall()` loop).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

from dedup_assets.sources.azure import AzureBlobSource, AzureSettings  # noqa: E402
from dedup_assets_tests.azurite import Azurite  # noqa: E402


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((96, 72), 40 + seed % 50).convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def rate(label: str, count: int, seconds: float) -> float:
    print(f"{label:<46} {count / seconds:9.1f} blobs/s  ({seconds:.2f} s)")
    return count / seconds


def compare_downloads(download_plain, source: AzureBlobSource, blobs, concurrency: int) -> float:
    """Sequential SDK downloads beside ours (bounded concurrency); returns the speed-up."""
    started = time.perf_counter()
    for blob in blobs:
        download_plain(blob)
    plain = rate("download: plain SDK loop (sequential)", len(blobs), time.perf_counter() - started)
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda b: source.read_bytes(b.name, expected_etag=b.etag), blobs))
    ours = rate(f"download: dedup_assets ({concurrency} concurrent)", len(blobs), time.perf_counter() - started)
    return ours / plain


def measure_with_latency(emulator: Azurite, blobs, args) -> None:
    """Loopback Azurite answers in well under a millisecond; a real account is tens of
    milliseconds away. A proxy adding that latency shows what concurrency buys there."""
    from azure.storage.blob import ContainerClient

    from dedup_assets_tests.fault_proxy import FaultProxy

    proxy = FaultProxy(emulator.port)
    proxy.delay = args.latency_ms / 1000
    try:
        connection = emulator.connection_string.replace(f":{emulator.port}/", f":{proxy.port}/")
        sample = blobs[: min(len(blobs), 400)]
        print(f"\nthrough a proxy adding {args.latency_ms:.0f} ms per request ({len(sample)} blobs):")
        plain = ContainerClient.from_connection_string(connection, "bench", api_version="2025-11-05")
        source = AzureBlobSource("az://bench", connection_string=connection,
                                 settings=AzureSettings(concurrency=args.concurrency))
        speedup = compare_downloads(lambda b: plain.download_blob(b.name).readall(), source, sample,
                                    args.concurrency)
        print(f"downloads {speedup:.2f}x the plain loop")
    finally:
        proxy.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--blobs", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=20.0,
                        help="also measure downloads through a loopback proxy adding this latency per request")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        emulator = Azurite(Path(scratch)).start()
        try:
            container = emulator.container("bench")
            payloads = [jpeg(i) for i in range(args.blobs)]
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda i: container.upload_blob(f"img/{i:06d}.jpg", payloads[i]), range(args.blobs)))
            print(f"{args.blobs} blobs of ~{sum(map(len, payloads)) // args.blobs} bytes in Azurite\n")

            started = time.perf_counter()
            plain_names = [blob.name for blob in container.list_blobs()]
            plain_list = rate("listing: plain SDK loop (list_blobs)", len(plain_names), time.perf_counter() - started)
            source = AzureBlobSource("az://bench", connection_string=emulator.connection_string,
                                     settings=AzureSettings(concurrency=args.concurrency))
            started = time.perf_counter()
            ours = list(source.iter_blobs())
            our_list = rate("listing: dedup_assets AzureBlobSource", len(ours), time.perf_counter() - started)

            speedup = compare_downloads(lambda b: container.download_blob(b.name).readall(), source, ours,
                                        args.concurrency)
            print(f"\nlisting {our_list / plain_list:.2f}x, downloads {speedup:.2f}x the plain loop")
            if args.latency_ms:
                measure_with_latency(emulator, ours, args)
        finally:
            emulator.stop()


if __name__ == "__main__":
    main()
