"""The production profile on a real Celery cluster: Debian's redis-server on loopback as
the broker, two dagster-celery workers, each step of each batch sent to a worker by
dagster-celery's executor, and the data every step shares (Parquet partitions,
thumbnails, the batch ledger) on Azure Blob Storage (Azurite) through fsspec/adlfs. Each
worker has its own local DEDUP_HOME, as on separate machines: the only thing they share
is the container (and the Dagster instance, Postgres in a deployment). The results equal
a local run's (docs/deployment.md)."""

from __future__ import annotations

import json
import os
import subprocess

import dagster as dg

from dedup_assets.catalog import register_views
from dedup_assets.settings import PROJECT_ROOT
from dedup_assets.storage import StorageLayout, data_storage_options
from dedup_assets_tests.processes import (BIN, assert_same_results, environment, free_port, register_batches,
                                          sequential_run, start, stop)


def test_batches_run_across_two_celery_workers_on_azure_storage_and_match_a_local_run(
    tmp_path, demo_subset, azurite, container
):
    source = demo_subset(36)
    local = tmp_path / "local"
    sequential_run(local, source)

    home = tmp_path / "distributed"
    port = free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    data_url = f"az://{container.container_name}/dedup"
    env = {**environment(home, source, "celery"), "DEDUP_CELERY_BROKER": broker, "DEDUP_GPU_QUEUE": "gpu",
           "DEDUP_DATA_URL": data_url, "DEDUP_DATA_CONNECTION_STRING": azurite.connection_string,
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}  # dagster-celery starts `celery` by name
    worker_homes = {queue: tmp_path / f"{queue}-worker-home" for queue in ("dagster", "gpu")}
    worker_config = tmp_path / "celery.yaml"
    worker_config.write_text(json.dumps({"execution": {"config": {"broker": broker, "backend": broker}}}))
    log = open(tmp_path / "cluster.log", "wb")
    processes = [start(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                        "--appendonly", "no"], env, log)]
    try:
        keys = register_batches(env)
        assert keys == ["batch-000001", "batch-000002", "batch-000003"]
        pidfiles = {queue: tmp_path / f"{queue}-worker.pid" for queue in ("dagster", "gpu")}
        # One worker for the default queue, one for the GPU queue (as a GPU node would
        # run). A solo pool runs tasks in the worker process itself: its pid names it.
        processes += [start([f"{BIN}/dagster-celery", "worker", "start", "-A", "dagster_celery.app",
                             "-y", str(worker_config), "-n", f"{queue}-worker", "-q", queue, "--", "--pool", "solo",
                             f"--pidfile={pidfile}"], {**env, "DEDUP_HOME": str(worker_homes[queue])}, log)
                      for queue, pidfile in pidfiles.items()]
        for key in keys:
            run = subprocess.run([f"{BIN}/dagster", "job", "execute", "-m", "dedup_assets.definitions",
                                  "-j", "dedup_job", "--tags", json.dumps({"dagster/partition": key})],
                                 env=env, cwd=PROJECT_ROOT, capture_output=True, timeout=600)
            assert run.returncode == 0, run.stdout.decode()[-3000:] + run.stderr.decode()[-3000:]
        worker_pid = {queue: int(pidfile.read_text()) for queue, pidfile in pidfiles.items()}
    finally:
        for process in reversed(processes):
            stop(process)
        log.close()

    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        runs = instance.get_runs()
        assert {run.status for run in runs} == {dg.DagsterRunStatus.SUCCESS} and len(runs) == 3
        step_pids = {(event.step_key, event.dagster_event.pid) for run in runs
                     for event in instance.all_logs(run.run_id)
                     if event.is_dagster_event and event.dagster_event.event_type_value == "STEP_START"}
    # Every step ran in a worker, never in the launching process; the GPU steps only on
    # the GPU queue's worker, the others only on the default queue's.
    gpu_steps = {"embeddings", "verified_pairs"}
    assert {pid for step, pid in step_pids if step in gpu_steps} == {worker_pid["gpu"]}
    assert {pid for step, pid in step_pids if step not in gpu_steps} == {worker_pid["dagster"]}
    assert {step for step, _ in step_pids} >= gpu_steps | {"blob_inventory", "wavelet_hashes", "clusters"}

    # Nothing the steps share was written to a local disk: it is all in the container
    # (a worker keeps only copies of the stored pairs that `clusters` scans).
    for local_home in (home, *worker_homes.values()):
        assert not [p for p in local_home.rglob("*") if p.suffix in (".parquet", ".jpg")
                    and ".data_cache" not in p.parts], local_home
    shared = StorageLayout(tmp_path / "inspect", data_url, data_storage_options(azurite.connection_string))
    assert len(shared.glob(f"{shared.data_root}/thumbnails/*/*.jpg")) > 0
    register_views(shared)  # a fresh catalog on another machine sees every batch
    assert_same_results(StorageLayout(local), shared)
