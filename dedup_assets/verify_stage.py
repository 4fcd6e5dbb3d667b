"""The verification stage as plain Python: gather candidates from both searches, then
run the cascade (hash → policy → geometric verification) on each pair."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable

import faiss
import numpy as np
import polars as pl

from dedup_assets.corpus import StoredVectors, embeddings_matrix, grouped, latest_duplicate_pairs, read_rows
from dedup_assets.embedding_stage import decode_thumbnail
from dedup_assets.storage import StorageLayout
from dedup_assets.vision.cascade import CascadePolicy, decide
from dedup_assets.vision.clustering import FIDELITY_TIE, RESOLUTION_TIE, adjacency, fidelity, reachable
from dedup_assets.vision.color import color_distance, has_colour
from dedup_assets.vision.cores import usable_cores
from dedup_assets.vision.decode import opencv_single_threaded
from dedup_assets.vision.hashing import is_informative
from dedup_assets.vision.search import PAIRS_PER_BLOCK, REFERENCE_BLOCK, streamed_neighbours
from dedup_assets.vision.verify import PreparedImage, Verification, Verifier

log = logging.getLogger(__name__)

# Pairs whose thumbnails and stored features are fetched together, one round of
# concurrent reads: ≤ 512 images, ~20 MB of features (1,024 pairs held up to ~80 MB).
PAIRS_PER_FETCH = 256
THUMBNAIL_CACHE = 1024  # images kept while verifying (ORB: ~40 KB of features each)
# Consecutive pairs a thread verifies together (`verify_many`), for a verifier that can:
# its compiled ratio tests then give up and take back the GIL once per group, not once per
# pair, while a group stays small next to a slice (threads finish a slice together).
PAIRS_PER_GROUP = 8

VERIFIED_SCHEMA = {
    "blob_a": pl.String, "blob_b": pl.String, "found_by": pl.String,
    "hamming": pl.Int32, "color_distance": pl.Float32, "cosine": pl.Float32,
    "matches": pl.Int32, "inliers": pl.Int32, "coverage_a": pl.Float32, "coverage_b": pl.Float32,
    "inlier_spread": pl.Float32, "agreement": pl.Float32, "mirrored": pl.Boolean, "is_duplicate": pl.Boolean, "decided_by": pl.String, "reason": pl.String,
    # What was compared: the pair's decision holds for every byte-identical copy of either.
    "content_a": pl.String, "content_b": pl.String,
    # Where one lies whole inside the other: the share of its sides there where the picture ends (1: framed).
    "frame_a": pl.Float32, "frame_b": pl.Float32,
}


EMBEDDING_PAIRS_SCHEMA = {"blob_a": pl.String, "blob_b": pl.String, "cosine": pl.Float32}


def embedding_pairs(batch: pl.DataFrame, corpus: Iterable[pl.DataFrame | StoredVectors], min_similarity: float,
                    k: int = 32) -> pl.DataFrame:
    """Nearest neighbours of the batch's embeddings among every stored embedding, as
    name pairs with their cosine. `corpus` yields stored partitions one at a time: as
    read (blob_name, embedding), or decoded (`StoredVectors`, held between batches,
    perhaps on the GPU that searches them)."""
    names: list[pl.Series] = []

    def chunks():
        # Searched a few partitions at a time: with each 1,000-row partition alone, the
        # per-chunk work (k-best heaps, partial sorts) made the search 1.3-1.6x slower.
        # One row per content over the whole store: copies in many partitions (a logo
        # in every batch) would fill the k neighbours.
        seen: set[int] = set()
        stored = ((part if isinstance(part, StoredVectors) else StoredVectors.from_frame(part)).without(seen)
                  for part in corpus)
        for group in grouped(stored, REFERENCE_BLOCK, StoredVectors.joined):
            if not len(group):
                continue  # only batches whose every blob failed: nothing to search, no width
            names.append(group.names)
            yield group.vectors  # float16: widened by the search, on the GPU if there

    found = streamed_neighbours(embeddings_matrix(batch), chunks(), min_similarity, k)
    if batch.height == 0 or len(found.query) == 0:
        return pl.DataFrame(schema=EMBEDDING_PAIRS_SCHEMA)
    names_1 = batch["blob_name"].to_numpy()[found.query]
    names_2 = pl.concat(names).gather(found.reference).to_numpy()
    return named_pairs(pl.DataFrame({"name_1": names_1, "name_2": names_2, "cosine": found.score},
                                    schema={"name_1": pl.String, "name_2": pl.String, "cosine": pl.Float32}))


def named_pairs(found: pl.DataFrame) -> pl.DataFrame:
    """(name_1, name_2, cosine) as unordered pairs (blob_a < blob_b), each once: a pair
    within the batch is found from both sides, and a name stored twice (a blob batched
    again) twice over; the pair keeps its highest cosine."""
    return (found
            .filter(pl.col("name_1") != pl.col("name_2"))
            .group_by(pl.min_horizontal("name_1", "name_2").alias("blob_a"),
                      pl.max_horizontal("name_1", "name_2").alias("blob_b"))
            .agg(pl.col("cosine").max())
            .sort("blob_a", "blob_b"))


def one_pair_per_content(found: pl.DataFrame, features: pl.DataFrame) -> pl.DataFrame:
    """Candidates (blob_a, blob_b, source, cosine: a pair both searches found comes twice)
    as one row per pair of contents, with found_by and content_a, content_b (`features`:
    blob_name, content_hash). Byte-identical copies are one image: a pair between two is
    dropped, and of the pairs joining the same two contents (the searches may each have
    met another copy) one is verified, for all of them."""
    content = features.select("blob_name", "content_hash")
    key_a, key_b = pl.coalesce("content_a", "blob_a"), pl.coalesce("content_b", "blob_b")
    return (found
            .join(content.rename({"blob_name": "blob_a", "content_hash": "content_a"}), on="blob_a", how="left")
            .join(content.rename({"blob_name": "blob_b", "content_hash": "content_b"}), on="blob_b", how="left")
            .filter(key_a != key_b)
            .sort("blob_a", "blob_b")
            .group_by(pl.min_horizontal(key_a, key_b).alias("low"), pl.max_horizontal(key_a, key_b).alias("high"),
                      maintain_order=True)
            .agg(pl.col("blob_a", "blob_b", "content_a", "content_b").first(),
                 pl.col("source").unique().sort().str.join("+").alias("found_by"), pl.col("cosine").max())
            .select("blob_a", "blob_b", "found_by", "cosine", "content_a", "content_b")
            .sort("blob_a", "blob_b"))


def verification_features(layout: StorageLayout, names: set[str]) -> pl.DataFrame:
    """What verification reads of these images (the latest row of each), for those with an embedding."""
    embedded = read_rows(layout, "embeddings", ["blob_name"], names)["blob_name"]
    return (read_rows(layout, "wavelet_hashes", ["blob_name", "content_hash", "wavelet_hash", "color_signature",
                                                 "thumbnail", "multi_picture"], names)
            .unique(subset="blob_name", keep="last")
            .filter(pl.col("blob_name").is_in(embedded.implode())))


def verify_large_families(pairs: pl.DataFrame, batch_names: set[str], features: pl.DataFrame,
                          layout: StorageLayout, verifier: Verifier, policy: CascadePolicy, neighbours: int,
                          workers: int = 0, keep_features: bool = True) -> tuple[pl.DataFrame, float, int]:
    """After a batch's `pairs` are verified: the pairs `family_candidates` adds for each
    family of copies, stored ones included, that outgrew `neighbours` and holds one of
    `batch_names`, verified; with the seconds it took and how many families there were.
    `features`: the batch's `verification_features`."""
    decided = pairs.select("blob_a", "blob_b", "is_duplicate")
    if not crowded_with_copies(decided, neighbours):  # no family can have outgrown them: nothing stored read
        return pl.DataFrame(schema=VERIFIED_SCHEMA), 0.0, 0
    decided = pl.concat([decided, latest_duplicate_pairs(layout, []).select(decided.columns)])
    families = [family for family in large_families(decided, neighbours) if family & batch_names]
    if not families:
        return pl.DataFrame(schema=VERIFIED_SCHEMA), 0.0, 0
    members = set().union(*families)
    # Every pair of theirs already verified, in any batch, is not verified again.
    involving = pl.col("blob_a").is_in(list(members)) | pl.col("blob_b").is_in(list(members))
    compared = pl.concat([decided.filter(involving).select("blob_a", "blob_b"),
                          *(read_rows(layout, "verified_pairs", ["blob_a", "blob_b"], members, key=end)
                            for end in ("blob_a", "blob_b"))])
    # Only the stored members are read: the batch's are in hand (a stored partition may hold a column in another type).
    stored = verification_features(layout, members - set(features["blob_name"])).cast(features.schema)
    family_features = pl.concat([features, stored])
    quality = read_rows(layout, "wavelet_hashes", FAMILY_QUALITY_COLUMNS, members)
    extra = family_candidates(families, compared,
                              quality.filter(pl.col("blob_name").is_in(family_features["blob_name"].implode())))
    more, seconds = verify_pairs(with_hash_pairs_cosines(one_pair_per_content(extra, family_features), layout),
                                 family_features, layout, verifier, policy, workers, keep_features=keep_features)
    return more, seconds, len(families)


def crowded_with_copies(decided: pl.DataFrame, neighbours: int) -> bool:
    """Whether an image has at least half as many duplicates among `decided` (blob_a,
    blob_b, is_duplicate) as the searches give it neighbours: only then can a family have
    outgrown them (a copy searched among more copies than that gets its neighbours'
    worth), and its stored members are worth reading."""
    duplicates = decided.filter(pl.col("is_duplicate"))
    ends = pl.concat([duplicates["blob_a"], duplicates["blob_b"]])
    return ends.len() > 0 and int(ends.value_counts()["count"].max()) >= max(1, neighbours // 2)


def large_families(decided: pl.DataFrame, neighbours: int) -> list[set[str]]:
    """Sets of copies joined by `decided`'s duplicates (blob_a, blob_b, is_duplicate) into
    more than `neighbours` images: more than each search gives an image as candidates.

    In such a family (a placeholder or logo saved again and again) no copy is compared
    with every other, and a group holds only the kept copy's own verified duplicates: 120
    re-encoded copies of one photo came out as 4 groups, 4 copies kept."""
    duplicates = decided.filter(pl.col("is_duplicate"))
    if duplicates.height < neighbours:
        return []
    linked = adjacency(zip(duplicates["blob_a"].to_list(), duplicates["blob_b"].to_list()))
    seen: set[str] = set()
    families = []
    for start in sorted(linked):
        if start not in seen:
            family = reachable([start], linked)
            seen |= family
            if len(family) > neighbours:
                families.append(family)
    return families


FAMILY_QUALITY_COLUMNS = ["blob_name", "width", "height", "picture_width", "picture_height", "format", "jpeg_quality"]


def family_candidates(families: list[set[str]], decided: pl.DataFrame, quality: pl.DataFrame) -> pl.DataFrame:
    """Pairs (blob_a, blob_b, source "family", no cosine) not in `decided` that join each
    member of each family to the copies the kept one is chosen from first (`quality`:
    FAMILY_QUALITY_COLUMNS of the members that can be verified; the largest pictures, within
    `RESOLUTION_TIE`, then the most faithful, within `FIDELITY_TIE`): a few pairs per
    member, not every pair of the family."""
    compared = {frozenset(pair) for pair in zip(decided["blob_a"].to_list(), decided["blob_b"].to_list())}
    facts = {row["blob_name"]: row for row in quality.unique(subset="blob_name", keep="last").iter_rows(named=True)}
    pairs = []
    for family in families:
        for kept in _likeliest_kept(sorted(family & facts.keys()), facts):
            pairs += [(min(kept, other), max(kept, other)) for other in sorted(family & facts.keys())
                      if other != kept and frozenset((kept, other)) not in compared]
    return (pl.DataFrame(pairs, schema={"blob_a": pl.String, "blob_b": pl.String}, orient="row").unique()
            .with_columns(pl.lit("family").alias("source"), pl.lit(None, pl.Float32).alias("cosine"))
            .sort("blob_a", "blob_b"))


def _likeliest_kept(names: list[str], facts: dict[str, dict]) -> list[str]:
    """The copies `clustering.pick_representative` chooses among first, by what is known
    before the groups are: the picture's resolution, then the file's fidelity."""
    pixels = {name: (facts[name]["picture_width"] or facts[name]["width"] or 0)
              * (facts[name]["picture_height"] or facts[name]["height"] or 0) for name in names}
    most = max(pixels.values(), default=0)
    largest = [name for name in names if pixels[name] >= RESOLUTION_TIE * most]
    faithful = {name: fidelity(facts[name]["format"], facts[name]["jpeg_quality"]) for name in largest}
    best = max(faithful.values(), default=0.0)
    return [name for name in largest if faithful[name] >= best - FIDELITY_TIE]


def pair_cosines(vectors: pl.DataFrame, blob_a: pl.Series, blob_b: pl.Series,
                 block: int = PAIRS_PER_BLOCK) -> np.ndarray:
    """The cosine of each pair's embeddings (`vectors`: blob_name, embedding, one row per
    name), from the float16 rows of one block of pairs at a time (all of them as one
    float32 matrix was a transient of 5 KB per image, docs/performance.md, §3-4)."""
    row_of = {name: row for row, name in enumerate(vectors["blob_name"].to_list())}
    a = np.array([row_of[name] for name in blob_a], np.int64)
    b = np.array([row_of[name] for name in blob_b], np.int64)
    column = vectors["embedding"]
    cosines = np.empty(len(a), np.float32)
    for start in range(0, len(a), block):
        end = start + block
        cosines[start:end] = np.einsum("ij,ij->i", embeddings_matrix(column.gather(a[start:end])),
                                       embeddings_matrix(column.gather(b[start:end])))
    return cosines


def with_hash_pairs_cosines(candidates: pl.DataFrame, layout: StorageLayout) -> pl.DataFrame:
    """Candidates with a cosine for every pair. The embedding search gave its pairs
    theirs; only pairs the near-hash search found alone (8 of 30,938 in the 50th batch
    of 50k images) read their images' embeddings: reading those of every image the pairs
    reach (18k there) was the step's largest transient, +176 MB (docs/performance.md §3-4)."""
    missing = candidates.filter(pl.col("cosine").is_null())
    if missing.height == 0:
        return candidates
    names = set(missing["blob_a"]) | set(missing["blob_b"])
    vectors = read_rows(layout, "embeddings", ["blob_name", "embedding"], names).unique(subset="blob_name",
                                                                                      keep="last")
    found = missing.select("blob_a", "blob_b", pl.Series("found", pair_cosines(vectors, missing["blob_a"],
                                                                               missing["blob_b"]), pl.Float32))
    return (candidates.join(found, on=["blob_a", "blob_b"], how="left", maintain_order="left")
            .with_columns(pl.coalesce("cosine", "found").alias("cosine")).drop("found"))


class OnceCache:
    """A bounded LRU cache of `compute(key)` that computes each key once even when
    threads ask for it together (functools.lru_cache lets both compute: the two
    verification threads, taking consecutive pairs of one image, each described it)."""

    def __init__(self, compute: Callable[[int], PreparedImage], size: int):
        self.compute, self.size = compute, size
        self.lock = threading.Lock()
        self.done: OrderedDict[int, PreparedImage] = OrderedDict()
        self.running: dict[int, Future] = {}

    def __contains__(self, key: int) -> bool:
        with self.lock:
            return key in self.done

    def missing(self, keys: Iterable[int]) -> list[int]:
        """The keys neither computed nor being computed; those computed count as used
        now (kept the longest)."""
        keys = list(keys)
        with self.lock:
            for key in keys:
                if key in self.done:
                    self.done.move_to_end(key)
            return [key for key in keys if key not in self.done and key not in self.running]

    def __call__(self, key: int) -> PreparedImage:
        with self.lock:
            if key in self.done:
                self.done.move_to_end(key)
                return self.done[key]
            future = self.running.get(key)
            owner = future is None
            if owner:
                future = self.running[key] = Future()
        if not owner:
            return future.result()  # the owner's value, or its exception
        try:
            value = self.compute(key)
        except BaseException as error:
            with self.lock:
                del self.running[key]
            future.set_exception(error)
            raise
        with self.lock:  # from running to done at once: no one computes it again meanwhile
            del self.running[key]
            self.done[key] = value
            if len(self.done) > self.size:
                self.done.popitem(last=False)
        future.set_result(value)
        return value


class FeatureStore:
    """The verifier's features of every image it described, kept beside the thumbnails.

    A batch's pairs reach ever more stored images as the corpus grows (on look-alike
    images, the pairs of 200 new images involved 200 distinct images in the first batch
    and 2,682 in the 25th); describing each again cost ~6 ms, every batch. With the store an
    image is described once, ever. Features depend on the verifier's settings
    (`features_key`): other settings use other files. ~40 KB per image for ORB."""

    def __init__(self, layout: StorageLayout, verifier):
        self.layout, self.verifier = layout, verifier
        self.root = f"verify_features/{verifier.features_key}"

    @staticmethod
    def supports(verifier) -> bool:
        return hasattr(verifier, "features_key")

    def path(self, thumbnail: str) -> str:
        # The name stored features have always had; since the twelfth session they hold
        # OrbVerifier's raw layout, and those written before as npz are read, then rewritten in it.
        return f"{self.root}/{thumbnail}.npz"

    def read(self, thumbnails: Iterable[str]) -> dict[str, bytes]:
        """Stored features by thumbnail path, for those described before."""
        by_path = {self.path(thumbnail): thumbnail for thumbnail in thumbnails}
        return {by_path[path]: data for path, data in self.layout.read_existing(by_path).items()}

    def outdated(self, data: bytes) -> bool:
        """Stored in an older layout: read, then rewritten in the current one."""
        return self.verifier.features_outdated(data)

    def write(self, images: dict[str, PreparedImage]) -> int:
        described = {self.path(thumbnail): self.verifier.encode_features(image)
                     for thumbnail, image in images.items() if image.features is not None}
        self.layout.write_many_bytes(described)
        return len(described)


# Verification threads by default: one per core up to this many. On one 16-vCPU GPU host
# 4 threads verified the most pairs of 4, 8 and 16, on its CPU and with its GPU alike: each
# fit's Python holds the GIL (docs/performance.md §7, seventeenth session).
VERIFY_THREADS_CAP = 4


def verification_threads(requested: int = 0) -> int:
    """Threads for `verify_pairs`: `requested`, or with 0 one per usable core (`vision.cores`),
    at most `VERIFY_THREADS_CAP`."""
    if requested < 0:
        raise ValueError("verified_pairs.workers must be >= 0 (0: one per core, at most 4)")
    return requested or min(usable_cores(), VERIFY_THREADS_CAP)


def describing_threads(verifier: Verifier, workers: int) -> int:
    """Threads decoding and describing a slice's images for `verify_pairs`: every usable
    core for a verifier that describes on the host (ORB: OpenCV releases the GIL, so
    describing scales with the cores while the fits' Python does not; on one 16-vCPU host
    ORB described 1,023 images/s on 16 threads, 422 on 4, while 4 threads matched the most
    pairs: §7); the verifying threads for one describing on a GPU (LightGlue: not 16
    networks at once there)."""
    return max(workers, usable_cores()) if getattr(verifier, "describes_on_host", False) else workers


def matches_on_describing_threads(verifier: Verifier, workers: int, describers: int) -> bool:
    """Whether `verify_pairs` matches on the describing threads and fits on `workers`: ORB
    on the CPU with more describing threads, whose ratio tests (compiled, without the GIL)
    then run on every core too, while the fits, whose Python holds the GIL, keep to
    `workers` (a verifier matching on a device takes whole slices instead)."""
    return (describers > workers and not getattr(verifier, "batches_pairs", False)
            and hasattr(verifier, "match_many") and hasattr(verifier, "fit_many"))


def verify_pairs(
    candidates: pl.DataFrame,  # blob_a, blob_b, found_by, cosine (of their embeddings)
    features: pl.DataFrame,  # blob_name, wavelet_hash, color_signature, thumbnail
    layout: StorageLayout,
    verifier: Verifier,
    policy: CascadePolicy,
    workers: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
    keep_features: bool = True,
) -> tuple[pl.DataFrame, float]:
    """Each candidate pair decided by the cascade, with its scores, on `workers` threads
    (`verification_threads`: 0, one per core up to 4). keep_features: read and write the
    verifier's features in a `FeatureStore` (when the verifier has one)."""
    started = time.perf_counter()
    workers = verification_threads(workers)
    if candidates.height == 0:
        return pl.DataFrame(schema=VERIFIED_SCHEMA), 0.0
    row_of = {name: i for i, name in enumerate(features["blob_name"].to_list())}
    a = np.array([row_of[n] for n in candidates["blob_a"]])
    b = np.array([row_of[n] for n in candidates["blob_b"]])
    hashes = features["wavelet_hash"].to_numpy()
    signatures = np.stack(features["color_signature"].to_numpy())
    hamming = np.bitwise_count(np.bitwise_xor(hashes[a], hashes[b])).astype(np.int32)
    colour = color_distance(signatures[a], signatures[b]).astype(np.float32)
    cosine = candidates["cosine"].to_numpy()
    gray = ~has_colour(signatures)  # the same test `clusters` uses to prefer a colour copy
    informative = is_informative(hashes)
    thumbnails = features["thumbnail"].to_list()
    # Null where stored before these were told: read as one picture.
    multi = (features["multi_picture"].fill_null(False).to_numpy() if "multi_picture" in features.columns
             else np.zeros(len(row_of), bool))

    # Near-identical pairs too: verification may find the detail their hashes cannot see.
    # Not an animation or a document of pages beside one picture: policy settles it (`decide`).
    to_verify = [i for i in range(len(a)) if multi[a[i]] == multi[b[i]]]

    # An image takes part in many pairs (pairs come sorted by blob_a): decode and
    # describe each once. Thumbnails are fetched a slice of pairs at a time, together
    # (one round of concurrent requests when the data root is on Azure).
    store = FeatureStore(layout, verifier) if keep_features and FeatureStore.supports(verifier) else None
    # A verifier with storable features (ORB) settles most pairs from them alone: a cached
    # image keeps its features (~40 KB), not its pixels (~200 KB at 512 px), which are
    # decoded again only for a pair whose fit needs them (docs/performance.md, §3).
    features_settle_pairs = FeatureStore.supports(verifier)
    # A verifier that takes pairs by the slice (ALIKED; ORB on a GPU) matches each slice's
    # pairs together on its device (ALIKED describes the slice's images together too);
    # the fits use the threads.
    batched = getattr(verifier, "batches_pairs", False)
    encoded: dict[str, bytes] = {}
    stored: dict[str, bytes] = {}
    described: dict[str, PreparedImage] = {}  # described here, not yet in the store
    described_lock = threading.Lock()  # the next slice is described while the writer takes the last one's
    migrated: list[str] = []  # read in an older layout, rewritten in the current one

    def from_thumbnail(row: int) -> PreparedImage:
        path = thumbnails[row]
        data = encoded.get(path) or layout.read_thumbnails([path])[path]  # fetched alone if not yet
        return verifier.prepare(decode_thumbnail(data, path))

    def stored_features(path: str) -> bytes | None:
        if store is None or path in stored or path in encoded:  # fetched with its slice
            return stored.get(path)
        return store.read([path]).get(path)  # prepared when its slice began, evicted since

    def prepare(row: int) -> PreparedImage:
        path = thumbnails[row]
        if (data := stored_features(path)) is not None:
            try:  # pixels decoded only if a pair needs them
                image = verifier.decode_features(data, lambda: from_thumbnail(row).gray)
            except Exception as error:  # an unreadable entry is a miss, not a failed batch
                log.warning("stored features %s unreadable (%s): describing the image again", store.path(path), error)
            else:
                if store is not None and store.outdated(data):
                    with described_lock:
                        described[path] = image  # written back in the current layout, read faster next time
                    migrated.append(path)
                return image
        image = from_thumbnail(row)
        if hasattr(verifier, "describe") and not hasattr(verifier, "describe_many"):
            verifier.describe(image)  # here, where one thread owns the image (ALIKED: by the slice)
        if store is not None:
            with described_lock:
                described[path] = image
        if features_settle_pairs:
            image.drop_pixels(lambda: from_thumbnail(row).gray)
        return image

    prepared = OnceCache(prepare, THUMBNAIL_CACHE)

    def run(i: int) -> Verification:
        return verifier.verify_prepared(prepared(a[i]), prepared(b[i]))

    def run_group(group: list[int]) -> list[Verification]:
        return verifier.verify_many([(prepared(a[i]), prepared(b[i])) for i in group])

    grouped = not batched and hasattr(verifier, "verify_many")

    verifications: dict[int, Verification] = {}
    # A slice's new features are written while the next slice is verified: written
    # between slices, the threads waited ~0.7 s per 1,000 new images (docs/performance.md §2).
    writing: Future | None = None
    # With more describing threads than verifying ones, each slice's images are decoded and
    # described on all of them (ORB's ratio tests run there too), and fitted on `workers`.
    describers = describing_threads(verifier, workers)
    # Where images are described apart from the matching (on their own threads, or before a
    # device matches the slice), the next slice's images are described while this slice is
    # matched: one after the other, the cores describing would wait for the matching
    # threads, and those for them, slice after slice.
    ahead = batched or describers > workers
    matching_apart = matches_on_describing_threads(verifier, workers, describers)
    slices = [to_verify[start:start + PAIRS_PER_FETCH] for start in range(0, len(to_verify), PAIRS_PER_FETCH)]

    def slice_rows(k: int) -> list[int]:
        return sorted({*a[slices[k]], *b[slices[k]]}) if k < len(slices) else []

    def fetch(rows: list[int], being_prepared: Iterable[int] = ()) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """Stored features and thumbnails of `rows`' images, fetched together; images
        prepared from an earlier slice, or being prepared, need nothing fetched."""
        busy = set(being_prepared)
        paths = {thumbnails[row] for row in rows if row not in prepared and row not in busy}
        found = store.read(paths) if store is not None else {}
        return found, layout.read_thumbnails([path for path in paths if path not in found])

    # OpenCV and faiss release the GIL. OpenMP's thread count is per thread: one each,
    # or every matching thread starts its own team and they fight over the cores.
    # OpenCV's own threads likewise, when there are several of ours.
    with (ThreadPoolExecutor(max(1, workers), initializer=faiss.omp_set_num_threads, initargs=(1,)) as pool,
          ThreadPoolExecutor(describers, thread_name_prefix="verify-describe") if describers > workers
          else contextlib.nullcontext(pool) as describing,
          ThreadPoolExecutor(1, thread_name_prefix="feature-writes") as writer,
          opencv_single_threaded() if describers > 1 else contextlib.nullcontext()):
        def describe_ahead(rows: list[int]) -> None:
            # Only images not yet prepared: most of a slice's were in the last one, and a
            # task per image cost the slice's thread ~14 µs each (~0.35 s per 25k pairs).
            for row in prepared.missing(rows):
                describing.submit(prepared, row)  # a failure reaches whoever asks for the image

        def match_ahead(k: int) -> list[Future]:
            """Slice k's ratio tests by groups of pairs, queued behind its images' describing:
            each gives its pairs' images and their matches."""
            def match_group(group: list[int]):
                pairs = [(prepared(a[i]), prepared(b[i])) for i in group]
                return pairs, verifier.match_many(pairs)

            chunk = slices[k] if k < len(slices) else []
            return [describing.submit(match_group, chunk[g:g + PAIRS_PER_GROUP])
                    for g in range(0, len(chunk), PAIRS_PER_GROUP)]

        following = fetch(slice_rows(0)) if ahead else ({}, {})
        if ahead:
            describe_ahead(slice_rows(0))
        matching = match_ahead(0) if matching_apart else []
        for k, chunk in enumerate(slices):
            rows = slice_rows(k)
            if ahead:
                next_rows = slice_rows(k + 1)
                current, following = following, fetch(next_rows, being_prepared=rows)
                stored, encoded = {**current[0], **following[0]}, {**current[1], **following[1]}
                describe_ahead(next_rows)  # after this slice's images: the queue is in order
            else:
                stored = encoded = {}  # the last slice's bytes go before this slice's arrive
                stored, encoded = fetch(rows)
            if batched:
                images = {row: prepared(row) for row in rows}  # described on the threads, or waited for
                results = verifier.verify_many([(images[a[i]], images[b[i]]) for i in chunk], pool.map)
            elif matching_apart:
                # This slice matched on every core (while the last one was fitted); the next
                # slice described and matched there while this one is fitted on `workers`.
                matched, matching = [future.result() for future in matching], match_ahead(k + 1)
                results = (result for done in pool.map(lambda group: verifier.fit_many(*group, map), matched)
                           for result in done)
            elif grouped:
                groups = [chunk[g:g + PAIRS_PER_GROUP] for g in range(0, len(chunk), PAIRS_PER_GROUP)]
                results = (result for done in pool.map(run_group, groups) for result in done)
            else:
                results = pool.map(run, chunk)
            for i, result in zip(chunk, results):
                verifications[i] = result
            with described_lock:
                finished, described = described, {}
            if finished:
                if writing is not None:
                    writing.result()  # one slice's features in flight at a time
                writing = writer.submit(store.write, finished)
            if on_progress:
                on_progress(len(verifications), len(to_verify))
        if writing is not None:
            writing.result()

    if migrated:
        log.info("%d stored feature files rewritten from npz in the current layout", len(migrated))

    rows = []
    names_a, names_b, found_by = (candidates[column].to_list() for column in ("blob_a", "blob_b", "found_by"))
    contents_a, contents_b = (candidates[column].to_list() if column in candidates.columns else [None] * len(a)
                              for column in ("content_a", "content_b"))
    for i in range(len(a)):
        decision = decide(int(hamming[i]), float(colour[i]), float(cosine[i]), bool(gray[a[i]]),
                          bool(gray[b[i]]), verifications.get(i), policy,
                          hashes_informative=bool(informative[a[i]] and informative[b[i]]),
                          multi_picture=(bool(multi[a[i]]), bool(multi[b[i]])))
        # A pair the hashes settled keeps no verification scores (coverage would mark crops).
        verification = verifications.get(i) if decision.stage != "hash" else None
        v = verification or Verification(0, 0, 0.0, 0.0)
        rows.append((names_a[i], names_b[i], found_by[i], int(hamming[i]), float(colour[i]), float(cosine[i]),
                     v.matches if verification else None, v.inliers if verification else None,
                     v.coverage_a if verification else None, v.coverage_b if verification else None,
                     v.spread if verification else None, v.agreement if verification else None, v.mirrored,
                     decision.is_duplicate, decision.stage, decision.reason, contents_a[i], contents_b[i],
                     v.frame_a, v.frame_b))
    return pl.DataFrame(rows, schema=VERIFIED_SCHEMA, orient="row"), time.perf_counter() - started
