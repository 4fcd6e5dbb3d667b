"""dedup_assets: near-duplicate images in Azure Blob Storage, as Dagster assets."""

from dedup_assets.memory import limit_malloc_arenas

# Before any stage starts its threads: arenas are given to threads as they first allocate.
limit_malloc_arenas()
