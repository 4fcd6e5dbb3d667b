import threading
from types import SimpleNamespace

import cv2
import numpy as np
import polars as pl
import pytest
import torch

from dedup_assets.embedding_stage import embed_batch, load_thumbnails, pass_size
from dedup_assets.storage import StorageLayout
from dedup_assets.vision.decode import encode_jpeg
from dedup_assets.vision.embedders import TorchEmbedder


@pytest.mark.parametrize(("device", "configured", "expected"), [
    ("cpu", None, 8),  # the CPU runtimes: as fast as 16 or 32, half the memory of 16
    ("cuda", None, 256), ("cuda:1", None, 256),  # a GPU needs large passes to be busy
    ("cuda", 32, 32), ("cpu", 64, 64),  # a configured size wins
])
def test_images_per_pass_follow_the_device_unless_configured(device, configured, expected):
    assert pass_size(configured, SimpleNamespace(device=device)) == expected


def test_a_pass_of_no_images_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        pass_size(0, SimpleNamespace(device="cpu"))


def stored_thumbnails(layout: StorageLayout, count: int) -> pl.DataFrame:
    """`count` distinct thumbnails in a data root, as the hash stage leaves them (one
    content stored under two names: copies share one embedding)."""
    rng = np.random.default_rng(0)
    rows = []
    for number in range(count):
        content = f"{number:02d}" * 32
        thumbnail = layout.thumbnail_key(content)
        pixels = cv2.GaussianBlur(rng.integers(0, 256, (96 + number, 128, 3), dtype=np.uint8), (5, 5), 0)
        layout.write_bytes(layout.data_path(thumbnail), encode_jpeg(pixels))
        rows.append((f"image_{number}.jpg", content, thumbnail))
    rows.append(("copy_of_image_0.jpg", rows[0][1], rows[0][2]))
    return pl.DataFrame(rows, schema={"blob_name": pl.String, "content_hash": pl.String, "thumbnail": pl.String},
                        orient="row")


def tiny_embedder() -> TorchEmbedder:
    network = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    return TorchEmbedder("tiny", network.eval(), 32, (0.5,) * 3, (0.5,) * 3, 6, "cpu")


def test_each_content_gets_the_vector_the_embedder_gives_its_thumbnail(tmp_path):
    layout = StorageLayout(tmp_path)
    hashes = stored_thumbnails(layout, 7)
    embedder = tiny_embedder()
    progress = []

    frame, _ = embed_batch(hashes, layout, embedder, batch_size=3, on_progress=lambda done, total: progress.append(done))

    distinct = hashes.head(7)
    expected = embedder.embed(load_thumbnails(layout, distinct["thumbnail"].to_list()), batch_size=3)
    got = np.stack([np.frombuffer(vector, "<f2") for vector in frame["embedding"].head(7)])
    assert np.array_equal(got, expected.astype("<f2"))
    assert frame["embedding"][7] == frame["embedding"][0]  # the copy shares its content's vector
    assert frame["blob_name"].to_list() == hashes["blob_name"].to_list()
    assert progress == [3, 6, 7]


class WaitingEmbedder:
    """Its network waits (up to 10 s) for the next pass's preparation to have begun,
    which happens at once only if passes are prepared ahead; records what it saw."""

    name, dim, device, runtime = "waiting", 2, "cpu", "test"

    def __init__(self, passes: int):
        self.passes, self.prepared, self.runs = passes, 0, []
        self.changed = threading.Condition()

    def preprocess(self, images):
        with self.changed:
            self.prepared += 1
            self.changed.notify_all()
        return np.zeros((len(images), 2), np.float32)

    def embed_preprocessed(self, inputs):
        with self.changed:
            following = len(self.runs) + 2  # the next pass, counted from 1
            ahead = following > self.passes or self.changed.wait_for(lambda: self.prepared >= following, 10)
            self.runs.append((len(inputs), ahead))
        return inputs + 1


def test_the_next_pass_is_prepared_while_the_network_runs(tmp_path):
    layout = StorageLayout(tmp_path)
    embedder = WaitingEmbedder(passes=3)

    embed_batch(stored_thumbnails(layout, 5), layout, embedder, batch_size=2)

    assert embedder.runs == [(2, True), (2, True), (1, True)]


def test_a_pass_that_cannot_be_prepared_fails_the_batch_with_its_reason(tmp_path):
    layout = StorageLayout(tmp_path)
    hashes = stored_thumbnails(layout, 4)
    layout.write_bytes(layout.data_path(hashes["thumbnail"][3]), b"not a jpeg")

    with pytest.raises(ValueError, match="thumbnail unreadable"):
        embed_batch(hashes, layout, tiny_embedder(), batch_size=2)
