from dataclasses import replace

from dedup_assets.hash_stage import STAGE
from dedup_assets.ledger import BatchLedger
from dedup_assets.work_planning import batches_readable_again
from dedup_assets_tests.test_ledger import NOW, blob


def fail_offline(layout, batch, *names):
    layout.write_failures(STAGE, batch, [{"blob_name": n, "stage": STAGE, "reason": "offline", "offline": True}
                                         for n in names])


def test_a_batch_is_readable_again_when_its_offline_blob_is_listed_online_as_the_same_version(layout):
    ledger = BatchLedger(layout)
    cold = replace(blob("cold"), offline=True)
    (key,) = ledger.register([blob("warm"), cold], 10, now=NOW)
    assert ledger.offline_versions().rows() == [("cold", "e1")]
    fail_offline(layout, key, "cold")
    assert batches_readable_again(ledger) == []  # still offline

    ledger.register([blob("warm"), blob("cold")], 10, now=NOW)  # restored: same etag, no new batch
    assert ledger.offline_versions().height == 0
    assert batches_readable_again(ledger) == [key]

    layout.write_failures(STAGE, key, [])  # its re-run read it
    assert batches_readable_again(ledger) == []


def test_an_offline_blob_overwritten_or_deleted_is_no_reason_to_rerun_its_batch(layout):
    ledger = BatchLedger(layout)
    (key,) = ledger.register([replace(blob("a"), offline=True), replace(blob("b"), offline=True)], 10, now=NOW)
    fail_offline(layout, key, "a", "b")
    # "a" has new content (its new version gets its own batch), "b" is gone.
    assert len(ledger.register([blob("a", etag="e2")], 10, now=NOW)) == 1
    assert batches_readable_again(ledger) == []
