"""Every awkward file ends in a result or in failed_blobs with a reason; no batch fails."""

import dagster as dg
import polars as pl
import pytest

from dedup_assets.assets import pipeline_assets
from dedup_assets.catalog import query
from dedup_assets.ledger import BatchLedger
from dedup_assets.resources import ImageSourceResource
from dedup_assets_tests.bad_inputs import build_bad_corpus


@pytest.fixture
def bad_folder(tmp_path):
    folder = tmp_path / "bad"
    expected = build_bad_corpus(folder)
    return folder, expected


def test_bad_inputs_are_recorded_and_the_batch_succeeds(instance, resources, layout, bad_folder):
    folder, expected = bad_folder
    resources = {**resources, "image_source": ImageSourceResource(uri=str(folder))}
    (batch,) = BatchLedger(layout).register(resources["image_source"].open().iter_blobs(), 100)
    instance.add_dynamic_partitions("batches", [batch])
    result = dg.materialize(pipeline_assets, partition_key=batch, instance=instance, resources=resources)
    assert result.success

    hashed = set(pl.read_parquet(layout.partition_path("wavelet_hashes", batch))["blob_name"])
    failures = pl.read_parquet(layout.failures_path("wavelet_hashes", batch))
    reasons = dict(zip(failures["blob_name"], failures["reason"]))
    assert hashed == {name for name, outcome in expected.items() if outcome == "ok"}
    assert set(reasons) == {name for name, outcome in expected.items() if outcome == "fail"}
    assert hashed.isdisjoint(reasons)
    assert "empty" in reasons["zero_bytes.jpg"]
    assert "decompression bomb" in reasons["bomb.png"] and "not decoded" in reasons["bomb.png"]
    assert "not a recognised image format" in reasons["error_page.jpg"]
    assert "truncated" in reasons["truncated.jpg"] or "corrupt" in reasons["truncated.jpg"]
    assert "corrupt or truncated HEIF" in reasons["truncated.heic"]
    assert all(len(reason) > 10 for reason in reasons.values())

    facts = {row[0]: row[1:] for row in query(
        layout, f"select blob_name, width, height, format from wavelet_hashes where batch = '{batch}'")}
    assert facts["exif_rotated.jpg"][:2] == (200, 400)  # upright
    assert facts["rotated.heic"] == (200, 400, "HEIF")
    assert facts["very_large.jpg"][:2] == (8000, 6000)
    assert facts["one_pixel.png"][:2] == (1, 1)
    # Every decoded blob went through the whole cascade, and into the clusters.
    (clustered,) = query(layout, f"select count(*) from clusters where blob_name in "
                                 f"(select blob_name from wavelet_hashes where batch = '{batch}')")[0]
    assert clustered == len(hashed)
