import os
import shutil
import time

import dagster as dg
import polars as pl

from dedup_assets.ledger import BatchLedger
from dedup_assets.partitions import batch_partitions
from dedup_assets.resources import BatchingResource
from dedup_assets.sensors import new_blobs_sensor


def tick(instance, resources, cursor):
    """One sensor evaluation, applying its partition requests as the daemon would."""
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        result = new_blobs_sensor(context)
    if isinstance(result, dg.SkipReason):
        return [], cursor
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(batch_partitions.name, list(request.partition_keys))
    return result.run_requests, result.cursor


def batched_names(layout):
    ledger = BatchLedger(layout)
    return [n for key in ledger.batch_keys() for n in ledger.read_manifest(key)["blob_name"]]


def test_each_blob_lands_in_exactly_one_batch_across_ticks_and_restarts(
    instance, resources, image_folder, layout, demo_set, demo_truth
):
    requests, cursor = tick(instance, resources, None)
    assert [r.partition_key for r in requests] == ["batch-000001", "batch-000002"]
    assert all(r.run_key == r.partition_key for r in requests)
    assert instance.get_dynamic_partitions("batches") == ["batch-000001", "batch-000002"]

    # A restart that resumes from the stored cursor finds nothing new.
    assert tick(instance, resources, cursor) == ([], cursor)

    # Files copied in later, keeping their old timestamps, still form one new batch.
    extra = [row["name"] for row in demo_truth if not (image_folder / row["name"]).exists()][:3]
    for name in extra:
        shutil.copy2(demo_set / "images" / name, image_folder / name)
    requests, cursor = tick(instance, resources, cursor)
    assert [r.partition_key for r in requests] == ["batch-000003"]
    assert sorted(BatchLedger(resources["storage"].layout).read_manifest("batch-000003")["blob_name"]) == sorted(extra)

    names = batched_names(layout)
    assert sorted(names) == sorted(os.listdir(image_folder))
    assert len(names) == len(set(names))


def test_a_listing_longer_than_a_tick_goes_on_at_the_next_and_batches_once_complete(
    instance, resources, image_folder, layout, monkeypatch
):
    """Dagster stops a sensor's evaluation after 60 s; a container of millions of blobs
    takes minutes to list. Here one page of 5 per tick (the time per tick set to nothing)."""
    from dedup_assets import sensors
    from dedup_assets.sources import local

    monkeypatch.setattr(sensors, "LISTING_SECONDS_PER_TICK", 0.0)
    monkeypatch.setattr(local, "LOCAL_PAGE_SIZE", 5)
    names = sorted(os.listdir(image_folder))
    assert len(names) == 16  # pages of 5, 5, 5 and 1
    cursor = None
    for _ in range(4):  # each tick lists one page, and no batch is cut from a partial listing
        requests, cursor = tick(instance, resources, cursor)
        assert requests == [] and BatchLedger(layout).batch_keys() == []
    # The listing is complete; its batches are cut at the next tick, each blob once.
    requests, cursor = tick(instance, resources, cursor)
    assert [r.partition_key for r in requests] == ["batch-000001", "batch-000002"]
    assert sorted(batched_names(layout)) == names
    assert not (layout.home / ".listing").exists()
    # The next listing starts over: a blob deleted meanwhile is seen as deleted.
    (image_folder / names[0]).unlink()
    for _ in range(5):
        requests, cursor = tick(instance, resources, cursor)
    assert BatchLedger(layout).tombstones()["blob_name"].to_list() == [names[0]]


def test_a_file_still_being_written_waits_until_it_settles(instance, resources, image_folder):
    resources = {**resources, "batching": BatchingResource(max_batch_size=10, settle_seconds=2)}
    for path in image_folder.iterdir():
        os.utime(path, (time.time() - 60, time.time() - 60))
    _, cursor = tick(instance, resources, None)
    partial = image_folder / "incoming.jpg"
    partial.write_bytes(b"\xff\xd8\xff")  # half-copied just now
    assert tick(instance, resources, cursor)[0] == []
    time.sleep(2.1)
    requests, _ = tick(instance, resources, cursor)
    assert len(requests) == 1


def test_a_tick_that_died_after_writing_its_manifest_is_completed_by_the_next(
    instance, resources, layout
):
    _, cursor = tick(instance, resources, None)
    # Simulate a crash: a manifest was written but neither the partition nor the run followed.
    (resources["image_source"].open().root / "late.jpg").write_bytes(b"not an image")
    os.utime(resources["image_source"].open().root / "late.jpg", (0, 0))
    BatchLedger(layout).register(resources["image_source"].open().iter_blobs(), 10)
    requests, _ = tick(instance, resources, cursor)
    assert [r.partition_key for r in requests] == ["batch-000003"]
    assert "batch-000003" in instance.get_dynamic_partitions("batches")


def test_an_overwritten_blob_is_processed_again(instance, resources, image_folder, demo_set, demo_truth):
    _, cursor = tick(instance, resources, None)
    target = sorted(image_folder.iterdir())[0]
    replacement = next(row["name"] for row in demo_truth if not (image_folder / row["name"]).exists())
    shutil.copyfile(demo_set / "images" / replacement, target)
    os.utime(target, (time.time() - 60, time.time() - 60))
    requests, _ = tick(instance, resources, cursor)
    assert len(requests) == 2
    ledger = BatchLedger(resources["storage"].layout)
    manifest = ledger.read_manifest(requests[0].partition_key)
    assert manifest["blob_name"].to_list() == [target.name]
    # The batch that decided the old content runs again: its groups may have kept it.
    (old_batch,) = ledger.tombstones().filter(pl.col("blob_name") == target.name)["batch"].to_list()
    assert target.name in ledger.read_manifest(old_batch)["blob_name"].to_list()
    assert requests[1].partition_key == old_batch and requests[1].run_key.startswith(f"{old_batch}:deletions")


def test_batches_already_materialized_by_the_cli_are_not_run_again(instance, resources, layout):
    from dedup_assets.assets import pipeline_assets

    keys = BatchLedger(layout).register(resources["image_source"].open().iter_blobs(), 10)
    instance.add_dynamic_partitions("batches", keys)
    dg.materialize(pipeline_assets, partition_key=keys[0], instance=instance, resources=resources)
    requests, cursor = tick(instance, resources, None)
    assert [r.partition_key for r in requests] == keys[1:]
    assert tick(instance, resources, cursor)[0] == []


def test_a_deleted_blob_leaves_the_clusters(instance, resources, image_folder, layout):
    from dedup_assets.assets import pipeline_assets
    from dedup_assets.catalog import query

    requests, cursor = tick(instance, resources, None)
    for request in requests:
        dg.materialize(pipeline_assets, partition_key=request.partition_key, instance=instance, resources=resources)
    kept = query(layout, "select blob_name from clusters where is_representative and cluster_size > 1")
    victim = kept[0][0]
    (image_folder / victim).unlink()

    requests, cursor = tick(instance, resources, cursor)
    assert len(requests) == 1 and requests[0].run_key.startswith(requests[0].partition_key + ":deletions")
    # Hidden at once, before any run...
    assert query(layout, f"select count(*) from clusters where blob_name = '{victim}'")[0][0] == 0
    # ...and after the re-run its group has a new representative.
    dg.materialize(pipeline_assets, partition_key=requests[0].partition_key, instance=instance, resources=resources)
    assert query(layout, f"select count(*) from clusters where blob_name = '{victim}'")[0][0] == 0
    per_cluster = query(layout, "select cluster_id, sum(is_representative::int) from clusters group by 1")
    assert all(count == 1 for _, count in per_cluster)
    assert tick(instance, resources, cursor)[0] == []


def test_a_tick_warns_of_links_it_did_not_follow(instance, resources, image_folder, tmp_path, capfd):
    (image_folder / "more").symlink_to(tmp_path)
    requests, _ = tick(instance, resources, None)
    assert len(requests) == 2  # the images themselves are batched as before
    # Dagster's log handler writes to the process's stderr (the daemon's log, the tick's page).
    assert "WARNING - not listed under" in capfd.readouterr().err
