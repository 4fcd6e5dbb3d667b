import polars as pl

from dedup_assets.catalog import query


def test_every_image_is_hashed_once_with_its_thumbnail(materialize_batch, layout, image_folder, batch):
    materialize_batch()
    hashes = pl.read_parquet(layout.partition_path("wavelet_hashes", batch))
    assert hashes.height == len(list(image_folder.iterdir()))
    assert hashes["wavelet_hash"].null_count() == 0
    assert (hashes["width"] > 0).all() and (hashes["sharpness"] > 0).all()
    assert set(hashes["format"]) <= {"JPEG", "PNG", "WEBP"}
    for thumbnail in hashes["thumbnail"]:
        assert (layout.home / thumbnail).stat().st_size > 0
    failures = pl.read_parquet(layout.failures_path("wavelet_hashes", batch))
    assert failures.height == 0


def test_corrupt_files_go_to_failed_blobs_and_the_partition_succeeds(
    instance, resources, layout, image_folder, materialize_batch, batch
):
    # Files added after the batch fixture was cut go into a second batch.
    good = sorted(image_folder.glob("*.jpg"))[0].read_bytes()
    (image_folder / "empty.jpg").write_bytes(b"")
    (image_folder / "notes.jpg").write_text("<html>403 Forbidden</html>")
    (image_folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    from dedup_assets.ledger import BatchLedger

    (second,) = BatchLedger(layout).register(resources["image_source"].open().iter_blobs(), 1000)
    instance.add_dynamic_partitions("batches", [second])
    result = materialize_batch(partition_key=second)

    failures = pl.read_parquet(layout.failures_path("wavelet_hashes", second))
    reasons = dict(zip(failures["blob_name"], failures["reason"]))
    assert set(reasons) == {"empty.jpg", "notes.jpg", "truncated.jpg"}
    assert "empty" in reasons["empty.jpg"]
    assert "not a recognised image" in reasons["notes.jpg"]
    assert "truncated" in reasons["truncated.jpg"] or "corrupt" in reasons["truncated.jpg"]
    metadata = result.asset_materializations_for_node("wavelet_hashes")[0].metadata
    assert metadata["failed_blobs"].value == 3

    # Every inventoried blob ends in a result or in failed_blobs, visible through DuckDB.
    (inventoried,) = query(layout, f"select count(*) from blob_inventory where batch = '{second}'")[0]
    (hashed,) = query(layout, f"select count(*) from wavelet_hashes where batch = '{second}'")[0]
    (failed,) = query(layout, f"select count(*) from failed_blobs where batch = '{second}'")[0]
    assert inventoried == hashed + failed == 3
