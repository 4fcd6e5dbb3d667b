"""The new-blobs sensor over a container: each tick's seconds, beside the one evaluation
that listed the whole container at once (the baseline, as before the listing went on
across ticks). Dagster stops a sensor's evaluation after 60 s by default.

    .venv/bin/python bench/sensor_listing.py [--blobs 20000] [--seconds-per-tick 2]

Starts its own Azurite on disk (npm ci first) and uploads `--blobs` tiny blobs (names
only: the sensor never reads them; Azurite takes them at ~130/s, so a container large
enough to pass 60 s, ~130k blobs, takes it hours), then evaluates the sensor tick by tick
as the daemon would, with `--seconds-per-tick` of listing each (the sensor's own: 30),
until its batches are cut, and prints the blob count at which the baseline would pass 60 s
at the listing rate measured.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dagster as dg  # noqa: E402

from dedup_assets.io_manager import storage_resources  # noqa: E402
from dedup_assets.ledger import BatchLedger  # noqa: E402
from dedup_assets.resources import BatchingResource, DedupStorageResource, ImageSourceResource  # noqa: E402
from dedup_assets import sensors  # noqa: E402
from dedup_assets.sensors import new_blobs_sensor  # noqa: E402
from dedup_assets.storage import StorageLayout  # noqa: E402
from dedup_assets_tests.azurite import Azurite  # noqa: E402

DAGSTER_SENSOR_TIMEOUT = 60


def upload(container, count: int) -> None:
    names = [f"photos/{i // 1000:04d}/{i:07d}.jpg" for i in range(count)]
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda name: container.upload_blob(name, b"x"), names))


def resources_for(connection: str, home: Path) -> dict:
    return {
        "image_source": ImageSourceResource(uri="az://listing", connection_string=connection),
        **storage_resources(DedupStorageResource(home=str(home))),
        "batching": BatchingResource(max_batch_size=1000, settle_seconds=0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blobs", type=int, default=20_000)
    parser.add_argument("--seconds-per-tick", type=float, default=2.0)
    args = parser.parse_args()
    sensors.LISTING_SECONDS_PER_TICK = args.seconds_per_tick
    with tempfile.TemporaryDirectory() as workdir:
        emulator = Azurite(Path(workdir) / "azurite", persistent=True).start()
        try:
            started = time.perf_counter()
            upload(emulator.container("listing"), args.blobs)
            print(f"{args.blobs:,} blobs uploaded in {time.perf_counter() - started:.0f} s; "
                  f"{args.seconds_per_tick:g} s of listing per tick\n", flush=True)

            home = Path(workdir) / "baseline"
            resources = resources_for(emulator.connection_string, home)
            started = time.perf_counter()
            keys = BatchLedger(StorageLayout(home)).register(resources["image_source"].open().iter_blobs(), 1000)
            baseline = time.perf_counter() - started

            resources = resources_for(emulator.connection_string, Path(workdir) / "sensor")
            ticks: list[float] = []
            cursor, requested = None, []
            with dg.DagsterInstance.ephemeral() as instance:
                while not requested:
                    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
                        started = time.perf_counter()
                        result = new_blobs_sensor(context)
                        ticks.append(time.perf_counter() - started)
                    if isinstance(result, dg.SensorResult):
                        requested, cursor = result.run_requests, result.cursor
                        for request in result.dynamic_partitions_requests:
                            instance.add_dynamic_partitions("batches", list(request.partition_keys))
            assert len(requested) == len(keys), (len(requested), len(keys))
            print(f"{'evaluation':<46} {'ticks':>5} {'longest':>9} {'all':>9}")
            print(f"{'listed across ticks (dedup_assets)':<46} {len(ticks):5d} {max(ticks):7.1f} s "
                  f"{sum(ticks):7.1f} s")
            print(f"{'one evaluation lists all (baseline)':<46} {1:5d} {baseline:7.1f} s {baseline:7.1f} s"
                  + ("   over Dagster's 60 s: stopped, every tick" if baseline > DAGSTER_SENSOR_TIMEOUT else ""))
            rate = args.blobs / baseline
            print(f"\n{len(keys)} batches cut either way; one evaluation lists and cuts {rate:,.0f} blobs/s, so it "
                  f"passes {DAGSTER_SENSOR_TIMEOUT} s from ~{rate * DAGSTER_SENSOR_TIMEOUT:,.0f} blobs "
                  f"(3M: {3e6 / rate / 60:.0f} min)")
        finally:
            emulator.stop()


if __name__ == "__main__":
    main()
