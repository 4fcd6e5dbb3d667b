"""Several batches at once, through the run queue (the daemon dequeues, two at a time)
and the multiprocess executor: no lock failure, a consistent catalog, and the same
results as one sequential run."""

import json
import os
import signal
import subprocess
import sys
import time

import dagster as dg
import polars as pl

from dedup_assets.catalog import query
from dedup_assets.settings import PROJECT_ROOT
from dedup_assets.storage import StorageLayout

BIN = os.path.dirname(sys.executable)


def environment(home, source, executor):
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update({"DEDUP_HOME": str(home), "DEDUP_SOURCE": str(source), "DEDUP_BATCH_SIZE": "12",
                "DEDUP_EXECUTOR": executor, "DAGSTER_HOME": str(home / "dagster")})
    return env


REGISTER = """
import dagster as dg
from dedup_assets.settings import apply_defaults
apply_defaults()
from dedup_assets.ledger import BatchLedger
from dedup_assets.sources.factory import source_from_environment
from dedup_assets.storage import StorageLayout
import os
keys = BatchLedger(StorageLayout(os.environ["DEDUP_HOME"])).register(source_from_environment().iter_blobs(), 12)
dg.DagsterInstance.get().add_dynamic_partitions("batches", keys)
print(",".join(keys))
"""


def final_state(home):
    layout = StorageLayout(home)
    groups = {frozenset(m) for (m,) in query(layout, "select list(blob_name) from clusters group by cluster_id")}
    kept = {name for (name,) in query(layout, "select blob_name from clusters where is_representative")}
    pairs = (pl.read_parquet(layout.asset_dir("verified_pairs") / "*.parquet")
             .select("blob_a", "blob_b", "is_duplicate").unique().sort("blob_a", "blob_b"))
    hashes = pl.read_parquet(layout.asset_dir("wavelet_hashes") / "*.parquet").drop("batch").sort("blob_name")
    return groups, kept, pairs, hashes


def test_concurrent_batches_through_the_queue_match_a_sequential_run(tmp_path, demo_subset):
    source = demo_subset(36)

    sequential = tmp_path / "sequential"
    done = subprocess.run([sys.executable, "-m", "dedup_assets.cli", "run", "--no-progress"],
                          env=environment(sequential, source, "in_process"), capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]

    home = tmp_path / "concurrent"
    env = environment(home, source, "multiprocess")
    keys = subprocess.run([sys.executable, "-c", REGISTER], env=env, capture_output=True, text=True,
                          timeout=120, check=True).stdout.strip().split(",")
    assert keys == ["batch-000001", "batch-000002", "batch-000003"]
    daemon = subprocess.Popen([f"{BIN}/dagster-daemon", "run", "-w", "workspace.yaml"], env=env, cwd=PROJECT_ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for key in keys:
            subprocess.run([f"{BIN}/dagster", "job", "launch", "-w", "workspace.yaml", "-j", "dedup_job",
                            "--tags", json.dumps({"dagster/partition": key})],
                           env=env, cwd=PROJECT_ROOT, check=True, capture_output=True, timeout=120)
        with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                runs = instance.get_runs()
                # The daemon's new-blobs sensor may queue runs of its own for these batches.
                if {run.tags.get("dagster/partition") for run in runs} >= set(keys) and all(
                        run.is_finished for run in runs):
                    break
                time.sleep(2)
            records = instance.get_run_records()
            assert {r.dagster_run.status for r in records} == {dg.DagsterRunStatus.SUCCESS}
            assert {r.dagster_run.tags["dagster/partition"] for r in records} == set(keys)
            spans = [(r.start_time, r.end_time) for r in records]
    finally:
        os.killpg(daemon.pid, signal.SIGINT)
        daemon.wait(60)

    # The queue let runs overlap, never more than two.
    def overlapping(at):
        return sum(start <= at < end for start, end in spans)

    peak = max(overlapping(start) for start, _ in spans)
    assert peak == 2

    expected, got = final_state(sequential), final_state(home)
    assert got[0] == expected[0]  # the same duplicate groups
    assert got[1] == expected[1]  # the same copies kept
    assert got[2].equals(expected[2])  # the same pair decisions
    assert got[3].equals(expected[3])  # the same features
