"""Several batches at once, through the run queue (the daemon dequeues, two at a time)
and the multiprocess executor: no lock failure, a consistent catalog, and the same
results as one sequential run."""

import json
import signal
import subprocess
import time

import dagster as dg

from dedup_assets.settings import PROJECT_ROOT
from dedup_assets.storage import StorageLayout
from dedup_assets_tests.processes import (BIN, assert_same_results, environment, register_batches,
                                          sequential_run, stop)


def test_concurrent_batches_through_the_queue_match_a_sequential_run(tmp_path, demo_subset):
    source = demo_subset(36)

    sequential = tmp_path / "sequential"
    sequential_run(sequential, source)

    home = tmp_path / "concurrent"
    env = environment(home, source, "multiprocess")
    keys = register_batches(env)
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
        stop(daemon, signal.SIGINT)

    # The queue let runs overlap, never more than two.
    def overlapping(at):
        return sum(start <= at < end for start, end in spans)

    peak = max(overlapping(start) for start, _ in spans)
    assert peak == 2

    assert_same_results(StorageLayout(sequential), StorageLayout(home))
