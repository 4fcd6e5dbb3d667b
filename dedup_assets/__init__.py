"""dedup_assets: near-duplicate images in Azure Blob Storage, as Dagster assets."""

from dedup_assets.memory import tune_malloc

# Before any stage starts its threads: arenas are given to threads as they first allocate.
tune_malloc()
