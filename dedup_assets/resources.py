"""Resources: where the images come from, where outputs go, how batches are cut."""

from __future__ import annotations

import dagster as dg

from dedup_assets.ledger import BatchLedger
from dedup_assets.sources.local import open_source
from dedup_assets.storage import StorageLayout


class ImageSourceResource(dg.ConfigurableResource):
    """The images to deduplicate: a local folder (Azure containers come later)."""

    uri: str

    def open(self):
        return open_source(self.uri)


class DedupStorageResource(dg.ConfigurableResource):
    """`DEDUP_HOME`: Parquet partitions, thumbnails, the batch ledger, the DuckDB catalog."""

    home: str

    @property
    def layout(self) -> StorageLayout:
        return StorageLayout(self.home)

    @property
    def ledger(self) -> BatchLedger:
        return BatchLedger(self.layout)


class BatchingResource(dg.ConfigurableResource):
    """How new blobs are cut into batches (partitions)."""

    max_batch_size: int = 1000
    # Blobs modified more recently than this may still be being written: wait a tick.
    settle_seconds: int = 5
