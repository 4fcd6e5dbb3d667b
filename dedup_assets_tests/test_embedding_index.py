"""The compressed index of stored embeddings: same pairs as the exact search, codes kept
per stored partition and version, trained by the batch that first sees enough."""

import numpy as np
import polars as pl
import pytest

from dedup_assets.corpus import embeddings_matrix, partitions, resident_embeddings
from dedup_assets.embedding_index import EmbeddingIndex, cross_batch_pairs
from dedup_assets.verify_stage import embedding_pairs

SPEC = "IVF16,PQ32"  # trains on a few thousand vectors (faiss warns it would like 10k)
DIM = 64


def look_alikes(rng, count, centres):
    """Unit vectors around a few centres: many neighbours above the floor per image."""
    vectors = centres[rng.integers(0, len(centres), count)] + 0.6 * rng.normal(size=(count, DIM))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def store(layout, key, names, vectors):
    frame = pl.DataFrame({"blob_name": names, "content_hash": names, "model": ["test"] * len(names),
                          "embedding": [v.astype("<f2").tobytes() for v in vectors]})
    layout.write_parquet(frame.with_columns(pl.lit(key).alias("batch")), layout.partition_path("embeddings", key))
    return frame


@pytest.fixture
def corpus(layout):
    """4,000 stored embeddings in four partitions, and a new batch of 200 stored as the
    fifth: half of them noisy copies of stored images, half new look-alikes."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(20, DIM))
    stored = look_alikes(rng, 4000, centres)
    for p in range(4):
        store(layout, f"batch-00000{p + 1}", [f"s{p}-{i}" for i in range(1000)], stored[p * 1000:(p + 1) * 1000])
    sources = rng.choice(4000, 100, replace=False)
    copies = stored[sources] + 0.05 * rng.normal(size=(100, DIM)).astype(np.float32)
    batch_vectors = np.concatenate([copies / np.linalg.norm(copies, axis=1, keepdims=True),
                                    look_alikes(rng, 100, centres)])
    batch = store(layout, "batch-000005", [f"new-{i}" for i in range(200)], batch_vectors)
    copied = {(f"new-{i}", f"s{source // 1000}-{source % 1000}") for i, source in enumerate(sources)}
    return layout, batch, copied


def pair_set(frame):
    return set(frame.select("blob_a", "blob_b").iter_rows())


def exact(layout, batch, floor, k):
    return embedding_pairs(batch, partitions(layout, "embeddings", ["blob_name", "embedding"]), floor, k)


def test_the_index_finds_every_copy_nearly_every_exact_pair_and_nothing_below_the_floor(corpus):
    layout, batch, copied = corpus
    index = EmbeddingIndex(layout, "test", SPEC, probes=8)
    index.train_from_store(4000, sample_size=3000)
    got, how = cross_batch_pairs(batch, layout, "batch-000005", 0.5, 8, index_from=1000, spec=SPEC, probes=8)
    assert how == "index"
    assert copied <= pair_set(got)
    vectors = {}
    for frame in partitions(layout, "embeddings", ["blob_name", "embedding"]):
        vectors.update(zip(frame["blob_name"], embeddings_matrix(frame)))

    def cosine(pair):
        return float(vectors[pair[0]] @ vectors[pair[1]])

    # Every pair's exact cosine is at or above the floor, whatever the codes said.
    assert all(cosine(pair) >= 0.5 - 1e-6 for pair in pair_set(got))
    # Among look-alikes the codes rank loosely, yet nearly all the exact search's pairs are found.
    expected = pair_set(exact(layout, batch, 0.5, 8))
    assert len(expected & pair_set(got)) >= 0.95 * len(expected)
    # At most k neighbours per new image, as in the exact search (a pair within the batch
    # may be either image's: up to 2k per image).
    ends = pl.concat([got["blob_a"], got["blob_b"]]).alias("name").to_frame()
    assert ends.filter(pl.col("name").str.starts_with("new-")).group_by("name").len()["len"].max() <= 2 * 8


def test_the_batch_that_first_sees_enough_trains_the_index_for_the_next(corpus):
    layout, batch, _ = corpus
    assert cross_batch_pairs(batch, layout, "batch-000005", 0.5, 8, index_from=10_000, spec=SPEC)[1] == "exact"
    assert not EmbeddingIndex(layout, "test", SPEC).trained
    pairs, how = cross_batch_pairs(batch, layout, "batch-000005", 0.5, 8, index_from=4000, spec=SPEC)
    assert how == "exact (index trained)" and pair_set(pairs) == pair_set(exact(layout, batch, 0.5, 8))
    assert EmbeddingIndex(layout, "test", SPEC).trained
    assert cross_batch_pairs(batch, layout, "batch-000005", 0.5, 8, index_from=4000, spec=SPEC)[1] == "index"
    # A batch with no embeddings (every blob failed before) searches nothing.
    empty, how = cross_batch_pairs(batch.clear(), layout, "batch-000006", 0.5, 8, index_from=4000, spec=SPEC)
    assert how == "none (no embeddings)" and empty.height == 0 and empty.columns == ["blob_a", "blob_b", "cosine"]
    # index_from 0: always exact, even with a trained index.
    assert cross_batch_pairs(batch, layout, "batch-000005", 0.5, 8, index_from=0, spec=SPEC)[1] == "exact"


def test_codes_are_written_once_per_partition_version_and_a_recomputed_partition_is_encoded_again(corpus):
    layout, _, _ = corpus
    index = EmbeddingIndex(layout, "test", SPEC)
    index.train_from_store(4000, sample_size=3000)
    _, digest = index.codec()
    codes_dir = layout.data_path(f"{index.root}/codes/{digest}")

    def code_files():
        return {path.rsplit("/", 1)[-1]: layout.fs.info(path)["mtime"] for path in layout.glob(f"{codes_dir}/*.parquet")}

    assert sum(frame.height for frame in index.stored_codes(exclude="batch-000005")) == 4000
    first = code_files()
    assert sorted(name.split(".")[0] for name in first) == [f"batch-00000{p}" for p in range(1, 5)]
    assert sum(frame.height for frame in index.stored_codes(exclude="batch-000005")) == 4000
    assert code_files() == first  # nothing encoded again
    # batch-000002 recomputed (other images): its codes follow, the stale file goes.
    rng = np.random.default_rng(9)
    store(layout, "batch-000002", [f"r-{i}" for i in range(500)], look_alikes(rng, 500, rng.normal(size=(3, DIM))))
    names = pl.concat([frame["blob_name"] for frame in index.stored_codes(exclude="batch-000005")])
    assert names.len() == 3500 and names.str.starts_with("r-").sum() == 500
    after = code_files()
    assert len(after) == 4 and {n for n in after if n.startswith("batch-000002")}.isdisjoint(first)
    assert {n: t for n, t in after.items() if not n.startswith("batch-000002")} == \
        {n: t for n, t in first.items() if not n.startswith("batch-000002")}


def test_a_retrained_codec_removes_the_codes_of_the_one_it_replaces(corpus):
    layout, _, _ = corpus
    index = EmbeddingIndex(layout, "test", SPEC)
    index.train_from_store(4000, sample_size=3000)
    list(index.stored_codes(exclude="batch-000005"))
    _, first = index.codec()
    codes_root = layout.data_path(f"{index.root}/codes")
    assert layout.subdirectories(codes_root) == [first]
    index.train_from_store(4000, sample_size=2000)  # another sample: another codec
    _, second = index.codec()
    assert second != first and layout.subdirectories(codes_root) == []
    assert sum(frame.height for frame in index.stored_codes(exclude="batch-000005")) == 4000
    assert layout.subdirectories(codes_root) == [second]


def test_an_index_that_cannot_be_trained_leaves_the_search_exact(corpus):
    layout, batch, _ = corpus
    # More inverted lists than stored embeddings: faiss refuses to train.
    pairs, how = cross_batch_pairs(batch, layout, "batch-000005", 0.5, 8, index_from=1000, spec="IVF8192,PQ32")
    assert how == "exact (index training failed)"
    assert pair_set(pairs) == pair_set(exact(layout, batch, 0.5, 8))
    assert not EmbeddingIndex(layout, "test", "IVF8192,PQ32").trained


def test_the_default_index_stores_66_bytes_per_embedding_of_the_default_model():
    import faiss

    from dedup_assets.embedding_index import DEFAULT_SPEC

    codec = faiss.index_factory(1280, DEFAULT_SPEC, faiss.METRIC_INNER_PRODUCT)  # EfficientNet-Lite0's width
    assert codec.sa_code_size() == 66  # list number (2) + PQ code (64): within 128 bytes per image


def test_stored_embeddings_held_between_batches_give_the_exact_search_the_same_pairs(corpus):
    layout, batch, _ = corpus
    expected = exact(layout, batch, 0.5, 8)
    for reads in (5, 0):  # the first search reads every stored partition, the next none
        pairs, how = cross_batch_pairs(batch, layout, "batch-000005", 0.5, 8, index_from=0, spec=SPEC,
                                       resident_bytes=2**30)
        assert how == "exact" and pairs.equals(expected) and resident_embeddings.last_reads == reads
    # The next batch: only its own partition is new.
    rng = np.random.default_rng(8)
    following = store(layout, "batch-000006", [f"later-{i}" for i in range(50)],
                      look_alikes(rng, 50, rng.normal(size=(20, DIM))))
    pairs, _ = cross_batch_pairs(following, layout, "batch-000006", 0.5, 8, index_from=0, spec=SPEC,
                                 resident_bytes=2**30)
    assert resident_embeddings.last_reads == 1 and pairs.equals(exact(layout, following, 0.5, 8))
    # Once the compressed index takes over, nothing stays held for an exact search.
    EmbeddingIndex(layout, "test", SPEC, probes=8).train_from_store(4000, sample_size=3000)
    assert cross_batch_pairs(following, layout, "batch-000006", 0.5, 8, index_from=1000, spec=SPEC,
                             resident_bytes=2**30)[1] == "index"
    assert not resident_embeddings.held and resident_embeddings.held_bytes == 0


@pytest.mark.parametrize("search", ["index", "exact"])
def test_copies_of_one_content_take_one_of_the_k_neighbours(corpus, search):
    layout, _, _ = corpus
    if search == "index":
        EmbeddingIndex(layout, "test", SPEC, probes=8).train_from_store(4000, sample_size=3000)
    logo = next(partitions(layout, "embeddings", ["embedding"]))["embedding"][0]  # s0-0's vector
    for p in range(4):  # 40 byte-identical copies over four later batches: more than k
        key = f"batch-00001{p}"
        frame = pl.DataFrame({"blob_name": [f"logo-{p}-{i}" for i in range(10)], "content_hash": ["logo"] * 10,
                              "model": ["test"] * 10, "embedding": [logo] * 10})
        layout.write_parquet(frame.with_columns(pl.lit(key).alias("batch")), layout.partition_path("embeddings", key))
    vector = np.frombuffer(logo, "<f2").astype(np.float32) + 0.01
    batch = store(layout, "batch-000020", ["near-logo"], [vector / np.linalg.norm(vector)])
    resident_embeddings.forget()
    got, how = cross_batch_pairs(batch, layout, "batch-000020", 0.5, 8, index_from=1000 if search == "index" else 0,
                                 spec=SPEC, probes=8, resident_bytes=2**30)
    assert how == search
    again, _ = cross_batch_pairs(batch, layout, "batch-000020", 0.5, 8, index_from=1000 if search == "index" else 0,
                                 spec=SPEC, probes=8, resident_bytes=2**30)  # exact: from the held partitions
    assert again.equals(got)
    others = [b if a == "near-logo" else a for a, b in got.select("blob_a", "blob_b").iter_rows()]
    assert sum(name.startswith("logo-") for name in others) == 1
    # The rest of the k: other contents (the exact search counts the query itself among them).
    assert "s0-0" in others and len(others) == (8 if search == "index" else 7)
