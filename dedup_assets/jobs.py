import dagster as dg

from dedup_assets.assets import pipeline_assets, review_assets
from dedup_assets.partitions import batch_partitions

# The whole cascade for one batch; sensors, schedules and `dedup run` launch it.
dedup_job = dg.define_asset_job(
    "dedup_job",
    selection=dg.AssetSelection.assets(*pipeline_assets),
    partitions_def=batch_partitions,
)

# The manifest, the gallery and the (dry-run by default) actions, over all batches.
review_job = dg.define_asset_job("review_job", selection=dg.AssetSelection.assets(*review_assets))
