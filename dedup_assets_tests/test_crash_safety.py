"""A run killed with SIGKILL in the middle of a batch, then rerun, ends exactly where an
uninterrupted run does: no partial file visible, no row lost or duplicated."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from dedup_assets.catalog import query
from dedup_assets.storage import StorageLayout

ASSETS = ["blob_inventory", "wavelet_hashes", "color_candidates", "embeddings", "verified_pairs", "clusters"]


def start_run(home, source):
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update({"DEDUP_HOME": str(home), "DEDUP_SOURCE": str(source), "DEDUP_BATCH_SIZE": "24"})
    return subprocess.Popen([sys.executable, "-m", "dedup_assets.cli", "run", "--no-progress"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def outputs(home) -> dict[str, pl.DataFrame]:
    layout = StorageLayout(home)
    frames = {}
    for asset in ASSETS:
        frame = pl.read_parquet(f"{layout.asset_dir(asset)}/*.parquet")
        frame = frame.drop("computed_at") if "computed_at" in frame.columns else frame
        frames[asset] = frame.sort(frame.columns[:2])
    return frames


def test_a_killed_run_reruns_to_the_same_outputs(tmp_path, demo_subset):
    source = demo_subset(60)

    reference = tmp_path / "reference"
    assert start_run(reference, source).wait(600) == 0

    crashed = tmp_path / "crashed"
    process = start_run(crashed, source)
    marker = crashed / "parquet" / "embeddings" / "batch-000002.parquet"
    deadline = time.monotonic() + 300
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)  # the step process and its workers, mid-batch
    process.wait(30)
    assert not (crashed / "parquet" / "clusters" / "batch-000003.parquet").exists()

    rerun = start_run(crashed, source)
    stdout, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr.decode()[-2000:]

    expected, got = outputs(reference), outputs(crashed)
    for asset in ASSETS:
        assert got[asset].equals(expected[asset]), asset
    layout = StorageLayout(crashed)
    (rows, names) = query(layout, "select count(*), count(distinct blob_name) from clusters")[0]
    assert rows == names == 60
    visible = [p for p in Path(layout.parquet_root).rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert all(p.suffix == ".parquet" for p in visible)
