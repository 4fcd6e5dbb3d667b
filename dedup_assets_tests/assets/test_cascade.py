"""The last four assets on real photographs, through Dagster, one or two batches."""

import os

import dagster as dg
import polars as pl
import pytest
from PIL import Image

from dedup_assets.assets import pipeline_assets
from dedup_assets.catalog import query
from dedup_assets.demo_data import recolor, shipped_photos
from dedup_assets.ledger import BatchLedger
from dedup_assets.vision.decode import decode_thumbnail
from dedup_assets.vision.hashing import hamming, to_gray, wavelet_hash


@pytest.fixture(scope="module")
def photos():
    return shipped_photos()


def save(image: Image.Image, path, quality=95, age=0):
    image.convert("RGB").save(path, quality=quality)
    os.utime(path, (1_700_000_000 + age, 1_700_000_000 + age))


def hash_of(path) -> int:
    return wavelet_hash(to_gray(decode_thumbnail(path.read_bytes()).thumbnail))


@pytest.fixture
def collection(tmp_path, photos):
    folder = tmp_path / "collection"
    folder.mkdir()
    astronaut = photos["astronaut"].resize((1024, 1024), Image.Resampling.LANCZOS)
    save(astronaut, folder / "astronaut.jpg", 95, age=0)
    save(astronaut.crop((230, 0, 1024, 830)), folder / "astronaut_crop.jpg", 90, age=10)  # keeps 63% of the frame
    save(astronaut, folder / "astronaut_q30.jpg", 30, age=20)
    save(recolor(photos["coffee"], astronaut), folder / "coffee_in_astronaut_colours.jpg", 92, age=30)
    save(photos["chelsea"], folder / "chelsea.jpg", 92, age=40)
    return folder


def run_batch(instance, resources, layout, folder):
    keys = BatchLedger(layout).register(resources["image_source"].open().iter_blobs(), 100)
    instance.add_dynamic_partitions("batches", keys)
    for key in keys:
        result = dg.materialize(pipeline_assets, partition_key=key, instance=instance, resources=resources)
        assert result.success
    return keys


@pytest.fixture
def cascade_resources(resources, collection):
    from dedup_assets.resources import ImageSourceResource

    return {**resources, "image_source": ImageSourceResource(uri=str(collection))}


def test_the_cascade_finds_a_crop_that_hashes_miss_and_keeps_the_original(
    instance, cascade_resources, layout, collection
):
    assert (794 * 830) / (1024 * 1024) > 0.6  # a crop the policy calls a duplicate
    assert hamming(hash_of(collection / "astronaut.jpg"), hash_of(collection / "astronaut_crop.jpg")) > 10
    (batch,) = run_batch(instance, cascade_resources, layout, collection)

    candidates = pl.read_parquet(layout.partition_path("color_candidates", batch))
    pairs = pl.read_parquet(layout.partition_path("verified_pairs", batch))
    crop_pair = pairs.filter((pl.col("blob_a") == "astronaut.jpg") & (pl.col("blob_b") == "astronaut_crop.jpg"))
    assert crop_pair["found_by"].to_list() == ["embedding"]
    assert crop_pair["is_duplicate"].to_list() == [True], crop_pair["reason"].to_list()
    assert crop_pair["decided_by"].to_list() == ["verify"]
    assert candidates.filter(pl.col("blob_b") == "astronaut_crop.jpg").height == 0

    recompressed = pairs.filter((pl.col("blob_a") == "astronaut.jpg") & (pl.col("blob_b") == "astronaut_q30.jpg"))
    assert recompressed["is_duplicate"].to_list() == [True]
    assert "hash" in recompressed["found_by"][0]

    lookalike = pairs.filter(pl.col("blob_b") == "coffee_in_astronaut_colours.jpg").filter(pl.col("is_duplicate"))
    assert lookalike.height == 0

    rows = query(layout, "select blob_name, cluster_id, is_representative from clusters order by blob_name")
    assert [r[0] for r in rows] == sorted(os.listdir(collection))  # singletons included
    cluster = {name: cid for name, cid, _ in rows}
    assert cluster["astronaut.jpg"] == cluster["astronaut_crop.jpg"] == cluster["astronaut_q30.jpg"]
    assert len({cluster["coffee_in_astronaut_colours.jpg"], cluster["chelsea.jpg"], cluster["astronaut.jpg"]}) == 3
    kept = {name for name, _, keep in rows if keep}
    assert "astronaut.jpg" in kept and "astronaut_crop.jpg" not in kept
    per_cluster = query(layout, "select cluster_id, sum(is_representative::int) from clusters group by 1")
    assert all(count == 1 for _, count in per_cluster)


def test_a_later_batch_joins_the_groups_of_earlier_ones(instance, cascade_resources, layout, collection, photos):
    run_batch(instance, cascade_resources, layout, collection)
    astronaut = Image.open(collection / "astronaut.jpg")
    save(astronaut.resize((512, 512)), collection / "astronaut_small.jpg", 90, age=50)
    (second,) = run_batch(instance, cascade_resources, layout, collection)
    assert second == "batch-000002"
    # In one process the second batch's search read only its own stored embeddings: the
    # first batch's were held from its run.
    searched = instance.get_latest_materialization_event(dg.AssetKey("verified_pairs")).asset_materialization
    assert searched.partition == second and searched.metadata["stored_partitions_read"].value == 1
    rows = dict(query(layout, "select blob_name, cluster_id from clusters"))
    assert rows["astronaut_small.jpg"] == rows["astronaut.jpg"]
    (count,) = query(layout, "select count(*) from clusters")[0]
    assert count == len(os.listdir(collection))
    (representative,) = query(layout, "select representative from clusters where blob_name = 'astronaut_small.jpg'")[0]
    assert representative == "astronaut.jpg"


def test_a_chain_of_crops_does_not_merge_the_two_ends(instance, resources, layout, tmp_path, photos):
    # A: the photo; B: 70 % of A; C: 70 % of B, only 49 % of A, too little to be a copy of A.
    from dedup_assets.resources import ImageSourceResource

    folder = tmp_path / "chain"
    folder.mkdir()
    a = photos["coffee"].resize((1200, 800), Image.Resampling.LANCZOS)
    b = a.crop((0, 0, 1004, 669))
    c = b.crop((0, 0, 840, 560))
    save(a, folder / "a.jpg", 95, age=0)
    save(b, folder / "b.jpg", 92, age=10)
    save(c, folder / "c.jpg", 90, age=20)
    chain_resources = {**resources, "image_source": ImageSourceResource(uri=str(folder))}
    (batch,) = run_batch(instance, chain_resources, layout, folder)
    pairs = {(r["blob_a"], r["blob_b"]): r["is_duplicate"]
             for r in pl.read_parquet(layout.partition_path("verified_pairs", batch)).iter_rows(named=True)}
    assert pairs[("a.jpg", "b.jpg")] and pairs[("b.jpg", "c.jpg")]
    assert not pairs.get(("a.jpg", "c.jpg"), False)
    cluster = dict(query(layout, "select blob_name, cluster_id from clusters"))
    assert cluster["a.jpg"] == cluster["b.jpg"] != cluster["c.jpg"]


def test_a_batch_without_candidate_pairs_ends_as_one_singleton_per_image(instance, resources, layout, tmp_path,
                                                                         photos):
    from dedup_assets.resources import ImageSourceResource

    folder = tmp_path / "alone"
    folder.mkdir()
    save(photos["chelsea"], folder / "chelsea.jpg", 92)  # one image: nothing to pair it with
    alone_resources = {**resources, "image_source": ImageSourceResource(uri=str(folder))}
    (batch,) = run_batch(instance, alone_resources, layout, folder)
    assert pl.read_parquet(layout.partition_path("verified_pairs", batch)).height == 0
    assert query(layout, "select blob_name, cluster_size from clusters") == [("chelsea.jpg", 1)]


def test_byte_identical_copies_are_one_image_across_batches(instance, resources, layout, tmp_path, photos):
    import shutil

    from dedup_assets.resources import ImageSourceResource

    folder = tmp_path / "copies"
    folder.mkdir()
    save(photos["astronaut"], folder / "astronaut.jpg", 95, age=0)
    save(photos["astronaut"], folder / "astronaut_q40.jpg", 40, age=5)
    save(photos["chelsea"], folder / "chelsea.jpg", 92, age=6)
    for i, source in enumerate(["astronaut.jpg"] * 4 + ["astronaut_q40.jpg"]):
        shutil.copy(folder / source, folder / f"copy_{i}_of_{source}")
        os.utime(folder / f"copy_{i}_of_{source}", (1_700_000_010 + i, 1_700_000_010 + i))
    copies_resources = {**resources, "image_source": ImageSourceResource(uri=str(folder))}
    (first,) = run_batch(instance, copies_resources, layout, folder)
    shutil.copy(folder / "astronaut.jpg", folder / "later_copy_of_astronaut.jpg")
    (second,) = run_batch(instance, copies_resources, layout, folder)

    hashes = pl.concat([pl.read_parquet(layout.partition_path("wavelet_hashes", key)) for key in (first, second)])
    content = dict(hashes.select("blob_name", "content_hash").rows())
    for key in (first, second):
        pairs = pl.read_parquet(layout.partition_path("verified_pairs", key))
        # No pair between copies of one content, and one verified pair per two contents.
        assert pairs.filter(pl.col("content_a") == pl.col("content_b")).height == 0
        ends = pairs.select(pl.min_horizontal("content_a", "content_b").alias("low"),
                            pl.max_horizontal("content_a", "content_b").alias("high"))
        assert ends.n_unique() == pairs.height
        assert [content[name] for name in pairs["blob_a"]] == pairs["content_a"].to_list()
    first_pairs = pl.read_parquet(layout.partition_path("verified_pairs", first))
    assert first_pairs.filter("is_duplicate").height == 1  # the two astronaut contents, once

    rows = {r[0]: r[1:] for r in query(layout, "select blob_name, representative, reason from clusters")}
    astronauts = [name for name in rows if "astronaut" in name]
    assert len(astronauts) == 8 and {rows[name][0] for name in astronauts} == {"astronaut.jpg"}
    assert rows["later_copy_of_astronaut.jpg"][1] == "byte-identical copy of astronaut.jpg"
    assert rows["copy_4_of_astronaut_q40.jpg"][1].startswith("duplicate of astronaut.jpg (")
    assert rows["chelsea.jpg"] == ("chelsea.jpg", "unique")
