from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from dedup_assets.ledger import BatchLedger
from dedup_assets.sources import BlobInfo

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def blob(name, etag="e1", age_seconds=600):
    return BlobInfo(name=name, size=10, etag=etag, last_modified=NOW - timedelta(seconds=age_seconds))


def test_cuts_bounded_batches_and_never_rebatches_a_version(layout):
    ledger = BatchLedger(layout)
    keys = ledger.register([blob(f"b{i:02d}") for i in range(25)], max_batch_size=10, now=NOW)
    assert keys == ["batch-000001", "batch-000002", "batch-000003"]
    assert [ledger.read_manifest(k).height for k in keys] == [10, 10, 5]
    # The same listing again, and a reordered one: nothing new.
    assert ledger.register([blob(f"b{i:02d}") for i in range(25)], 10, now=NOW) == []
    assert ledger.register([blob(f"b{i:02d}") for i in reversed(range(25))], 10, now=NOW) == []
    names = [n for k in ledger.batch_keys() for n in ledger.read_manifest(k)["blob_name"]]
    assert sorted(names) == sorted(set(names))


def test_new_content_under_an_old_name_is_batched_again(layout):
    ledger = BatchLedger(layout)
    ledger.register([blob("a"), blob("b")], 10, now=NOW)
    keys = ledger.register([blob("a", etag="e2"), blob("b")], 10, now=NOW)
    assert len(keys) == 1
    assert ledger.read_manifest(keys[0])["etag"].to_list() == ["e2"]
    # The version batched first is gone: its batch has to decide its groups again.
    assert ledger.tombstones().select("blob_name", "etag", "batch").rows() == [("a", "e1", "batch-000001")]
    ledger.register([blob("a", etag="e2"), blob("b")], 10, now=NOW)
    assert ledger.tombstones().height == 1


def test_blobs_still_being_written_wait_for_a_later_call(layout):
    ledger = BatchLedger(layout)
    keys = ledger.register([blob("old"), blob("fresh", age_seconds=1)], 10, settle_seconds=5, now=NOW)
    assert ledger.read_manifest(keys[0])["blob_name"].to_list() == ["old"]
    later = ledger.register([blob("old"), blob("fresh", age_seconds=1)], 10, settle_seconds=5,
                            now=NOW + timedelta(seconds=10))
    assert ledger.read_manifest(later[0])["blob_name"].to_list() == ["fresh"]


def test_rejects_a_zero_batch_size(layout):
    with pytest.raises(ValueError):
        BatchLedger(layout).register([blob("a")], max_batch_size=0)


def fail_offline(layout, batch, *names):
    layout.write_failures("wavelet_hashes", batch, [
        {"blob_name": name, "stage": "wavelet_hashes", "reason": "offline", "offline": True} for name in names])


def test_a_blob_found_offline_is_readable_again_when_listed_online_as_the_same_version(layout):
    ledger = BatchLedger(layout)
    (key,) = ledger.register([blob("warm"), replace(blob("cold"), offline=True)], 10, now=NOW)
    fail_offline(layout, key, "cold")
    assert ledger.register([blob("warm"), replace(blob("cold"), offline=True)], 10, now=NOW) == []
    assert ledger.readable_again().height == 0  # still offline

    # Restored: the same etag, so no new batch; its own batch is to run again.
    assert ledger.register([blob("warm"), blob("cold")], 10, now=NOW) == []
    assert ledger.readable_again().rows() == [("cold", "e1", key)]

    layout.write_failures("wavelet_hashes", key, [])  # the re-run read it
    ledger.register([blob("warm"), blob("cold")], 10, now=NOW)
    assert ledger.readable_again().height == 0


def test_an_offline_blob_overwritten_or_deleted_is_not_readable_again(layout):
    ledger = BatchLedger(layout)
    (key,) = ledger.register([replace(blob("a"), offline=True), replace(blob("b"), offline=True)], 10, now=NOW)
    fail_offline(layout, key, "a", "b")
    # "a" has new content (its new version gets a batch of its own), "b" is gone.
    assert len(ledger.register([blob("a", etag="e2")], 10, now=NOW)) == 1
    assert ledger.readable_again().height == 0



class PagedSource:
    """A listing in fixed pages whose resumption fails as told: a continuation token the
    service no longer takes is a fault Azurite does not produce (it lists on from any
    marker), so it is injected here."""

    def __init__(self, pages):
        self.pages, self.error = pages, None

    def list_pages(self, resume=None):
        if resume and self.error:
            raise self.error
        for number in range(int(resume or 0), len(self.pages)):
            yield self.pages[number], str(number + 1) if number + 1 < len(self.pages) else None


def test_a_listing_goes_on_over_calls_and_starts_over_when_its_token_is_refused(layout):
    from dedup_assets.ledger import ResumableListing
    from dedup_assets.sources import SourceUnavailableError

    source = PagedSource([[blob(f"p{page}-{i}") for i in range(3)] for page in range(4)])
    listing = ResumableListing(layout.home, "az://photos")
    assert not listing.advance(source, seconds=0) and listing.blobs_listed == 3  # one page at least
    source.error = SourceUnavailableError("listing failed: no answer from the storage service")
    with pytest.raises(SourceUnavailableError):
        listing.advance(source, seconds=0)
    assert listing.blobs_listed == 3  # kept: it goes on once the source answers
    source.error = RuntimeError("listing failed: InvalidQueryParameterValue (marker)")
    with pytest.raises(RuntimeError):
        listing.advance(source, seconds=0)
    assert listing.blobs_listed == 0 and not (layout.home / ".listing").exists()  # starts over
    source.error = None
    assert not listing.advance(source, seconds=0)
    assert ResumableListing(layout.home, "az://other").blobs_listed == 0  # another source's listing starts afresh
    assert listing.advance(source, seconds=60) and listing.blobs_listed == 12
    keys = BatchLedger(layout).register_listing(listing, max_batch_size=5, now=NOW)
    assert [BatchLedger(layout).read_manifest(k).height for k in keys] == [5, 5, 2]
    assert not listing.complete and listing.blobs_listed == 0  # cleared for the next one


def test_a_data_root_batches_one_source_and_refuses_another(layout):
    from dedup_assets.settings import SetupError

    ledger = BatchLedger(layout)
    ledger.claim_source("/photos/2023")
    ledger.claim_source("/photos/2023")  # the same source, again and again
    with pytest.raises(SetupError, match="holds the batches of /photos/2023, not of /photos/2024: give that source"):
        ledger.claim_source("/photos/2024")
    # The same blobs moved to a new address: the person says so by removing the record.
    layout.remove([ledger.source_path])
    ledger.claim_source("/mnt/archive/photos/2023")
    with pytest.raises(SetupError):
        ledger.claim_source("/photos/2023")
