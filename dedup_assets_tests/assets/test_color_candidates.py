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
