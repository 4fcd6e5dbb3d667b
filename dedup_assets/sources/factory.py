"""Build the source that `DEDUP_SOURCE` names: a folder, or an Azure container."""

from __future__ import annotations

import os
import re
from pathlib import Path

from dedup_assets.settings import SetupError, whole_number
from dedup_assets.sources.azure import (AzureBlobSource, AzureSettings, azure_address_hint, parse_azure_uri,
                                         without_query)
from dedup_assets.sources.local import LocalFolderSource

AZURE_ENV = ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_URL", "AZURE_STORAGE_KEY",
             "AZURE_STORAGE_SAS_TOKEN")


def is_azure(uri: str) -> bool:
    return uri.startswith(("az://", "abfs://"))


def open_source(uri: str, connection_string: str | None = None, account_url: str | None = None,
                account_key: str | None = None, sas_token: str | None = None,
                download_concurrency: int = 16):
    if is_azure(uri):
        credential = account_key or sas_token or None  # None: DefaultAzureCredential
        return AzureBlobSource(uri, connection_string=connection_string or None, account_url=account_url or None,
                               credential=credential, settings=AzureSettings(concurrency=download_concurrency))
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    elif re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", uri):
        # Not a folder: taken as one, `s3://bucket` would be looked for as ./s3:/bucket.
        raise SetupError(azure_address_hint(uri) or f"source {without_query(uri)!r}: this tool reads a folder, "
                         "or Azure Blob Storage as az://<container>/<optional prefix>")
    return LocalFolderSource(uri)


def source_from_environment():
    """The source of `DEDUP_SOURCE`, with Azure credentials from the environment."""
    values = {name: os.environ.get(name) for name in AZURE_ENV}
    return open_source(
        os.environ["DEDUP_SOURCE"],
        connection_string=values["AZURE_STORAGE_CONNECTION_STRING"],
        account_url=values["AZURE_STORAGE_ACCOUNT_URL"],
        account_key=values["AZURE_STORAGE_KEY"],
        sas_token=values["AZURE_STORAGE_SAS_TOKEN"],
        download_concurrency=whole_number("DEDUP_DOWNLOAD_CONCURRENCY"),
    )


def check_results_outside(source, layout) -> None:
    """Refuse a home (or data root) inside the folder it scans: its thumbnails, Parquet
    files and Dagster's own files would be listed as new blobs by the next run, the
    thumbnails found as copies of the images they show (probed: 12 images, then 12
    "duplicate groups" of an image and its own thumbnail), more of them each run."""
    if isinstance(source, AzureBlobSource):
        if not layout.is_local and is_azure(layout.data_url):
            container, prefix = parse_azure_uri(layout.data_url)
            if (_account_name(layout.fs) == source.client.account_name
                    and container == source.container and prefix.startswith(source.prefix)):
                raise SetupError(f"DEDUP_DATA_URL={without_query(layout.data_url)} lies inside the source "
                                 f"{source.describe()}: the results would be listed as new images by the next "
                                 "run; put them outside it")
        return
    folders = {"DEDUP_HOME": Path(layout.home)}
    if layout.is_local:
        folders["DEDUP_DATA_URL"] = Path(layout.data_root)
    for setting, folder in folders.items():
        if folder.resolve().is_relative_to(source.root):
            raise SetupError(f"{setting}={folder} lies inside the source folder {source.root}: the results would "
                             "be listed as new images by the next run; put them outside it")


def _account_name(fs) -> str | None:
    """The storage account of an adlfs file system (named, or in its connection string)."""
    if name := getattr(fs, "account_name", None):
        return name
    client = getattr(fs, "service_client", None)
    return getattr(client, "account_name", None)
