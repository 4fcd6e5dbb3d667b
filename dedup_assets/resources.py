"""Resources: where the images come from, where outputs go, how batches are cut."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from dedup_assets.ledger import BatchLedger
from dedup_assets.sources.factory import open_source
from dedup_assets.storage import StorageLayout, data_storage_options


class ImageSourceResource(dg.ConfigurableResource):
    """The images to deduplicate: a local folder, or `az://<container>/<prefix>`.

    For Azure, either a connection string, or an account URL with an account key, a SAS
    token or neither (then DefaultAzureCredential: managed identity, CLI login, ...).
    Secrets come from the environment through `dg.EnvVar` and are never logged.
    """

    uri: str
    # Secrets stay out of repr(), and so out of any log line that prints the resource.
    connection_string: str | None = Field(default=None, repr=False)
    account_url: str | None = None
    account_key: str | None = Field(default=None, repr=False)
    sas_token: str | None = Field(default=None, repr=False)
    download_concurrency: int = 16

    def open(self):
        return open_source(self.uri, self.connection_string, self.account_url, self.account_key,
                           self.sas_token, self.download_concurrency)


class DedupStorageResource(dg.ConfigurableResource):
    """Where outputs go. `home` is local (the DuckDB catalog, the review folder); the data
    every step shares (Parquet partitions, thumbnails, the batch ledger) is under `home`
    too, unless `data_url` names another root, such as `az://<container>/<prefix>` for
    workers on several machines. Credentials for it come from the environment."""

    home: str
    data_url: str | None = None
    data_account_name: str | None = None
    data_connection_string: str | None = Field(default=None, repr=False)
    data_account_key: str | None = Field(default=None, repr=False)
    data_sas_token: str | None = Field(default=None, repr=False)

    @property
    def layout(self) -> StorageLayout:
        return StorageLayout(self.home, self.data_url, data_storage_options(
            self.data_connection_string, self.data_account_name, self.data_account_key, self.data_sas_token))

    @property
    def ledger(self) -> BatchLedger:
        return BatchLedger(self.layout)


class BatchingResource(dg.ConfigurableResource):
    """How new blobs are cut into batches (partitions)."""

    max_batch_size: int = 1000
    # Blobs modified more recently than this may still be being written: wait a tick.
    settle_seconds: int = 5
