"""Listing, download and thumbnail-upload throughput against Azurite, beside baselines.

    .venv/bin/python bench/azure_io.py [--blobs 3000] [--concurrency 16] [--latency-ms 20] [--hash-images 300]

Starts its own Azurite (npm ci first), uploads small JPEGs, then times in one run:
listing (our paged listing vs `for blob in container.list_blobs()`), and downloading every
blob (our bounded concurrent downloader vs a sequential `download_blob().readall()` loop),
directly and through a proxy adding network latency. Then the hash stage (decode, hash,
keep a thumbnail) over 640 px JPEGs with its data root on that latent Azurite, beside the
same stage with the data root on local disk: what writing thumbnails to Azure costs;
reading them back, and scanning stored partitions as the cross-batch searches do.
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
    print(f"{label:<56} {count / seconds:9.1f} blobs/s  ({seconds:.2f} s)")
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
        if args.hash_images:
            measure_hash_stage(connection, args)
    finally:
        proxy.close()


def measure_hash_stage(connection: str, args) -> None:
    """The hash stage over local images, its data root (thumbnails) on disk, then on Azure."""
    from dedup_assets.demo_data import build_distinct_set
    from dedup_assets.hash_stage import hash_blobs
    from dedup_assets.ledger import _to_frame
    from dedup_assets.sources.local import LocalFolderSource
    from dedup_assets.storage import REMOTE_CONCURRENCY, StorageLayout, data_storage_options

    with tempfile.TemporaryDirectory() as scratch:
        images = build_distinct_set(Path(scratch) / "images", args.hash_images, side=640, seed=7)
        source = LocalFolderSource(images)
        inventory = _to_frame(source.iter_blobs())
        print(f"\nhash stage, {inventory.height} JPEGs of 640 px, 2 workers:")
        rates = {}
        for where, layout in (
            ("local disk", StorageLayout(Path(scratch) / "home")),
            (f"Azure (+{args.latency_ms:.0f} ms)", StorageLayout(
                Path(scratch) / "home-az", "az://bench/data", data_storage_options(connection_string=connection))),
        ):
            result = hash_blobs(source, inventory, layout, workers=2)
            assert not result.failures, result.failures[:3]
            rates[where] = rate(f"hash stage, data root on {where}", inventory.height, result.seconds)
        local, remote = rates.values()
        print(f"data root on Azure: {remote / local:.2f}x the local speed")
        # What embeddings and verification do with those thumbnails: fetch them in groups.
        paths = [layout.data_path(key) for key in result.hashes["thumbnail"].unique().to_list()]
        started = time.perf_counter()
        plain = layout.fs.cat(paths)
        plain_rate = rate("thumbnails read back: fsspec cat (one at a time)", len(paths), time.perf_counter() - started)
        started = time.perf_counter()
        ours = layout.read_many_bytes(paths)
        our_rate = rate(f"thumbnails read back: read_many_bytes ({REMOTE_CONCURRENCY} in flight)", len(paths),
                        time.perf_counter() - started)
        assert ours == plain
        print(f"thumbnail reads {our_rate / plain_rate:.2f}x fsspec's cat")
        measure_partition_scan(layout, args.partitions)


def measure_partition_scan(layout, count: int) -> None:
    """The cross-batch searches read every stored partition of an asset, in turn."""
    import numpy as np
    import polars as pl

    from dedup_assets.corpus import _partition_files, partitions

    rng = np.random.default_rng(0)
    for index in range(count):  # hash-sized partitions: 1,000 rows of names and 64-bit hashes
        frame = pl.DataFrame({"blob_name": [f"b/{index}/{i}.jpg" for i in range(1000)],
                              "wavelet_hash": rng.integers(0, 2**63, 1000, dtype=np.uint64)})
        layout.write_parquet(frame, layout.partition_path("wavelet_hashes", f"batch-{index:06d}"))
    files = _partition_files(layout, "wavelet_hashes")
    started = time.perf_counter()
    plain = [layout.read_parquet(path, ["wavelet_hash"]) for path in files]
    plain_rate = rate("stored partitions scanned: one read per partition", len(files), time.perf_counter() - started)
    started = time.perf_counter()
    ours = list(partitions(layout, "wavelet_hashes", ["wavelet_hash"]))
    our_rate = rate("stored partitions scanned: corpus.partitions (grouped)", len(files), time.perf_counter() - started)
    assert all(a.equals(b) for a, b in zip(plain, ours)) and len(plain) == len(ours)
    print(f"partition scan {our_rate / plain_rate:.2f}x one read per partition")
    measure_duplicate_scan(layout, count)


def measure_duplicate_scan(layout, count: int) -> None:
    """`clusters`' scan of every stored verified pair: DuckDB reading the partitions
    through fsspec (what it did) beside the local copies it reads now, kept up to date
    (`StorageLayout.local_copies`): first all of them fetched, then one new partition."""
    import duckdb
    import numpy as np
    import polars as pl

    from dedup_assets import corpus

    rng = np.random.default_rng(1)

    def write(index: int) -> None:  # 2,500 pairs per partition, 2 % duplicates
        frame = pl.DataFrame({"blob_a": [f"a/{index}/{i}.jpg" for i in range(2500)],
                              "blob_b": [f"b/{index}/{i}.jpg" for i in range(2500)],
                              "is_duplicate": rng.random(2500) < 0.02,
                              "inliers": rng.integers(0, 200, 2500).astype(np.int32)})
        layout.write_parquet(frame, layout.partition_path("verified_pairs", f"batch-{index:06d}"))

    for index in range(count):
        write(index)
    files = corpus._partition_files(layout, "verified_pairs")
    con = duckdb.connect()
    layout.register(con)
    started = time.perf_counter()
    plain = con.execute("select count(*) filter (where is_duplicate) from read_parquet($files)",
                        {"files": [layout.uri(path) for path in files]}).fetchone()[0]
    rate("stored pairs' partitions: DuckDB through fsspec", count, time.perf_counter() - started)
    started = time.perf_counter()
    ours = corpus.latest_duplicate_pairs(layout, ["inliers"]).height
    rate("stored pairs' partitions: local copies, all fetched", count, time.perf_counter() - started)
    assert ours == plain
    write(count)
    started = time.perf_counter()
    corpus.latest_duplicate_pairs(layout, ["inliers"])
    rate("stored pairs' partitions: local copies, one new", count + 1, time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--blobs", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=20.0,
                        help="also measure downloads through a loopback proxy adding this latency per request")
    parser.add_argument("--partitions", type=int, default=200,
                        help="stored partitions scanned behind that latency")
    parser.add_argument("--hash-images", type=int, default=300,
                        help="images for the hash stage with its data root behind that latency (0: skip)")
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
