"""An Azure Blob Storage container (optionally a prefix in it) as a blob source.

`az://<container>/<prefix>` names it; the account and credentials come from the caller
(the Dagster resource reads them from the environment). Every request goes through the
SDK's bounded exponential retry (timeouts, 5xx, dropped connections) and, around it, this
module's handling of HTTP 429 and `Retry-After`, which the SDK does not honour.
"""

from __future__ import annotations

import email.utils
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterator, TypeVar
from urllib.parse import urlsplit

from azure.core import MatchConditions
from azure.core.exceptions import (ClientAuthenticationError, HttpResponseError, ResourceExistsError,
                                   ResourceModifiedError, ResourceNotFoundError, ServiceRequestError,
                                   ServiceResponseError)

from dedup_assets.settings import SetupError
from dedup_assets.sources import BlobChangedError, BlobInfo, BlobOfflineError, SourceUnavailableError

log = logging.getLogger(__name__)
T = TypeVar("T")

THROTTLED = {429, 503}
# Set Blob Tier changes no etag: a rehydrated blob is the version already batched, so its
# batch is run again when a listing shows it online (`BatchLedger.readable_again`).
ARCHIVED = ("offline in the Archive access tier; once its tier is set to Hot, Cool or Cold (rehydration takes "
            "hours) its batch runs again")
CHECK_CREDENTIALS = ("check the credentials: an expired SAS token or one without read and list permission, "
                     "a rotated key, a missing role, a firewall rule")
_SECRET_PATTERNS = [
    re.compile(r"(AccountKey=)[^;\s]+", re.IGNORECASE),
    re.compile(r"(SharedAccessSignature=)[^;\s]+", re.IGNORECASE),
    re.compile(r"([?&]sig=)[^&\s]+", re.IGNORECASE),
]


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove account keys, SAS signatures and any known secret value from text."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(r"\1***", text)
    return text


def parse_azure_uri(uri: str) -> tuple[str, str]:
    """`az://container/some/prefix` → ("container", "some/prefix/")."""
    match = re.fullmatch(r"(?:az|abfs)://([^/@]+)(?:/(.*))?", uri)
    if not match:
        raise SetupError(azure_address_hint(uri) or f"not an Azure source: {without_query(uri)!r} "
                         "(expected az://<container>/<optional prefix>)")
    container, prefix = match.group(1), (match.group(2) or "").strip("/")
    return container, f"{prefix}/" if prefix else ""


def without_query(uri: str) -> str:
    """An address as it may be shown: a query can hold a SAS token."""
    return uri.partition("?")[0]


def azure_address_hint(uri: str) -> str | None:
    """How to give an Azure blob URL this tool does not take as it is — the portal's
    https://<account>.blob.core.windows.net/<container>/..., or abfss://<container>@<account>
    .dfs.core.windows.net/... — as az:// plus the account URL; None for other addresses."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if ".blob." not in host and ".dfs." not in host:
        return None
    container, _, prefix = parts.path.strip("/").partition("/")
    if "@" in parts.netloc:
        container, prefix = parts.netloc.split("@")[0], parts.path.strip("/")
    sas = "; a SAS token goes in AZURE_STORAGE_SAS_TOKEN" if parts.query else ""
    return (f"source {without_query(uri)!r}: give an Azure container as DEDUP_SOURCE=az://{container}"
            f"{'/' + prefix if prefix else ''} with AZURE_STORAGE_ACCOUNT_URL="
            f"https://{host.replace('.dfs.', '.blob.')}{sas}")


def retry_after_seconds(error: HttpResponseError, default: float) -> float:
    headers = getattr(error.response, "headers", None) or {}
    value = headers.get("Retry-After") or headers.get("retry-after")
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        moment = email.utils.parsedate_to_datetime(value)
        return max(0.0, (moment - datetime.now(timezone.utc)).total_seconds())


def with_throttle_retry(call: Callable[[], T], attempts: int = 8, max_wait: float = 60.0,
                        sleep: Callable[[float], None] = time.sleep) -> T:
    """Run `call`, waiting out 429/503 answers: `Retry-After` when given (capped at
    `max_wait`), else exponential backoff; bounded to `attempts` tries."""
    for attempt in range(attempts):
        try:
            return call()
        except HttpResponseError as error:
            if error.status_code not in THROTTLED or attempt == attempts - 1:
                raise
            wait = min(retry_after_seconds(error, default=min(2.0**attempt, max_wait)), max_wait)
            log.info("throttled (HTTP %s); retrying in %.1f s", error.status_code, wait)
            sleep(wait)
    raise AssertionError("unreachable")


@dataclass
class AzureSettings:
    concurrency: int = 16  # parallel downloads, and the HTTP connection pool size
    connection_timeout: int = 10  # seconds
    read_timeout: int = 60
    retry_total: int = 4  # the SDK's exponential retry: 1, 2, 4, 8 s (+ jitter)
    page_size: int = 5000  # blobs per listing page (the service maximum)


class AzureBlobSource:
    """Blobs of one container under a prefix; names are relative to the prefix."""

    is_remote = True
    supports_tags = True

    def __init__(self, uri: str, connection_string: str | None = None, account_url: str | None = None,
                 credential=None, settings: AzureSettings | None = None):
        self.uri = uri
        self.container, self.prefix = parse_azure_uri(uri)
        if not connection_string and not account_url:
            raise SetupError(
                "no Azure account configured: set AZURE_STORAGE_CONNECTION_STRING, or "
                "AZURE_STORAGE_ACCOUNT_URL (with AZURE_STORAGE_KEY, AZURE_STORAGE_SAS_TOKEN, "
                "or an identity DefaultAzureCredential can find)"
            )
        self._connection_string = connection_string
        self._account_url = account_url
        self._credential = credential
        self.settings = settings or AzureSettings()
        self._client = None

    @property
    def download_concurrency(self) -> int:
        return self.settings.concurrency

    def _secrets(self) -> tuple[str, ...]:
        credential = self._credential
        values = [self._connection_string or ""]
        if isinstance(credential, str):
            values.append(credential)
        elif isinstance(credential, dict):
            values.extend(str(v) for v in credential.values())
        return tuple(v for v in values if v)

    def __repr__(self) -> str:  # never the credentials
        return f"AzureBlobSource({self.uri!r})"

    def describe(self) -> str:
        return self.uri

    @property
    def identity(self) -> str:
        """Which blobs these are: a container of the same name in another account is another
        source (a development and a production account, say)."""
        return f"{self.uri} in storage account {self.client.account_name}"

    @property
    def client(self):
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def _make_client(self):
        import requests
        from azure.core.pipeline.transport import RequestsTransport
        from azure.storage.blob import BlobServiceClient, ExponentialRetry

        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=self.settings.concurrency,
                                                pool_maxsize=self.settings.concurrency)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        options = dict(
            retry_policy=ExponentialRetry(initial_backoff=1, increment_base=2,
                                          retry_total=self.settings.retry_total),
            transport=RequestsTransport(session=session, session_owner=False),
            connection_timeout=self.settings.connection_timeout,
            read_timeout=self.settings.read_timeout,
            # Azurite and older accounts may lag the SDK's newest API version.
            api_version="2025-11-05",
        )
        if self._connection_string:
            service = BlobServiceClient.from_connection_string(self._connection_string, **options)
        else:
            credential = self._credential
            if credential is None:
                from azure.identity import DefaultAzureCredential

                credential = DefaultAzureCredential()
            service = BlobServiceClient(self._account_url, credential=credential, **options)
        self._service = service
        return service.get_container_client(self.container)

    def _call(self, call: Callable[[], T], what: str) -> T:
        try:
            return with_throttle_retry(call)
        except (BlobChangedError, BlobOfflineError, ResourceNotFoundError):
            raise
        except Exception as error:
            # SDK errors can echo request URLs (with SAS signatures) or headers.
            text = redact(str(error), self._secrets())
            if isinstance(error, ClientAuthenticationError) or getattr(error, "status_code", None) in (401, 403):
                code = getattr(error, "error_code", None) or getattr(error, "status_code", None) or "no credential"
                code = getattr(code, "value", code)  # the SDK's StorageErrorCode enum
                raise SourceUnavailableError(f"{what} failed: access refused ({code}); {CHECK_CREDENTIALS}") from None
            if isinstance(error, (ServiceRequestError, ServiceResponseError)):  # after the SDK's retries
                raise SourceUnavailableError(f"{what} failed: no answer from the storage service "
                                             f"({text.splitlines()[0][:300]})") from None
            raise RuntimeError(f"{what} failed: {text[:500]}") from None

    def iter_blobs(self, continuation_token: str | None = None) -> Iterator[BlobInfo]:
        """Every blob under the prefix, page by page (a page is the SDK's own unit, and
        its continuation token the only way to resume)."""
        for page, _ in self.list_pages(continuation_token):
            yield from page

    def list_pages(self, resume: str | None = None) -> Iterator[tuple[list[BlobInfo], str | None]]:
        """The listing's pages, each with the continuation token that resumes after it
        (None after the last page)."""
        pages = self.client.list_blobs(name_starts_with=self.prefix or None,
                                       results_per_page=self.settings.page_size).by_page(resume)
        while True:
            try:
                page = self._call(lambda: next(pages, None), f"listing {self.uri}")
            except ResourceNotFoundError:
                raise SetupError(f"listing {self.uri}: the storage account {self._service.account_name!r} has "
                                 f"no container {self.container!r}") from None
            if page is None:
                return
            yield [self._blob_info(blob) for blob in page], pages.continuation_token or None
            if not pages.continuation_token:
                return

    def not_listed_note(self) -> str | None:
        return None  # a container's listing holds every blob under the prefix

    def _blob_info(self, blob) -> BlobInfo:
        return BlobInfo(
            name=blob.name[len(self.prefix):],
            size=blob.size,
            etag=blob.etag.strip('"'),
            last_modified=blob.last_modified.astimezone(timezone.utc),
            content_md5=bytes(blob.content_settings.content_md5).hex()
            if blob.content_settings and blob.content_settings.content_md5 else None,
            offline=blob.blob_tier == "Archive",  # a rehydrating blob stays Archive until done
        )

    def read_bytes(self, name: str, expected_etag: str | None = None) -> bytes:
        return self.read_head(name, None, expected_etag)

    def read_head(self, name: str, length: int | None, expected_etag: str | None = None) -> bytes:
        """The first `length` bytes (a ranged GET; None: the whole blob)."""
        blob = self.client.get_blob_client(self.prefix + name)
        conditions = {}
        if expected_etag:
            conditions = {"etag": f'"{expected_etag}"', "match_condition": MatchConditions.IfNotModified}
        if length is not None:
            conditions.update(offset=0, length=length)

        def download() -> bytes:
            try:
                return blob.download_blob(max_concurrency=1, **conditions).readall()
            except ResourceModifiedError:
                raise BlobChangedError(
                    "blob changed since it was inventoried; its new version gets its own batch"
                ) from None
            except HttpResponseError as error:
                if error.error_code == "BlobArchived":
                    raise BlobOfflineError(ARCHIVED) from None
                raise

        try:
            return self._call(download, f"downloading {name}")
        except ResourceNotFoundError:
            raise FileNotFoundError(name) from None

    # Actions on duplicates (dedup_assets.actions). None of them deletes anything.

    def _check_etag(self, blob, expected_etag: str | None) -> None:
        if expected_etag and blob.get_blob_properties().etag.strip('"') != expected_etag:
            raise BlobChangedError("blob changed since the decision; left alone")

    def set_tags(self, name: str, tags: dict[str, str], expected_etag: str | None = None) -> None:
        """Add blob index tags, keeping the blob's other tags."""
        blob = self.client.get_blob_client(self.prefix + name)

        def tag() -> None:
            self._check_etag(blob, expected_etag)
            blob.set_blob_tags({**blob.get_blob_tags(), **tags})

        try:
            self._call(tag, f"tagging {name}")
        except ResourceNotFoundError:
            raise FileNotFoundError(name) from None

    def check_quarantine(self, quarantine: str) -> None:
        container, prefix = parse_azure_uri(quarantine)
        if container == self.container and prefix.startswith(self.prefix):
            raise ValueError(
                f"the quarantine location {quarantine} lies inside the scanned {self.uri}: its copies would be "
                "scanned as new images; choose another container or a prefix outside the source's"
            )

    def quarantine_target(self, quarantine: str, name: str) -> str:
        container, prefix = parse_azure_uri(quarantine)
        return f"az://{container}/{prefix}{name}"

    def copy_to(self, name: str, target: str, expected_etag: str | None = None, poll_seconds: float = 0.2) -> None:
        """Server-side copy of a blob to `az://container/path` (same account), checked
        against the etag the decision was made on."""
        container, path = parse_azure_uri(target)
        source = self.client.get_blob_client(self.prefix + name)
        destination = self._service.get_blob_client(container, path.rstrip("/"))

        def copy() -> None:
            self._check_etag(source, expected_etag)
            try:
                self._service.get_container_client(container).create_container()
            except ResourceExistsError:
                pass
            destination.start_copy_from_url(source.url)
            while (status := destination.get_blob_properties().copy.status) == "pending":
                time.sleep(poll_seconds)
            if status != "success":
                raise RuntimeError(f"copy ended with status {status}")

        try:
            self._call(copy, f"copying {name}")
        except ResourceNotFoundError:
            raise FileNotFoundError(name) from None
