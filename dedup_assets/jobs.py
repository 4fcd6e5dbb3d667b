import dagster as dg

from dedup_assets.assets import pipeline_assets, review_assets
from dedup_assets.partitions import batch_partitions

# A batch's run that outlives this is failed by the daemon's run monitoring (dagster.yaml):
# its worker is gone (a reboot), or it hangs. A batch of 1,000 takes 1-2 min on 2 cores.
BATCH_RUN_MAX_SECONDS = 3600

# The whole cascade for one batch; sensors, schedules and `dedup run` launch it.
dedup_job = dg.define_asset_job(
    "dedup_job",
    selection=dg.AssetSelection.assets(*pipeline_assets),
    partitions_def=batch_partitions,
    tags={"dagster/max_runtime": str(BATCH_RUN_MAX_SECONDS)},
)

# The manifest, the gallery and the (dry-run by default) actions, over all batches.
review_job = dg.define_asset_job("review_job", selection=dg.AssetSelection.assets(*review_assets))
