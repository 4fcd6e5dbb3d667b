"""Duplicate groups touching a batch, from the components found by joins."""

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from dedup_assets.cluster_stage import cluster_batch, touched_nodes, touching_pairs
from dedup_assets.demo_data import shipped_photos
from dedup_assets.vision.color import color_signature
from dedup_assets.vision.hashing import downsample

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def pairs_frame(edges: list[tuple[str, str, bool]]) -> pl.DataFrame:
    return pl.DataFrame(
        [(a, b, dup, 1.0, 1.0) for a, b, dup in edges],
        schema={"blob_a": pl.String, "blob_b": pl.String, "is_duplicate": pl.Boolean,
                "coverage_a": pl.Float32, "coverage_b": pl.Float32}, orient="row")


def images_frame(names: list[str], seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(names)
    return pl.DataFrame({
        "blob_name": names, "width": rng.integers(200, 2000, n), "height": rng.integers(200, 2000, n),
        "format": ["JPEG"] * n, "jpeg_quality": rng.integers(30, 100, n), "sharpness": rng.uniform(0, 500, n),
        "bytes": rng.integers(10_000, 900_000, n),
        "color_signature": rng.integers(0, 256, (n, 48)).astype(np.uint8),
        "last_modified": [datetime(2025, 1, 1, tzinfo=timezone.utc)] * n,
    })


def test_only_the_components_touching_the_batch_are_kept():
    pairs = pairs_frame([
        ("a", "b", True), ("b", "c", True), ("d", "c", True),  # a chain reaching d in three steps
        ("c", "x", False),  # judged distinct: not an edge
        ("e", "f", True),  # another component
    ])
    found = touching_pairs(["a", "new"], pairs)
    assert sorted(found.select("blob_a", "blob_b").rows()) == [("a", "b"), ("b", "c"), ("d", "c")]
    assert touched_nodes(["a", "new"], found) == {"a", "b", "c", "d", "new"}
    assert touching_pairs(["zzz"], pairs).height == 0


def test_clusters_from_touching_pairs_equal_clusters_from_every_pair():
    rng = np.random.default_rng(7)
    names = [f"img/{i:04d}.jpg" for i in range(400)]
    edges = {tuple(sorted(rng.choice(names, 2, replace=False))) for _ in range(300)}
    pairs = pairs_frame([(a, b, bool(rng.random() < 0.8)) for a, b in sorted(edges)])
    batch = list(rng.choice(names, 40, replace=False))
    images = images_frame(names)

    component = touching_pairs(batch, pairs)
    assert component.height < pairs.filter("is_duplicate").height  # the test means something
    expected = cluster_batch(batch, pairs, images, now=NOW)
    assert cluster_batch(batch, component, images, now=NOW).equals(expected)
    assert set(expected["blob_name"]) == touched_nodes(batch, component)


def test_the_colour_original_is_kept_over_a_finer_grayscale_copy():
    photo = shipped_photos()["coffee"].convert("RGB")
    gray = photo.convert("L")
    older, newer = datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2025, 1, 1, tzinfo=timezone.utc)
    images = pl.DataFrame({
        "blob_name": ["coffee.jpg", "coffee_gray.png"], "width": [400, 400], "height": [300, 300],
        "format": ["JPEG", "PNG"], "jpeg_quality": [75, None], "sharpness": [50.0, 50.0], "bytes": [40_000, 90_000],
        "color_signature": np.stack([color_signature(downsample(np.asarray(image.convert("RGB"))))
                                     for image in (photo, gray)]),
        "last_modified": [older, newer],
    }).with_columns(pl.col("color_signature").cast(pl.List(pl.UInt8)))  # as stored partitions read back
    clusters = cluster_batch(["coffee_gray.png"], pairs_frame([("coffee.jpg", "coffee_gray.png", True)]), images, now=NOW)
    kept = clusters.filter("is_representative")
    assert kept["blob_name"].to_list() == ["coffee.jpg"]
    dropped = clusters.filter(~pl.col("is_representative")).row(0, named=True)
    assert dropped["reason"].startswith("duplicate of coffee.jpg, which has colour")
    # The grayscale copy scores higher (lossless): the reason shows both scores.
    assert dropped["quality_score"] > kept["quality_score"][0]


@pytest.mark.parametrize("b_written_later", [timedelta(0), timedelta(milliseconds=90)])
def test_copies_stored_in_the_same_second_are_as_old_as_each_other(b_written_later):
    # Azure's Last-Modified has whole seconds; a local copy's mtime has its write order.
    stamp = datetime(2025, 1, 1, 12, 0, 0, 400_000, tzinfo=timezone.utc)
    images = images_frame(["a.jpg", "b.jpg"]).with_columns(
        pl.Series("width", [1000, 1000]), pl.Series("height", [800, 800]), pl.Series("jpeg_quality", [90, 90]),
        pl.Series("sharpness", [10.0, 400.0]), pl.Series("last_modified", [stamp, stamp + b_written_later]))
    clusters = cluster_batch(["a.jpg"], pairs_frame([("a.jpg", "b.jpg", True)]), images, now=NOW)
    # Not the first name: the sharper copy, as the age tie passes to the score.
    assert clusters.filter("is_representative")["blob_name"].to_list() == ["b.jpg"]


def test_a_copy_stored_a_second_earlier_is_older():
    stamp = datetime(2025, 1, 1, 12, 0, 0, 900_000, tzinfo=timezone.utc)
    images = images_frame(["a.jpg", "b.jpg"]).with_columns(
        pl.Series("width", [1000, 1000]), pl.Series("height", [800, 800]), pl.Series("jpeg_quality", [90, 90]),
        pl.Series("sharpness", [10.0, 400.0]), pl.Series("last_modified", [stamp, stamp + timedelta(milliseconds=200)]))
    clusters = cluster_batch(["b.jpg"], pairs_frame([("a.jpg", "b.jpg", True)]), images, now=NOW)
    assert clusters.filter("is_representative")["blob_name"].to_list() == ["a.jpg"]


def test_bars_around_a_padded_copy_add_no_resolution():
    # A 600x400 photo padded to a 700x700 square: more pixels, the same picture.
    images = images_frame(["photo.jpg", "square.jpg"]).with_columns(
        pl.Series("width", [600, 700]), pl.Series("height", [400, 700]),
        pl.Series("picture_width", [600, 600], dtype=pl.Int32), pl.Series("picture_height", [400, 400], dtype=pl.Int32),
        pl.Series("jpeg_quality", [90, 90]), pl.Series("sharpness", [100.0, 100.0]),
        pl.Series("last_modified", [datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2025, 1, 1, tzinfo=timezone.utc)]))
    pairs = pairs_frame([("photo.jpg", "square.jpg", True)])
    kept = cluster_batch(["square.jpg"], pairs, images, now=NOW).filter("is_representative")
    assert kept["blob_name"].to_list() == ["photo.jpg"]
    # Rows stored before the picture's size was measured rank by the file's size.
    unmeasured = images.with_columns(pl.lit(None, pl.Int32).alias("picture_width"), pl.lit(None, pl.Int32).alias("picture_height"))
    kept = cluster_batch(["square.jpg"], pairs, unmeasured, now=NOW).filter("is_representative")
    assert kept["blob_name"].to_list() == ["square.jpg"]


@pytest.mark.parametrize("frame, kept", [(1.0, "photo.jpg"), (0.75, "screenshot.png"), (None, "screenshot.png")])
def test_a_frame_around_a_copy_adds_no_resolution(frame, kept):
    # A 600x400 photo in a 660x540 screenshot (lossless): its whole frame lies inside the
    # screenshot, which it covers only partly. The photo ending on every side of its
    # footprint there (`frame`: the share of sides), the screenshot's picture is the photo's
    # pixels, and the older photo is kept. The scene going on across a side, or stored before
    # frames were measured: the photo is a crop of the screenshot, as before.
    images = images_frame(["photo.jpg", "screenshot.png"]).with_columns(
        pl.Series("width", [600, 660]), pl.Series("height", [400, 540]),
        pl.Series("format", ["JPEG", "PNG"]), pl.Series("jpeg_quality", [95, None]),
        pl.Series("sharpness", [100.0, 100.0]),
        pl.Series("last_modified", [datetime(year, 1, 1, tzinfo=timezone.utc) for year in (2024, 2025)]))
    pairs = pl.DataFrame([("photo.jpg", "screenshot.png", True, 1.0, 0.67, None, frame)],
                         schema={"blob_a": pl.String, "blob_b": pl.String, "is_duplicate": pl.Boolean,
                                 "coverage_a": pl.Float32, "coverage_b": pl.Float32, "frame_a": pl.Float32,
                                 "frame_b": pl.Float32}, orient="row")
    clusters = cluster_batch(["screenshot.png"], pairs, images, now=NOW)
    assert clusters.filter("is_representative")["blob_name"].to_list() == [kept]
    if kept == "photo.jpg":  # the manifest says why the larger file goes
        reason = clusters.filter(pl.col("blob_name") == "screenshot.png")["reason"].item()
        assert reason.startswith("duplicate of photo.jpg, which it shows inside a frame"), reason


def test_copies_stored_together_keep_the_one_the_others_resemble_most():
    # A bulk upload: every copy stored in the same second. The original's embedding is the
    # closest to each edit; the caption's and the tint's are farther from each other.
    stamp = datetime(2025, 1, 1, tzinfo=timezone.utc)
    names = ["captioned.jpg", "original.jpg", "tinted.jpg"]
    images = images_frame(names).with_columns(
        pl.Series("width", [1000] * 3), pl.Series("height", [800] * 3), pl.Series("jpeg_quality", [90] * 3),
        pl.Series("sharpness", [300.0, 100.0, 150.0]), pl.Series("last_modified", [stamp] * 3))
    pairs = pairs_frame([("captioned.jpg", "original.jpg", True), ("original.jpg", "tinted.jpg", True),
                         ("captioned.jpg", "tinted.jpg", True)]).with_columns(
        pl.Series("cosine", [0.93, 0.94, 0.81], dtype=pl.Float32))
    clusters = cluster_batch(["tinted.jpg"], pairs, images, now=NOW)
    assert clusters.filter("is_representative")["blob_name"].to_list() == ["original.jpg"]
    # The captioned copy scores higher (sharper): the reason says why it goes.
    dropped = clusters.filter(pl.col("blob_name") == "captioned.jpg").row(0, named=True)
    assert dropped["reason"].startswith("duplicate of original.jpg, which the other copies resemble most")


def test_a_copy_takes_the_pairs_verified_for_its_content_even_when_that_copy_is_gone():
    # "first.jpg" was verified against "small.jpg"; it has since been deleted (no row), and
    # "second.jpg" holds the same bytes: it takes first.jpg's place in the group.
    pairs = pairs_frame([("first.jpg", "small.jpg", True)]).with_columns(
        pl.lit("content-1").alias("content_a"), pl.lit("content-2").alias("content_b"))
    images = images_frame(["second.jpg", "third.jpg", "small.jpg"]).with_columns(
        pl.Series("content_hash", ["content-1", "content-1", "content-2"]),
        pl.Series("width", [2000, 2000, 300]), pl.Series("height", [1500, 1500, 200]))
    component = touching_pairs(["content-1"], pairs)
    assert touched_nodes(["content-1"], component) == {"content-1", "content-2"}
    clusters = cluster_batch(["third.jpg"], component, images, now=NOW)
    assert clusters["representative"].unique().to_list() == ["second.jpg"]
    reasons = dict(clusters.select("blob_name", "reason").rows())
    assert reasons["third.jpg"] == "byte-identical copy of second.jpg"
    assert reasons["small.jpg"].startswith("duplicate of second.jpg")
