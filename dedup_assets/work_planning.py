"""Which batches need a run: shared by the sensor, the schedule and `dedup run`."""

from __future__ import annotations

from typing import Sequence

import dagster as dg
import polars as pl
from dagster._core.events import DagsterEventType

from dedup_assets.hash_stage import STAGE as HASH_STAGE
from dedup_assets.ledger import BatchLedger, batch_sequence
from dedup_assets.partitions import batch_partitions

_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def partitions_in_progress(instance: dg.DagsterInstance, job_name: str) -> set[str]:
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=_ACTIVE))
    return {run.tags["dagster/partition"] for run in runs if "dagster/partition" in run.tags}


def partitions_needing_work(
    instance: dg.DagsterInstance,
    asset_keys: Sequence[dg.AssetKey],
    partition_keys: Sequence[str] | None = None,
) -> list[str]:
    """Batches where some asset is missing (never materialized, or its last run failed
    before writing it) or stale (an upstream asset was materialized after it).

    `asset_keys` must be in dependency order.
    """
    if partition_keys is None:
        partition_keys = instance.get_dynamic_partitions(batch_partitions.name)
    wanted = set(partition_keys)
    latest = [
        instance.event_log_storage.get_latest_storage_id_by_partition(
            key, DagsterEventType.ASSET_MATERIALIZATION, partitions=wanted
        )
        for key in asset_keys
    ]
    # Partition statuses exist only for partitions the instance knows (a batch the
    # sensor is adding in this very tick is not one yet).
    registered = set(instance.get_dynamic_partitions(batch_partitions.name))
    known = [key for key in partition_keys if key in registered]
    statuses = [
        (instance.get_status_by_partition(key, known, batch_partitions) or {}) if known else {}
        for key in asset_keys
    ]
    needing = []
    for partition in partition_keys:
        ids = [by_partition.get(partition) for by_partition in latest]
        failed = any(status.get(partition) == dg.AssetPartitionStatus.FAILED for status in statuses)
        missing = failed or any(storage_id is None for storage_id in ids)
        stale = not missing and any(later < earlier for earlier, later in zip(ids, ids[1:]))
        if missing or stale:
            needing.append(partition)
    return sorted(needing, key=batch_sequence)


def batches_with_deletions_not_applied(instance: dg.DagsterInstance, ledger: BatchLedger) -> list[str]:
    """Batches holding a blob version deleted or overwritten (a tombstone) after their
    `clusters` were last materialized: until they run again their groups may still keep
    that content, and drop the copies that remain. The sensor re-runs them as it sees the
    tombstones; this asks the instance, so `dedup run` needs no cursor."""
    tombstones = ledger.tombstones()
    if not tombstones.height:
        return []
    latest_deletion = tombstones.group_by("batch").agg(pl.col("deleted_at").max())
    stale = []
    for batch, deleted_at in latest_deletion.rows():
        clustered = instance.fetch_materializations(
            dg.AssetRecordsFilter(dg.AssetKey("clusters"), asset_partitions=[batch]), limit=1).records
        # A batch never clustered is missing work, which `partitions_needing_work` finds.
        if clustered and clustered[0].timestamp < deleted_at.timestamp():
            stale.append(batch)
    return sorted(stale, key=batch_sequence)


def batches_readable_again(ledger: BatchLedger) -> list[str]:
    """Batches holding a blob found offline that the latest listing shows readable."""
    return sorted(set(ledger.readable_again()["batch"].to_list()), key=batch_sequence)


def readable_again_requests(instance: dg.DagsterInstance, ledger: BatchLedger,
                            skip: set[str]) -> list[dg.RunRequest]:
    """A run for each batch `batches_readable_again` names and `skip` does not. Keyed by
    the batch's latest hash-stage materialization: one run per state of the batch, even
    if a blob the listing shows readable still cannot be read."""
    keys = [key for key in batches_readable_again(ledger) if key not in skip]
    hashed = instance.event_log_storage.get_latest_storage_id_by_partition(
        dg.AssetKey(HASH_STAGE), DagsterEventType.ASSET_MATERIALIZATION, partitions=set(keys)
    ) if keys else {}
    return [dg.RunRequest(partition_key=key, run_key=f"{key}:readable:{hashed.get(key)}") for key in keys]
