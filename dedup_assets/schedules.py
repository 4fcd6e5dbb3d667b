"""Scheduled partition backfills: re-run batches that are missing, failed or stale."""

from __future__ import annotations

import dagster as dg

from dedup_assets.assets import pipeline_assets
from dedup_assets.jobs import dedup_job
from dedup_assets.work_planning import partitions_in_progress, partitions_needing_work


@dg.schedule(job=dedup_job, cron_schedule="0 * * * *", default_status=dg.DefaultScheduleStatus.RUNNING)
def backfill_schedule(context: dg.ScheduleEvaluationContext):
    """Every hour, one run per batch whose outputs are missing, failed or stale."""
    asset_keys = [asset.key for asset in pipeline_assets]
    busy = partitions_in_progress(context.instance, dedup_job.name)
    todo = [p for p in partitions_needing_work(context.instance, asset_keys) if p not in busy]
    if not todo:
        return dg.SkipReason("every batch is up to date")
    stamp = context.scheduled_execution_time.isoformat()
    return [dg.RunRequest(partition_key=key, run_key=f"{key}@{stamp}") for key in todo]
