import numpy as np
import pytest

from dedup_assets.vision.embedders import WeightsUnavailableError, load_embedder
from dedup_assets.vision.verify import LoFTRVerifier


@pytest.fixture(scope="module")
def embedder():
    return load_embedder("efficientnet_lite0", device="cpu")


def test_pretrained_embeddings_place_copies_closer_than_other_photos(embedder, samples):
    names = ["astronaut", "astronaut_crop", "astronaut_faded", "coffee", "coffee_captioned"]
    vectors = embedder.embed([samples[n] for n in names])
    assert vectors.shape == (5, 1280)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    similarity = vectors @ vectors.T
    copies = [similarity[0, 1], similarity[0, 2], similarity[3, 4]]
    others = [similarity[0, 3], similarity[0, 4], similarity[1, 3]]
    assert min(copies) > max(others) + 0.15


def test_a_missing_weights_file_fails_with_a_clear_message(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="not found"):
        load_embedder("efficientnet_lite0", weights=str(tmp_path / "missing.pth"), device="cpu")


def test_hub_models_without_cached_weights_fail_with_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(WeightsUnavailableError, match="open_clip ViT-B-32.*local"):
        load_embedder("open_clip:ViT-B-32/laion2b_s34b_b79k", device="cpu")
    with pytest.raises(WeightsUnavailableError, match="timm tf_efficientnet_b7.*local"):
        load_embedder("timm:tf_efficientnet_b7", device="cpu")


def test_open_clip_loads_from_a_local_checkpoint(tmp_path):
    # The real open_clip loader, given a local file: here one written from an untrained
    # model, since no CLIP weights ship on PyPI.
    import open_clip
    import torch

    model = open_clip.create_model("ViT-B-32", pretrained=None)
    path = tmp_path / "vit-b-32.bin"
    torch.save(model.state_dict(), path)
    embedder = load_embedder("open_clip:ViT-B-32", weights=str(path), device="cpu")
    assert embedder.embed([np.zeros((64, 64, 3), np.uint8)]).shape == (1, 512)


def test_loftr_without_weights_fails_with_what_to_do(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="checkpoint not found"):
        LoFTRVerifier(device="cpu", checkpoint=str(tmp_path / "loftr.ckpt"))


def test_unknown_model_names_are_rejected():
    with pytest.raises(ValueError, match="unknown embedding model"):
        load_embedder("resnet9000")


def test_loftr_loads_a_local_checkpoint(tmp_path):
    # No LoFTR weights ship on PyPI: a checkpoint written from an untrained model
    # exercises the same local-file path a user's downloaded checkpoint takes.
    import kornia.feature as KF
    import torch

    source = KF.LoFTR(pretrained=None)
    path = tmp_path / "loftr_outdoor.ckpt"
    torch.save({"state_dict": source.state_dict()}, path)
    verifier = LoFTRVerifier(device="cpu", checkpoint=str(path))
    loaded = verifier.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in source.state_dict().items())


def test_images_are_squashed_alike_on_one_thread_and_on_every_core():
    import cv2

    from dedup_assets.vision.embedders import PARALLEL_FROM, squashed

    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8)
              for h, w in rng.integers(40, 300, (PARALLEL_FROM + 5, 2))]
    expected = np.stack([cv2.resize(image, (24, 24), interpolation=cv2.INTER_AREA) for image in images])
    assert np.array_equal(squashed(images, 24), expected)  # the batch's order kept, on the pool
    assert np.array_equal(squashed(images[:3], 24), expected[:3])


def test_a_float16_embedder_holds_float16_weights():
    # On CUDA the loaders ask for float16: inputs are cast in _batch, so the weights must be
    # too (the GPU bench found them left in float32: "Input type HalfTensor and weight type
    # FloatTensor"). Checked on the weights alone: CPU kernels need not run float16.
    import torch

    from dedup_assets.vision.embedders import TorchEmbedder

    embedder = TorchEmbedder("tiny", torch.nn.Conv2d(3, 4, 3), 32, (0.5,) * 3, (0.5,) * 3, 4, "cpu", half=True)
    assert {parameter.dtype for parameter in embedder.model.parameters()} == {torch.float16}
