"""The near-hash search against stored partitions one at a time."""

import numpy as np
import polars as pl

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
    contents = {"new/copy_1": "c", "new/copy_2": "c", "new/near": "n", "old/copy_3": "c", "old/copy_4": "c"}

    def with_contents(frame):
        return frame.with_columns(pl.col("blob_name").replace_strict(contents).alias("content_hash"))

    batch = with_contents(hashes(["new/copy_1", "new/copy_2", "new/near"], [0b1111, 0b1111, 0b0111], [100] * 3))
    stored = with_contents(hashes(["old/copy_3", "old/copy_4"], [0b1111, 0b1111], [100, 100]))
    pairs, _ = corpus_candidate_pairs(batch, iter([stored, batch]), radius=3, max_color=12.0)
    assert [(a, b) for a, b, *_ in pairs.rows()] == [("new/copy_1", "new/near"), ("new/near", "old/copy_3")]
    # Without contents each copy pairs with every other it is searched against: 3 + 3 x 2.
    assert corpus_candidate_pairs(batch.drop("content_hash"), iter([stored.drop("content_hash"), batch]),
                                  radius=3, max_color=12.0)[0].height == 9
