"""Reads across every stored batch."""

import numpy as np
import polars as pl
import pytest

from dedup_assets.corpus import (ResidentEmbeddings, embeddings_matrix, grouped, latest_duplicate_pairs, read_rows,
                                 with_current_contents)


def store_pairs(layout, batch, rows):
    frame = pl.DataFrame(rows, schema={"blob_a": pl.String, "blob_b": pl.String, "is_duplicate": pl.Boolean,
                                       "coverage_a": pl.Float32}, orient="row")
    layout.write_parquet(frame.with_columns(pl.lit(batch).alias("batch")), layout.partition_path("verified_pairs", batch))


def test_only_the_latest_decision_on_each_duplicate_pair_is_held(layout):
    store_pairs(layout, "batch-000001", [("a", "b", True, 0.9), ("a", "c", False, 0.1), ("x", "y", True, 0.8)])
    store_pairs(layout, "batch-000002", [("a", "b", False, 0.2), ("c", "d", True, 0.7)])
    store_pairs(layout, "batch-000003", [("a", "c", True, 0.6), ("x", "y", True, 0.5)])
    held = latest_duplicate_pairs(layout, ["coverage_a"])
    assert sorted(held.select("blob_a", "blob_b", "coverage_a").rows()) == [
        ("a", "c", 0.6000000238418579), ("c", "d", 0.699999988079071), ("x", "y", 0.5)]
    assert latest_duplicate_pairs(layout.__class__(layout.home / "empty"), []).height == 0


def test_pairs_stored_before_contents_were_take_each_blobs_current_content(layout):
    store_pairs(layout, "batch-000001", [("a", "b", True, 0.9)])  # no content columns: an older data root
    newer = pl.DataFrame({"blob_a": ["a"], "blob_b": ["c"], "is_duplicate": [True], "coverage_a": [0.8],
                          "content_a": ["content-of-a"], "content_b": ["content-of-c"]})
    layout.write_parquet(newer, layout.partition_path("verified_pairs", "batch-000002"))
    hashes = pl.DataFrame({"blob_name": ["a", "b", "c"], "content_hash": ["content-of-a", "content-of-b", "x"]})
    layout.write_parquet(hashes, layout.partition_path("wavelet_hashes", "batch-000001"))

    held = latest_duplicate_pairs(layout, ["content_a", "content_b"]).sort("blob_b")
    assert held.rows() == [("a", "b", True, None, None), ("a", "c", True, "content-of-a", "content-of-c")]
    filled = with_current_contents(held, layout)
    # Stored contents stay (what was compared); missing ones are read from the blobs' rows.
    assert filled.select("content_a", "content_b").rows() == [("content-of-a", "content-of-b"),
                                                               ("content-of-a", "content-of-c")]


def test_rows_of_named_blobs_come_from_every_batch(layout):
    for batch, names in (("batch-000001", ["a", "b"]), ("batch-000002", ["c", "a"])):
        frame = pl.DataFrame({"blob_name": names, "width": [1, 2]}).with_columns(pl.lit(batch).alias("batch"))
        layout.write_parquet(frame, layout.partition_path("wavelet_hashes", batch))
    rows = read_rows(layout, "wavelet_hashes", ["blob_name", "batch"], ["a", "c"])
    assert rows.rows() == [("a", "batch-000001"), ("c", "batch-000002"), ("a", "batch-000002")]

    for names in ([], ["nobody"]):  # nothing asked for, or nothing stored for it: the columns, typed
        none = read_rows(layout, "wavelet_hashes", ["blob_name", "width"], names)
        assert none.height == 0 and none.schema == {"blob_name": pl.String, "width": pl.Int64}
    nothing_stored = read_rows(layout, "embeddings", ["blob_name", "embedding"], ["a"])
    assert nothing_stored.height == 0 and nothing_stored.columns == ["blob_name", "embedding"]


def test_a_column_added_since_older_partitions_reads_as_null_there(layout):
    older = pl.DataFrame({"blob_name": ["a", "b"], "width": [640, 800]})
    newer = pl.DataFrame({"blob_name": ["c"], "width": [700], "picture_width": [512]})
    for batch, frame in (("batch-000001", older), ("batch-000002", newer)):
        layout.write_parquet(frame, layout.partition_path("wavelet_hashes", batch))
    columns = ["blob_name", "width", "picture_width"]
    assert read_rows(layout, "wavelet_hashes", columns, ["a", "c"]).rows() == [("a", 640, None), ("c", 700, 512)]
    only_older = read_rows(layout, "wavelet_hashes", columns, ["b"])  # no file read stores it
    assert only_older.columns == columns and only_older.rows() == [("b", 800, None)]
    # Partition by partition (a remote data root's reads): the columns each file stores.
    read = [frame.columns for _, frame in layout.iter_parquet(
        [layout.partition_path("wavelet_hashes", batch) for batch in ("batch-000001", "batch-000002")], columns)]
    assert read == [["blob_name", "width"], columns]


def test_grouped_frames_keep_every_row_in_order_in_groups_of_at_least_the_size():
    frames = [pl.DataFrame({"n": list(range(start, start + size)), "signature": [[start % 256] * 3] * size},
                           schema={"n": pl.Int64, "signature": pl.Array(pl.UInt8, 3)})
              for start, size in ((0, 4), (4, 0), (4, 3), (7, 5), (12, 1))]
    groups = list(grouped(iter(frames), rows=6))
    assert [group.height for group in groups] == [7, 6]
    assert pl.concat(groups)["n"].to_list() == list(range(13))
    # One chunk each: gathering nothing from a fixed-size list column of a concatenation
    # of several chunks panicked in polars.
    assert all(group["signature"].n_chunks() == 1 for group in groups)
    assert groups[0]["signature"].gather([]).len() == 0
    assert list(grouped(iter([]), rows=6)) == []


def test_stored_embeddings_are_read_exactly_as_float32_or_float16():
    vectors = np.random.default_rng(3).normal(size=(5, 12)).astype("<f2")
    column = pl.Series("embedding", [vector.tobytes() for vector in vectors], pl.Binary)
    assert np.array_equal(embeddings_matrix(column), vectors.astype(np.float32))
    as_stored = embeddings_matrix(pl.DataFrame([column])[1:], dtype=np.float16)
    assert as_stored.dtype == np.float16 and np.array_equal(as_stored, vectors[1:])
    assert embeddings_matrix(column[:0], dim=12).shape == (0, 12)


@pytest.mark.parametrize("broken", [b"\x00" * 6, None])
def test_a_stored_embedding_of_another_size_or_missing_is_an_error_not_zeros(broken):
    vectors = np.ones((3, 4), "<f2")
    column = pl.Series("embedding", [vectors[0].tobytes(), broken, vectors[2].tobytes()], pl.Binary)
    with pytest.raises(ValueError, match="same size"):
        embeddings_matrix(column)


def store_embeddings(layout, batch, names, seed):
    vectors = np.random.default_rng(seed).standard_normal((len(names), 8)).astype("<f2")
    layout.write_parquet(pl.DataFrame({"blob_name": names, "embedding": [v.tobytes() for v in vectors]}),
                         layout.partition_path("embeddings", batch))
    return vectors


def searched(resident, layout, budget, device=None):
    """What one search sees: (names, float16 vectors) of every stored partition, in order."""
    parts = list(resident.partitions(layout, budget, device))
    return [name for part in parts for name in part.names], np.concatenate(
        [np.asarray(part.vectors) if device is None else part.vectors.cpu().numpy() for part in parts])


def test_resident_embeddings_read_only_partitions_new_or_rewritten_since_the_last_search(layout):
    resident = ResidentEmbeddings()
    stored = {f"batch-00000{b}": store_embeddings(layout, f"batch-00000{b}", [f"b{b}-{i}" for i in range(5)], b)
              for b in (1, 2, 3)}
    names, vectors = searched(resident, layout, budget=2**20)
    assert resident.last_reads == 3 and len(names) == 15
    assert np.array_equal(vectors, np.concatenate(list(stored.values())))

    stored["batch-000004"] = store_embeddings(layout, "batch-000004", [f"b4-{i}" for i in range(5)], 4)
    names, vectors = searched(resident, layout, budget=2**20)
    assert resident.last_reads == 1 and names[-5:] == [f"b4-{i}" for i in range(5)]
    assert np.array_equal(vectors, np.concatenate(list(stored.values())))

    # A recomputed partition (other images, other vectors) is read again, in its place.
    stored["batch-000002"] = store_embeddings(layout, "batch-000002", ["new-a", "new-b"], 22)
    names, vectors = searched(resident, layout, budget=2**20)
    assert resident.last_reads == 1 and names[5:7] == ["new-a", "new-b"] and len(names) == 17
    assert np.array_equal(vectors, np.concatenate(list(stored.values())))
    searched(resident, layout, budget=2**20)
    assert resident.last_reads == 0

    # A deleted partition is no longer searched.
    layout.fs.rm(layout.partition_path("embeddings", "batch-000001"))
    names, _ = searched(resident, layout, budget=2**20)
    assert resident.last_reads == 0 and names[0] == "new-a"


def test_resident_embeddings_hold_what_the_budget_allows_in_partition_order_and_nothing_without_one(layout):
    expected = np.concatenate([store_embeddings(layout, f"batch-00000{b}", [f"b{b}-{i}" for i in range(50)], b)
                               for b in (1, 2, 3, 4)])
    resident = ResidentEmbeddings()
    for _ in range(2):  # without a budget every search reads every partition
        assert np.array_equal(searched(resident, layout, 0)[1], expected)
        assert resident.last_reads == 4 and not resident.held
    one_partition = next(iter(resident.partitions(layout, 2**20))).nbytes
    resident = ResidentEmbeddings()
    for reads in (4, 2, 2):  # the first two partitions fit; the later ones are read each time
        assert np.array_equal(searched(resident, layout, 2 * one_partition + 1)[1], expected)
        assert resident.last_reads == reads
    assert resident.held_bytes <= 2 * one_partition + 1

    other = layout.__class__(layout.home / "other")  # another data root's search empties it
    store_embeddings(other, "batch-000001", ["x"], 9)
    assert searched(resident, other, 2**20)[0] == ["x"] and list(resident.held) == [
        other.partition_path("embeddings", "batch-000001")]


def test_resident_embeddings_held_on_a_device_are_its_tensors_and_another_device_reads_again(layout):
    # On a GPU host they are held in the GPU's memory (`search.held_vectors_device`);
    # PyTorch's CPU device stands in for it here.
    import torch

    expected = np.concatenate([store_embeddings(layout, f"batch-00000{b}", [f"b{b}-{i}" for i in range(5)], b)
                               for b in (1, 2)])
    resident = ResidentEmbeddings()
    for reads in (2, 0):
        names, vectors = searched(resident, layout, 2**20, device="cpu")
        assert resident.last_reads == reads and np.array_equal(vectors, expected) and len(names) == 10
        assert all(isinstance(held.vectors, torch.Tensor) and held.vectors.dtype == torch.float16
                   for _, held in resident.held.values())
    names, vectors = searched(resident, layout, 2**20)  # the host's memory instead: read again, as NumPy
    assert resident.last_reads == 2 and np.array_equal(vectors, expected)
    assert all(isinstance(held.vectors, np.ndarray) for _, held in resident.held.values())
