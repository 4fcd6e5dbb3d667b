"""The near-hash search against stored partitions one at a time."""

import numpy as np
import polars as pl
import pytest

from dedup_assets.assets.color_candidates import candidate_pairs, corpus_candidate_pairs
from dedup_assets.vision.color import SIGNATURE_SIZE


def hashes(names: list[str], values: list[int], colours: list[int]) -> pl.DataFrame:
    return pl.DataFrame({
        "blob_name": names,
        "wavelet_hash": np.array(values, dtype=np.uint64),
        "color_signature": [np.full(SIGNATURE_SIZE, c, np.uint8) for c in colours],
    }, schema={"blob_name": pl.String, "wavelet_hash": pl.UInt64,
               "color_signature": pl.Array(pl.UInt8, SIGNATURE_SIZE)})


def test_partition_by_partition_finds_what_one_corpus_search_finds():
    batch = hashes(["new/a", "new/b"], [0b1111, 1 << 40], [100, 50])
    stored = [
        hashes(["old/near_a", "old/far"], [0b0111, (1 << 64) - 1], [104, 100]),
        hashes(["old/nothing_near"], [(1 << 64) - (1 << 20)], [50]),  # no pair at all here
        hashes(["old/near_b", "old/wrong_colour"], [(1 << 40) | 1, 0b1110], [51, 200]),
        batch,  # the batch's own partition, stored before this stage runs
    ]
    pairs, searched = corpus_candidate_pairs(batch, iter(stored), radius=3, max_color=12.0)

    assert searched == 7
    assert pairs.rows() == candidate_pairs(batch, pl.concat(stored), 3, 12.0).rows()
    assert [(a, b) for a, b, *_ in pairs.rows()] == [("new/a", "old/near_a"), ("new/b", "old/near_b")]
    assert pairs["hamming"].to_list() == [1, 1]


def test_no_stored_partition_gives_no_pairs():
    batch = hashes(["new/a"], [0], [0])
    pairs, searched = corpus_candidate_pairs(batch, iter([]), radius=3, max_color=12.0)
    assert (pairs.height, searched) == (0, 0)
    assert pairs.schema == candidate_pairs(batch, batch, 3, 12.0).schema


def test_byte_identical_copies_never_pair_and_a_near_copy_pairs_with_one_of_them():
    # One of them even across partitions: the lowest name; `clusters` joins the rest by content.
    contents = {"new/copy_1": "c", "new/copy_2": "c", "new/near": "n", "old/copy_3": "c", "old/copy_4": "c"}

    def with_contents(frame):
        return frame.with_columns(pl.col("blob_name").replace_strict(contents).alias("content_hash"))

    batch = with_contents(hashes(["new/copy_1", "new/copy_2", "new/near"], [0b1111, 0b1111, 0b0111], [100] * 3))
    stored = with_contents(hashes(["old/copy_3", "old/copy_4"], [0b1111, 0b1111], [100, 100]))
    pairs, _ = corpus_candidate_pairs(batch, iter([stored, batch]), radius=3, max_color=12.0)
    assert [(a, b) for a, b, *_ in pairs.rows()] == [("new/copy_1", "new/near")]
    # Without contents each copy pairs with every other it is searched against: 3 + 3 x 2.
    assert corpus_candidate_pairs(batch.drop("content_hash"), iter([stored.drop("content_hash"), batch]),
                                  radius=3, max_color=12.0)[0].height == 9


def test_each_image_pairs_only_with_its_nearest_few_by_hash_and_colour_together():
    # Products on white: every hash 0, colours a little apart; one photo saved twice.
    colours = [100, 104, 108, 112, 116, 120, 124, 128]
    batch = hashes([f"new/product_{c}" for c in colours] + ["new/product_100_resaved"], [0] * 9, colours + [100])
    stored = hashes(["old/near_hash", "old/far_colour"], [0b1, 0], [100, 200])
    pairs, _ = corpus_candidate_pairs(batch, iter([stored, batch]), radius=3, max_color=12.0, neighbours=2)
    partners = pairs.group_by("blob_a").agg("blob_b").rows()
    by_image = {}
    for a, bs in partners:
        for b in bs:
            by_image.setdefault(a, set()).add(b)
            by_image.setdefault(b, set()).add(a)
    # Ranked by hamming / (radius + 1) + colour / max_color: the copy saved again (0 bits,
    # colour 0) first, then the stored one a bit away (0.25) before a product 4 apart (1/3).
    assert by_image["new/product_100"] >= {"new/product_100_resaved", "old/near_hash"}
    assert "old/far_colour" not in by_image  # 100 apart in colour: not a candidate at all
    # Two per image asked, and a pair may be one image's choice and not the other's.
    assert pairs.height <= 2 * batch.height
    assert max(len(partners) for partners in by_image.values()) < batch.height - 2
    # Unbounded, every product pairs with every product within 12 of its colour.
    assert corpus_candidate_pairs(batch, iter([stored, batch]), radius=3, max_color=12.0,
                                  neighbours=100)[0].height > 3 * pairs.height // 2


@pytest.mark.parametrize("seed", range(4))
def test_the_nearest_per_image_do_not_depend_on_how_partitions_arrive(seed):
    rng = np.random.default_rng(seed)
    count = 120
    names = [f"img_{i:03d}" for i in rng.permutation(count)]
    values = rng.choice(np.array([0, 1, 3, 0xFF, 1 << 40], np.uint64), count)  # many ties
    frame = hashes(names, values.tolist(), rng.integers(100, 106, count).tolist())
    batch = frame[:30]
    whole = candidate_pairs(batch, frame, 3, 12.0, neighbours=5)
    bounds = sorted(rng.choice(np.arange(1, count), 4, replace=False).tolist())
    parts = [frame[a:b] for a, b in zip([0, *bounds], [*bounds, count])]
    assert corpus_candidate_pairs(batch, iter(parts), 3, 12.0, neighbours=5)[0].rows() == whole.rows()
