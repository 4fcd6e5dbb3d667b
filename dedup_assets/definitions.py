"""The one assembly point: assets, resources, jobs, sensor and schedule."""

import os

import dagster as dg

from dedup_assets.asset_checks import pipeline_checks
from dedup_assets.assets import pipeline_assets, review_assets
from dedup_assets.io_manager import storage_resources
from dedup_assets.jobs import dedup_job, review_job
from dedup_assets.resources import BatchingResource, DedupStorageResource, ImageSourceResource
from dedup_assets.schedules import backfill_schedule
from dedup_assets.sensors import new_blobs_sensor
from dedup_assets.settings import apply_defaults

apply_defaults()

def _optional(name: str) -> dg.EnvVar | None:
    # Only the variables that are set: an unset dg.EnvVar fails the whole code location.
    return dg.EnvVar(name) if os.environ.get(name) else None


storage = DedupStorageResource(
    home=dg.EnvVar("DEDUP_HOME"),
    data_url=_optional("DEDUP_DATA_URL"),
    data_account_name=_optional("DEDUP_DATA_ACCOUNT_NAME"),
    data_connection_string=_optional("DEDUP_DATA_CONNECTION_STRING"),
    data_account_key=_optional("DEDUP_DATA_ACCOUNT_KEY"),
    data_sas_token=_optional("DEDUP_DATA_SAS_TOKEN"),
)

resources = {
    "image_source": ImageSourceResource(
        uri=dg.EnvVar("DEDUP_SOURCE"),
        connection_string=_optional("AZURE_STORAGE_CONNECTION_STRING"),
        account_url=_optional("AZURE_STORAGE_ACCOUNT_URL"),
        account_key=_optional("AZURE_STORAGE_KEY"),
        sas_token=_optional("AZURE_STORAGE_SAS_TOKEN"),
        download_concurrency=dg.EnvVar.int("DEDUP_DOWNLOAD_CONCURRENCY"),
    ),
    **storage_resources(storage),
    "batching": BatchingResource(
        max_batch_size=dg.EnvVar.int("DEDUP_BATCH_SIZE"),
        settle_seconds=dg.EnvVar.int("DEDUP_SETTLE_SECONDS"),
    ),
}


def _executor() -> dg.ExecutorDefinition:
    """Steps of a local run share one process: the heavy stages parallelise inside
    themselves, and a subprocess per step costs 5-10 s here. `multiprocess` runs steps
    in parallel processes; `celery` sends each step to Celery workers through a Redis
    broker (the production profile: docs/deployment.md)."""
    name = os.environ.get("DEDUP_EXECUTOR", "in_process")
    if name == "celery":
        from dagster_celery import celery_executor

        broker = os.environ.get("DEDUP_CELERY_BROKER")
        if not broker:
            raise ValueError("DEDUP_EXECUTOR=celery needs DEDUP_CELERY_BROKER=redis://<host>:6379/0")
        return celery_executor.configured({
            "broker": broker,
            "backend": os.environ.get("DEDUP_CELERY_BACKEND") or broker,
        })
    executors = {"in_process": dg.in_process_executor, "multiprocess": dg.multiprocess_executor}
    if name not in executors:
        raise ValueError(f"DEDUP_EXECUTOR={name!r}: expected in_process, multiprocess or celery")
    return executors[name]


executor = _executor()

defs = dg.Definitions(
    assets=pipeline_assets + review_assets,
    asset_checks=pipeline_checks,
    jobs=[dedup_job, review_job],
    sensors=[new_blobs_sensor],
    schedules=[backfill_schedule],
    resources=resources,
    executor=executor,
)
