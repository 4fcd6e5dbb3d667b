import os
from datetime import datetime, timezone

import dagster as dg

from dedup_assets.assets import blob_inventory, wavelet_hashes
from dedup_assets.ledger import BatchLedger
from dedup_assets.schedules import backfill_schedule
from dedup_assets.work_planning import partitions_needing_work

NOW = datetime(2026, 11, 25, 12, tzinfo=timezone.utc)
KEYS = [blob_inventory.key, wavelet_hashes.key]


def test_schedule_requests_missing_failed_and_stale_batches_only(instance_with_ref, resources, layout):
    instance = instance_with_ref
    batches = BatchLedger(layout).register(resources["image_source"].open().iter_blobs(), 10)
    instance.add_dynamic_partitions("batches", batches)
    assert partitions_needing_work(instance, KEYS) == batches  # nothing materialized yet

    for key in batches:
        dg.materialize([blob_inventory, wavelet_hashes], partition_key=key, instance=instance, resources=resources)
    assert partitions_needing_work(instance, KEYS) == []

    # Re-materializing only the upstream asset makes the downstream one stale.
    dg.materialize([blob_inventory], partition_key=batches[0], instance=instance, resources=resources)
    assert partitions_needing_work(instance, KEYS) == [batches[0]]

    # A run that fails (its manifest vanished) marks the batch failed: it needs work again.
    os.remove(BatchLedger(layout).manifest_path(batches[1]))
    result = dg.materialize([blob_inventory], partition_key=batches[1], instance=instance,
                            resources=resources, raise_on_error=False)
    assert not result.success
    assert partitions_needing_work(instance, KEYS) == batches

    with dg.build_schedule_context(instance=instance, scheduled_execution_time=NOW) as context:
        assert sorted(r.partition_key for r in backfill_schedule(context)) == batches


def test_schedule_skips_batches_with_a_run_in_flight(instance_with_ref, resources, layout):
    instance = instance_with_ref
    batches = BatchLedger(layout).register(resources["image_source"].open().iter_blobs(), 10)
    instance.add_dynamic_partitions("batches", batches)
    from dedup_assets.definitions import defs

    job = defs.resolve_job_def("dedup_job")
    instance.create_run_for_job(job, tags={"dagster/partition": batches[0]}, status=dg.DagsterRunStatus.STARTED)
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=NOW) as context:
        requests = backfill_schedule(context)
    assert [r.partition_key for r in requests] == batches[1:]
