"""A compressed index of every stored embedding, for the search across batches once the
corpus is large.

The exact search reads and multiplies every stored embedding for each new batch (2.5 KB
per image: +87 s for a 1,000-image batch into 1M stored images on 2 cores, and over a
whole load a cost that grows with the square of the corpus, docs/performance.md). The
index reads ~66 bytes per stored image and compares each query with a few of its lists.

Under the data root, `embedding_index/<model>/<spec>/`:
    codec.faiss                         the trained, empty index (trained once, on a sample)
    codes/<codec>/<partition>.<version>.parquet
                                        one stored `embeddings` partition, encoded; keyed by
                                        the codec and by that partition file's version, so a
                                        recomputed partition is encoded again, once
Candidates are only *ranked* by the codes: their cosines are then computed exactly from
the stored float16 embeddings, so the similarity floor and the pairs' scores mean what
they mean in the exact search."""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Iterable, Iterator

import faiss
import numpy as np
import polars as pl

from dedup_assets.corpus import StoredVectors, embeddings_matrix, picked_rows, resident_embeddings
from dedup_assets.storage import StorageLayout
from dedup_assets.verify_stage import EMBEDDING_PAIRS_SCHEMA, embedding_pairs, named_pairs
from dedup_assets.vision.search import (coded_neighbours, encode, held_vectors_device, pair_inner_products,
                                        streamed_neighbours, train_codec)

log = logging.getLogger(__name__)

# 66 bytes per image (list number + 64 PQ bytes). Without the PCA256 the earlier default
# had: on real embeddings of look-alikes it found 734 of the exact search's 743 edited
# copies, PCA256 first 692 (bench/index_recall.py; docs/performance.md, §3-4).
DEFAULT_SPEC = "IVF1024,PQ64"
TRAINING_SAMPLE = 65_536  # embeddings the codec is trained on (64 per list of 1,024)
# Candidates ranked by the codes, then re-ranked exactly: 8k for k neighbours. On real
# embeddings of look-alikes 8k kept 752 of the exact search's 779 edited copies, 2k 726 (128
# probes); a batch into 1M stored took as long either way (docs/performance.md, §3-4).
CANDIDATES_PER_NEIGHBOUR = 8
# Inverted lists visited per query: with 2k candidates, 32 of 1,024 found 90 % of those
# copies, 128 found 93 %, at no measurable cost into 1M stored (same section).
PROBES = 128


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


class EmbeddingIndex:
    """The codec of one embedding model and factory spec, and the codes of every stored
    partition, on the data root (local or Azure) beside the Parquet partitions."""

    def __init__(self, layout: StorageLayout, model: str, spec: str = DEFAULT_SPEC, probes: int = PROBES):
        self.layout, self.spec, self.probes = layout, spec, probes
        self.root = f"embedding_index/{_slug(model)}/{_slug(spec)}"
        self._codec: tuple[faiss.Index, str] | None = None

    @property
    def codec_path(self) -> str:
        return self.layout.data_path(f"{self.root}/codec.faiss")

    @property
    def trained(self) -> bool:
        return self.layout.exists(self.codec_path)

    def codec(self) -> tuple[faiss.Index, str]:
        """The trained codec and its digest (which names the directory of its codes)."""
        if self._codec is None:
            data = self.layout.read_bytes(self.codec_path)
            self._codec = faiss.deserialize_index(np.frombuffer(data, np.uint8)), hashlib.sha1(data).hexdigest()[:12]
        return self._codec

    def train(self, sample: np.ndarray) -> None:
        """Trains and stores the codec; the codes of any codec it replaces are removed
        (they rank nothing once their codec is gone, ~66 bytes per stored image)."""
        codec = train_codec(sample, self.spec)
        self.layout.write_bytes(self.codec_path, faiss.serialize_index(codec).tobytes())
        self._codec = None
        _, digest = self.codec()
        superseded = [name for name in self.layout.subdirectories(self.layout.data_path(f"{self.root}/codes"))
                      if name != digest]
        if superseded:
            self.layout.remove([self._codes_dir(name) for name in superseded], recursive=True)
            log.info("removed the codes of %d superseded codec(s) of %s", len(superseded), self.root)

    def train_from_store(self, stored: int, sample_size: int = TRAINING_SAMPLE) -> int:
        """Trains the codec on up to `sample_size` of the `stored` embeddings, from
        partitions spread evenly over the store; returns how many it was trained on."""
        files = self.layout.glob(f"{self.layout.asset_dir('embeddings')}/*.parquet")
        per_file = max(1, stored // max(len(files), 1))
        step = max(1, len(files) // -(-sample_size // per_file))  # every step-th partition: the whole spread
        frames, have = [], 0
        for _, frame in self.layout.iter_parquet(files[::step], ["embedding"]):
            frames.append(frame)
            have += frame.height
            if have >= sample_size:
                break
        sample = embeddings_matrix(pl.concat(frames))[:sample_size]
        self.train(sample)
        return len(sample)

    def _codes_dir(self, digest: str) -> str:
        return self.layout.data_path(f"{self.root}/codes/{digest}")

    def stored_codes(self, exclude: str | None = None) -> Iterator[pl.DataFrame]:
        """(blob_name, code) of every stored embeddings partition but `exclude`, encoding
        the partitions that have no codes for their current version yet."""
        codec, digest = self.codec()
        directory = self._codes_dir(digest)
        versions = self.layout.versions(self.layout.asset_dir("embeddings"))
        have: dict[str, list[str]] = {}
        for path in self.layout.glob(f"{directory}/*.parquet"):
            stem = path.rsplit("/", 1)[-1].removesuffix(".parquet")
            have.setdefault(stem.rsplit(".", 1)[0], []).append(path)
        wanted, missing = [], []
        for source, version in sorted(versions.items()):
            partition = source.rsplit("/", 1)[-1].removesuffix(".parquet")
            if partition == exclude:
                continue
            target = f"{directory}/{partition}.{version}.parquet"
            wanted.append(target)
            if target not in have.get(partition, []):
                missing.append((source, target, [p for p in have.get(partition, []) if p != target]))
        for (source, target, stale), (_, frame) in zip(
                missing, self.layout.iter_parquet([source for source, _, _ in missing], ["blob_name", "embedding"])):
            codes = [row.tobytes() for row in encode(codec, embeddings_matrix(frame, codec.d))]
            self.layout.write_parquet(pl.DataFrame({"blob_name": frame["blob_name"], "code": codes},
                                                   schema={"blob_name": pl.String, "code": pl.Binary}), target)
            self.layout.remove(stale)
        if missing:
            log.info("encoded %d stored embeddings partition(s) for the index", len(missing))
        for _, frame in self.layout.iter_parquet(wanted):
            yield frame

    def candidates(self, batch: pl.DataFrame, exclude: str | None, k: int) -> pl.DataFrame:
        """(query, stored) name pairs: up to CANDIDATES_PER_NEIGHBOUR × k stored images per
        batch embedding, ranked by the codes (not yet filtered by similarity)."""
        codec, _ = self.codec()
        names: list[pl.Series] = []

        def chunks() -> Iterable[np.ndarray]:
            for frame in self.stored_codes(exclude):
                names.append(frame["blob_name"])
                yield _code_matrix(frame)

        _, found = coded_neighbours(codec, chunks(), embeddings_matrix(batch), CANDIDATES_PER_NEIGHBOUR * k,
                                    self.probes)
        query = np.repeat(np.arange(batch.height), found.shape[1]).reshape(found.shape)
        keep = found >= 0
        if not keep.any():
            return pl.DataFrame(schema={"query": pl.String, "stored": pl.String})
        return pl.DataFrame({"query": batch["blob_name"].to_numpy()[query[keep]],
                             "stored": pl.concat(names).gather(found[keep]).to_numpy()},
                            schema={"query": pl.String, "stored": pl.String})


def _code_matrix(frame: pl.DataFrame) -> np.ndarray:
    if frame.height == 0:
        return np.zeros((0, 0), np.uint8)
    return np.frombuffer(b"".join(frame["code"].to_list()), np.uint8).reshape(frame.height, -1)


def indexed_embedding_pairs(batch: pl.DataFrame, index: EmbeddingIndex, layout: StorageLayout,
                            partition_key: str | None, min_similarity: float, k: int = 32) -> pl.DataFrame:
    """As `verify_stage.embedding_pairs`, with the stored corpus searched through the
    compressed index: the batch against itself exactly, against the rest of the store
    by the codes' ranking; every candidate's cosine exact; up to k neighbours per image
    at or above `min_similarity`: one per stored content (byte-identical copies would
    otherwise fill the k), none of the query's own."""
    queries = embeddings_matrix(batch)
    within = streamed_neighbours(queries, [queries], min_similarity, k + 1)  # +1: itself
    candidates = index.candidates(batch, partition_key, k).join(
        batch.select(pl.col("blob_name").alias("query")).with_row_index("a"), on="query")
    contents = batch["content_hash"]
    scored_stored = []
    # The candidates' stored embeddings a group of partitions at a time: a batch's 256k
    # candidates (up to 1,000 × 8 × 32) held at once would be ~1.3 GB as float32.
    for frame in picked_rows(layout, "embeddings", ["blob_name", "content_hash", "embedding"],
                             candidates["stored"].unique()):
        rows = candidates.join(frame.select(pl.col("blob_name").alias("stored")).with_row_index("b"), on="stored")
        cosine = pair_inner_products(queries, rows["a"].to_numpy().astype(np.int64),
                                     rows["b"].to_numpy().astype(np.int64),
                                     others=embeddings_matrix(frame, queries.shape[1]))
        stored_contents = frame["content_hash"] if "content_hash" in frame.columns else frame["blob_name"]
        scored_stored.append(pl.DataFrame({"query": rows["query"], "other": rows["stored"], "cosine": cosine,
                                           "query_content": contents.gather(rows["a"]),
                                           "content": stored_contents.gather(rows["b"])}, schema=_SCORED))
    names = batch["blob_name"]
    scored = pl.concat([
        pl.DataFrame({"query": names.gather(within.query), "other": names.gather(within.reference),
                      "cosine": within.score, "query_content": contents.gather(within.query),
                      "content": contents.gather(within.reference)}, schema=_SCORED),
        *scored_stored,
    ])
    return named_pairs(scored
                       .filter((pl.col("cosine") >= min_similarity) & (pl.col("query") != pl.col("other"))
                               & (pl.col("query_content") != pl.col("content")))
                       .sort("cosine", descending=True)
                       .unique(subset=["query", "content"], keep="first", maintain_order=True)
                       .group_by("query", maintain_order=True).head(k)
                       .select(pl.col("query").alias("name_1"), pl.col("other").alias("name_2"), "cosine"))


_SCORED = {"query": pl.String, "other": pl.String, "cosine": pl.Float32, "query_content": pl.String,
           "content": pl.String}


def cross_batch_pairs(batch: pl.DataFrame, layout: StorageLayout, partition_key: str | None,
                      min_similarity: float, k: int, index_from: int, spec: str = DEFAULT_SPEC,
                      probes: int = PROBES, resident_bytes: int = 0) -> tuple[pl.DataFrame, str]:
    """The batch's embedding neighbours among every stored embedding, with their
    cosines, and how they were searched: exactly while fewer than `index_from`
    embeddings are stored (0: always), through the compressed index once it is trained.
    The batch whose search first sees `index_from` stored embeddings trains it, once,
    for the batches after it. `resident_bytes`: stored embeddings the exact search keeps
    in this process for the next batch (`corpus.ResidentEmbeddings`)."""
    if batch.height == 0:  # every blob of the batch failed before its embedding: nothing to search
        return pl.DataFrame(schema=EMBEDDING_PAIRS_SCHEMA), "none (no embeddings)"
    model = batch["model"][0]
    index = EmbeddingIndex(layout, model, spec, probes) if index_from > 0 else None
    if index is not None and index.trained:
        resident_embeddings.forget()
        return indexed_embedding_pairs(batch, index, layout, partition_key, min_similarity, k), "index"
    stored = 0

    def counted() -> Iterator[StoredVectors]:
        nonlocal stored
        for part in resident_embeddings.partitions(layout, resident_bytes, held_vectors_device()):
            stored += len(part)
            yield part

    pairs = embedding_pairs(batch, counted(), min_similarity, k)
    if index is not None and stored >= index_from:
        try:
            trained_on = index.train_from_store(stored)
        except RuntimeError as error:  # faiss's: e.g. fewer embeddings than the codec has centroids
            log.warning("compressed index not trained (%s); the search stays exact",
                        str(error).strip().splitlines()[-1][:300])
            return pairs, "exact (index training failed)"
        log.info("%d embeddings stored: compressed index trained on %d of them; later batches use it",
                 stored, trained_on)
        return pairs, "exact (index trained)"
    return pairs, "exact"
