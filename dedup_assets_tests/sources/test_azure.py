"""The Azure source against Azurite (the real emulator): listing, downloads, faults."""

import hashlib
import io
import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from azure.storage.blob import ContainerSasPermissions, ContentSettings, generate_container_sas
from PIL import Image

from dedup_assets.hash_stage import hash_blobs
from dedup_assets.ledger import _to_frame
from dedup_assets.sources import BlobChangedError, BlobOfflineError, SourceUnavailableError
from dedup_assets.sources.azure import AzureBlobSource, AzureSettings, parse_azure_uri, with_throttle_retry
from dedup_assets_tests.azurite import ACCOUNT, KEY, Azurite
from dedup_assets_tests.fault_proxy import FaultProxy


def upload_many(container, names, payload=lambda name: name.encode(), workers=8):
    def put(name):
        data = payload(name)
        container.upload_blob(name, data, overwrite=True,
                              content_settings=ContentSettings(content_md5=bytearray(hashlib.md5(data).digest())))

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(put, names))


def small_jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_uri_names_container_and_prefix():
    assert parse_azure_uri("az://photos") == ("photos", "")
    assert parse_azure_uri("az://photos/2024/summer/") == ("photos", "2024/summer/")
    with pytest.raises(ValueError):
        parse_azure_uri("s3://bucket")


@pytest.mark.parametrize("address, written", [
    ("https://acct.blob.core.windows.net/images/2024/?sv=2024&sig=SECRETSIG",
     "DEDUP_SOURCE=az://images/2024 with AZURE_STORAGE_ACCOUNT_URL=https://acct.blob.core.windows.net; "
     "a SAS token goes in AZURE_STORAGE_SAS_TOKEN"),
    ("abfss://images@acct.dfs.core.windows.net/raw/2024",
     "DEDUP_SOURCE=az://images/raw/2024 with AZURE_STORAGE_ACCOUNT_URL=https://acct.blob.core.windows.net"),
    ("abfs://images@acct.dfs.core.windows.net",
     "DEDUP_SOURCE=az://images with AZURE_STORAGE_ACCOUNT_URL=https://acct.blob.core.windows.net"),
])
def test_an_azure_url_given_as_the_source_says_how_to_write_it_and_never_repeats_its_sas(address, written):
    from dedup_assets.settings import SetupError
    from dedup_assets.sources.factory import open_source

    with pytest.raises(SetupError) as raised:
        open_source(address)
    assert str(raised.value).endswith(written)
    assert "SECRETSIG" not in str(raised.value) and "sv=" not in str(raised.value)


def test_a_container_that_does_not_exist_is_named(azurite):
    from dedup_assets.settings import SetupError

    source = AzureBlobSource("az://photoz/2024", connection_string=azurite.connection_string)
    with pytest.raises(SetupError, match=f"the storage account '{ACCOUNT}' has no container 'photoz'"):
        list(source.iter_blobs())
    # A container of that name in another account would be another source.
    assert source.identity == f"az://photoz/2024 in storage account {ACCOUNT}"


def test_inventory_of_thousands_of_blobs_with_prefixes_and_pages(azurite, container):
    upload_many(container, [f"photos/2024/{i:05d}.jpg" for i in range(2000)])
    upload_many(container, [f"other/{i:03d}.jpg" for i in range(150)])
    source = AzureBlobSource(f"az://{container.container_name}/photos", connection_string=azurite.connection_string,
                             settings=AzureSettings(page_size=300))
    blobs = list(source.iter_blobs())
    assert [b.name for b in blobs] == [f"2024/{i:05d}.jpg" for i in range(2000)]
    first = blobs[0]
    assert first.size == len(b"photos/2024/00000.jpg") and first.etag and first.last_modified.tzinfo
    assert first.content_md5 == hashlib.md5(b"photos/2024/00000.jpg").hexdigest()
    # Resuming from the SDK's own continuation token gives exactly the rest.
    pages = container.list_blobs(name_starts_with="photos/", results_per_page=300).by_page()
    next(pages)
    rest = [b.name for b in source.iter_blobs(continuation_token=pages.continuation_token)]
    assert rest == [b.name for b in blobs[300:]]
    # Each page carries the token that resumes after it; the last, none.
    (first_page, token), *later = list(source.list_pages())
    assert [b.name for b in first_page] == [b.name for b in blobs[:300]] and later[-1][1] is None
    assert [b.name for page, _ in source.list_pages(token) for b in page] == [b.name for b in blobs[300:]]


def test_a_blob_changed_after_listing_is_reported_not_mixed_up(azurite, container):
    container.upload_blob("a.jpg", b"first", overwrite=True)
    source = AzureBlobSource(f"az://{container.container_name}", connection_string=azurite.connection_string)
    (listed,) = list(source.iter_blobs())
    container.upload_blob("a.jpg", b"second", overwrite=True)
    with pytest.raises(BlobChangedError):
        source.read_bytes("a.jpg", expected_etag=listed.etag)
    with pytest.raises(FileNotFoundError):
        source.read_bytes("missing.jpg")


def test_the_head_of_a_blob_is_read_alone_and_checked_against_its_listed_version(azurite, container):
    data = random.Random(2).randbytes(200_000)
    container.upload_blob("big.bin", data, overwrite=True)
    source = AzureBlobSource(f"az://{container.container_name}", connection_string=azurite.connection_string)
    (listed,) = list(source.iter_blobs())
    assert source.read_head("big.bin", 65536, expected_etag=listed.etag) == data[:65536]
    assert source.read_head("big.bin", 10**6) == data  # all of a shorter blob
    container.upload_blob("big.bin", data[::-1], overwrite=True)
    with pytest.raises(BlobChangedError):
        source.read_head("big.bin", 65536, expected_etag=listed.etag)


def test_an_archived_blob_is_listed_offline_and_its_download_says_why(azurite, container):
    container.upload_blob("cold.jpg", small_jpeg(1), overwrite=True)
    container.upload_blob("warm.jpg", small_jpeg(2), overwrite=True)
    container.get_blob_client("cold.jpg").set_standard_blob_tier("Archive")
    source = AzureBlobSource(f"az://{container.container_name}", connection_string=azurite.connection_string)
    listed = {blob.name: blob for blob in source.iter_blobs()}
    assert (listed["cold.jpg"].offline, listed["warm.jpg"].offline) == (True, False)
    with pytest.raises(BlobOfflineError, match="Archive access tier") as raised:
        source.read_bytes("cold.jpg", expected_etag=listed["cold.jpg"].etag)
    assert "\n" not in str(raised.value) and "RequestId" not in str(raised.value)

    container.get_blob_client("cold.jpg").set_standard_blob_tier("Hot")
    (restored,) = [blob for blob in source.iter_blobs() if blob.name == "cold.jpg"]
    assert not restored.offline and restored.etag == listed["cold.jpg"].etag  # the same version
    assert source.read_bytes("cold.jpg", expected_etag=restored.etag) == small_jpeg(1)


def sas_source(azurite, container, expires_in: float, **permissions) -> AzureBlobSource:
    expiry = datetime.now(timezone.utc) + timedelta(seconds=expires_in)
    token = generate_container_sas(ACCOUNT, container.container_name, account_key=KEY, expiry=expiry,
                                   permission=ContainerSasPermissions(**permissions))
    return AzureBlobSource(f"az://{container.container_name}", account_url=azurite.url, credential=token,
                           settings=AzureSettings(retry_total=0))


def test_refused_or_unanswered_requests_blame_the_source_not_the_blob(azurite, container):
    container.upload_blob("a.jpg", small_jpeg(1), overwrite=True)
    no_read = sas_source(azurite, container, 3600, list=True)
    (listed,) = no_read.iter_blobs()
    with pytest.raises(SourceUnavailableError, match=r"access refused \(AuthorizationPermissionMismatch\)"):
        no_read.read_bytes("a.jpg", expected_etag=listed.etag)
    expired = sas_source(azurite, container, -60, read=True, list=True)
    for attempt in (lambda: list(expired.iter_blobs()), lambda: expired.read_bytes("a.jpg")):
        with pytest.raises(SourceUnavailableError, match=r"access refused \(AuthorizationFailure\); check") as raised:
            attempt()
        assert "\n" not in str(raised.value) and "sig=" not in str(raised.value)
    elsewhere = azurite.connection_string.replace(str(azurite.port), str(free_port()))  # nothing listens
    unanswered = AzureBlobSource(f"az://{container.container_name}", connection_string=elsewhere,
                                 settings=AzureSettings(retry_total=0))
    with pytest.raises(SourceUnavailableError, match="no answer from the storage service"):
        unanswered.read_bytes("a.jpg")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_downloads_survive_an_emulator_restart(tmp_path, layout):
    emulator = Azurite(tmp_path / "azurite", persistent=True).start()
    try:
        container = emulator.container("restart")
        names = [f"img_{i:04d}.jpg" for i in range(400)]
        upload_many(container, names, payload=lambda n: small_jpeg(int(n[4:8])))
        source = AzureBlobSource("az://restart", connection_string=emulator.connection_string,
                                 settings=AzureSettings(concurrency=4))
        inventory = _to_frame(source.iter_blobs())
        outage = threading.Thread(target=lambda: (time.sleep(0.4), emulator.stop(graceful=True), time.sleep(2),
                                                   emulator.start()))
        outage.start()
        result = hash_blobs(source, inventory, layout, workers=2)
        outage.join()
        assert result.seconds > 2.0  # the run spanned the outage
        assert result.failures == []
        assert sorted(result.hashes["blob_name"]) == names  # nothing lost, nothing twice
    finally:
        emulator.stop()


def test_throttling_storms_are_survived_and_retry_after_is_honoured(azurite, container):
    container.upload_blob("a.jpg", b"payload", overwrite=True)
    proxy = FaultProxy(azurite.port)
    try:
        proxy_string = azurite.connection_string.replace(f":{azurite.port}/", f":{proxy.port}/")
        source = AzureBlobSource(f"az://{container.container_name}", connection_string=proxy_string)
        proxy.faults = [(429, "2"), (429, "1"), (503, "1"), (503, None)]
        started = time.monotonic()
        assert source.read_bytes("a.jpg") == b"payload"
        statuses = [status for _, _, status in proxy.log]
        assert statuses[:4] == [429, 429, 503, 503] and statuses[4] in (200, 206)
        times = [t for t, _, _ in proxy.log]
        assert times[1] - times[0] >= 2.0  # Retry-After: 2
        assert times[2] - times[1] >= 1.0  # Retry-After: 1
        assert time.monotonic() - started < 30
        # A storm longer than the retry budget ends in a clear error, not a hang.
        proxy.faults = [(429, "0")] * 20
        with pytest.raises(RuntimeError, match="429|Too Many"):
            source.read_bytes("a.jpg")
    finally:
        proxy.close()


def test_throttle_waits_are_bounded_and_follow_retry_after():
    from azure.core.exceptions import HttpResponseError

    class Response:
        status_code = 429
        reason = "Too Many Requests"
        headers = {"Retry-After": "120"}

        def text(self):
            return ""

    waits = []
    calls = iter([HttpResponseError(response=Response()), HttpResponseError(response=Response()), "ok"])

    def call():
        outcome = next(calls)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert with_throttle_retry(call, max_wait=5, sleep=waits.append) == "ok"
    assert waits == [5, 5]  # Retry-After honoured, capped


def test_errors_never_show_the_account_key(azurite):
    source = AzureBlobSource("az://no-such-container", connection_string=azurite.connection_string)
    with pytest.raises(Exception) as raised:
        list(source.iter_blobs())
    text = str(raised.value) + repr(source)
    assert KEY not in text and KEY[:20] not in text


def test_a_data_root_inside_the_scanned_container_prefix_is_refused(azurite, container):
    from dedup_assets.settings import SetupError
    from dedup_assets.sources.factory import check_results_outside, open_source
    from dedup_assets.storage import StorageLayout, data_storage_options

    name = container.container_name
    options = data_storage_options(connection_string=azurite.connection_string)
    photos = open_source(f"az://{name}/photos", connection_string=azurite.connection_string)
    for beside in (f"az://{name}/results", f"az://{name}/photos-results", f"az://other{name}/photos/results"):
        check_results_outside(photos, StorageLayout("home", beside, options))
    for inside in (f"az://{name}/photos/results", f"az://{name}/photos"):
        with pytest.raises(SetupError, match="lies inside the source"):
            check_results_outside(photos, StorageLayout("home", inside, options))
    with pytest.raises(SetupError, match="lies inside the source"):  # a whole container holds every prefix
        check_results_outside(open_source(f"az://{name}", connection_string=azurite.connection_string),
                              StorageLayout("home", f"az://{name}/dedup", options))
