"""Helpers for tests that run the project as separate processes (CLI, daemon, webserver,
workers): their environment, loopback ports, start/stop by process group, and the
state of a finished run to compare runs by."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from dedup_assets.catalog import query
from dedup_assets.settings import PROJECT_ROOT
from dedup_assets.storage import StorageLayout

BIN = os.path.dirname(sys.executable)

REGISTER = """
import dagster as dg
from dedup_assets.settings import apply_defaults
apply_defaults()
from dedup_assets.ledger import BatchLedger
from dedup_assets.sources.factory import source_from_environment
from dedup_assets.storage import layout_from_environment
keys = BatchLedger(layout_from_environment()).register(source_from_environment().iter_blobs(), 12)
dg.DagsterInstance.get().add_dynamic_partitions("batches", keys)
print(",".join(keys))
"""


def environment(home, source, executor):
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update({"DEDUP_HOME": str(home), "DEDUP_SOURCE": str(source), "DEDUP_BATCH_SIZE": "12",
                "DEDUP_EXECUTOR": executor, "DAGSTER_HOME": str(home / "dagster")})
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], env: dict, log) -> subprocess.Popen:
    """A process in its own group, so that stop() ends its children too."""
    return subprocess.Popen(command, env=env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def sequential_run(home, source) -> None:
    """`dedup run` in process, the reference the concurrent and distributed runs must equal."""
    done = subprocess.run([sys.executable, "-m", "dedup_assets.cli", "run", "--no-progress"],
                          env=environment(home, source, "in_process"), capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]


def register_batches(env: dict) -> list[str]:
    return subprocess.run([sys.executable, "-c", REGISTER], env=env, capture_output=True, text=True,
                          timeout=120, check=True).stdout.strip().split(",")


def final_state(layout: StorageLayout):
    groups = {frozenset(m) for (m,) in query(layout, "select list(blob_name) from clusters group by cluster_id")}
    kept = {name for (name,) in query(layout, "select blob_name from clusters where is_representative")}

    def every_partition(asset):
        return layout.read_parquet_many(layout.glob(f"{layout.asset_dir(asset)}/*.parquet"))

    pairs = every_partition("verified_pairs").select("blob_a", "blob_b", "is_duplicate").unique().sort("blob_a", "blob_b")
    hashes = every_partition("wavelet_hashes").drop("batch").sort("blob_name")
    return groups, kept, pairs, hashes


def assert_same_results(reference: StorageLayout, layout: StorageLayout) -> None:
    expected, got = final_state(reference), final_state(layout)
    assert got[0] == expected[0]  # the same duplicate groups
    assert got[1] == expected[1]  # the same copies kept
    assert got[2].equals(expected[2])  # the same pair decisions
    assert got[3].equals(expected[3])  # the same features
