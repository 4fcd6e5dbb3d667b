"""The new-blobs sensor: new blobs in the source become new batch partitions and runs."""

from __future__ import annotations

import json
import time

import dagster as dg

from dedup_assets.assets import pipeline_assets
from dedup_assets.jobs import dedup_job
from dedup_assets.ledger import BatchLedger, ResumableListing, batch_sequence
from dedup_assets.partitions import batch_partitions
from dedup_assets.resources import BatchingResource, DedupStorageResource, ImageSourceResource
from dedup_assets.sources.factory import check_results_outside
from dedup_assets.work_planning import partitions_in_progress, partitions_needing_work, readable_again_requests


# Listing per tick: Dagster stops a sensor's evaluation after 60 s (its default), and a
# listing of millions of blobs takes minutes; it goes on at the next tick, and the batches
# are cut once it is complete. The rest of a tick (cutting batches: ~10 s at 3,000 batches)
# fits in what is left.
LISTING_SECONDS_PER_TICK = 30.0


def register_new_batches(
    ledger: BatchLedger, image_source: ImageSourceResource, batching: BatchingResource,
    log=None,
) -> list[str]:
    """New batches from the source's listing once it is complete; none while it is under
    way (it goes on at the next call). A listing finished early in this call is used at
    once, so a small source's new blobs are batched at the tick that sees them."""
    source = image_source.open()
    check_results_outside(source, ledger.layout)
    ledger.claim_source(source.identity)
    listing = ResumableListing(ledger.layout.home, image_source.uri)
    started, listed_before = time.monotonic(), listing.complete
    complete = listing.advance(source, LISTING_SECONDS_PER_TICK)
    if log and (note := source.not_listed_note()):
        log.warning(note)
    if not complete:
        if log:
            log.info(f"listing {image_source.uri}: {listing.blobs_listed:,} blobs so far, continued next tick")
        return []
    if not listed_before and time.monotonic() - started > LISTING_SECONDS_PER_TICK / 2:
        return []  # cut at the next tick, in a tick of its own
    return ledger.register_listing(listing, max_batch_size=batching.max_batch_size,
                                   settle_seconds=batching.settle_seconds)


@dg.sensor(job=dedup_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def new_blobs_sensor(
    context: dg.SensorEvaluationContext,
    image_source: ImageSourceResource,
    storage: DedupStorageResource,
    batching: BatchingResource,
) -> dg.SensorResult | dg.SkipReason:
    """Lists the source, cuts blobs not yet in any batch into new batches, adds their
    partitions and requests one run per batch.

    Exactly-once comes from two records: the ledger (which blob versions are batched,
    written before anything else) and the cursor (the last batch whose run was
    requested). A tick that died after writing a manifest is completed by the next one.
    """
    cursor = json.loads(context.cursor) if context.cursor else {}
    last_requested = cursor.get("last_requested_sequence", 0)
    ledger = storage.ledger
    created = register_new_batches(ledger, image_source, batching, context.log)
    all_keys = ledger.batch_keys()
    known = set(context.instance.get_dynamic_partitions(batch_partitions.name))
    to_add = [key for key in all_keys if key not in known]
    unrequested = [key for key in all_keys if batch_sequence(key) > last_requested]
    # Batches that `dedup run` already materialized, or is running now, need no run.
    busy = partitions_in_progress(context.instance, dedup_job.name)
    needing = set(partitions_needing_work(context.instance, [a.key for a in pipeline_assets], unrequested))
    to_request = [key for key in unrequested if key in needing and key not in busy]
    # Blobs deleted or overwritten: re-run their batches so their old contents leave the clusters.
    tombstones = ledger.tombstones()
    seen_tombstones = cursor.get("tombstones_seen", 0)
    touched = set(tombstones["batch"].slice(seen_tombstones).to_list())
    rerun = sorted(touched - busy - set(to_request))
    # A batch still running gets its re-run on a later tick (run keys keep it to one).
    tombstones_seen = seen_tombstones if touched & busy else tombstones.height
    # Blobs restored from an archive tier: re-run the batches that found them offline.
    readable = readable_again_requests(context.instance, ledger, skip=busy | set(to_request) | set(rerun))
    if not to_add and not unrequested and not rerun and not readable:
        return dg.SkipReason("no new, deleted or restored blobs")
    if created:
        context.log.info(f"cut {len(created)} new batch(es): {created[0]}..{created[-1]}")
    if rerun:
        context.log.info(f"{tombstones.height - seen_tombstones} blob(s) deleted or overwritten; re-running {rerun}")
    requests = [dg.RunRequest(partition_key=key, run_key=key) for key in to_request]
    if readable:
        context.log.info(f"blob(s) readable again; re-running {[r.partition_key for r in readable]}")
    requests += [dg.RunRequest(partition_key=key, run_key=f"{key}:deletions:{tombstones.height}") for key in rerun]
    requests += readable
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[batch_partitions.build_add_request(to_add)] if to_add else [],
        cursor=json.dumps(
            {"last_requested_sequence": batch_sequence(unrequested[-1]) if unrequested else last_requested,
             "tombstones_seen": tombstones_seen}
        ),
    )
