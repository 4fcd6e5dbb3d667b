import numpy as np
import pytest

from dedup_assets.embedding_stage import cached_embedder, cpu_onnx_runtime
from dedup_assets.vision.embedders import load_embedder
from dedup_assets.vision.onnx_embedders import OnnxEmbedder, onnx_embedder


@pytest.fixture(scope="module")
def torch_embedder():
    return load_embedder("efficientnet_lite0", device="cpu")


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_the_onnx_twin_gives_the_torch_vectors(torch_embedder, samples, tmp_path, monkeypatch, runtime):
    monkeypatch.setenv("DEDUP_MODEL_CACHE", str(tmp_path))
    images = list(samples.values())
    twin = onnx_embedder(torch_embedder, runtime=runtime)
    assert twin.runtime == runtime
    expected, got = torch_embedder.embed(images), twin.embed(images, batch_size=3)
    assert got.shape == expected.shape == (len(images), 1280)
    assert np.einsum("ij,ij->i", got, expected).min() > 0.9999
    assert list(tmp_path.glob("*.onnx"))  # exported once, cached on disk
    assert onnx_embedder(torch_embedder, runtime=runtime).embed(images[:1]).shape == (1, 1280)
    # A short last batch after full ones (OpenVINO reshapes its request to each batch size).
    assert np.einsum("ij,ij->i", twin.embed(images[:4], batch_size=3), expected[:4]).min() > 0.9999


def test_int8_quantisation_needs_calibration_images(torch_embedder, tmp_path, monkeypatch):
    monkeypatch.setenv("DEDUP_MODEL_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match="calibration"):
        onnx_embedder(torch_embedder, int8=True)


def test_the_stage_serves_the_onnx_export_by_openvino_on_cpu_unless_told_otherwise(tmp_path, monkeypatch):
    monkeypatch.setenv("DEDUP_MODEL_CACHE", str(tmp_path))
    default = cached_embedder.__wrapped__("efficientnet_lite0", None, "cpu", "auto")
    assert isinstance(default, OnnxEmbedder) and default.runtime == "openvino"
    onnx = cached_embedder.__wrapped__("efficientnet_lite0", None, "cpu", "onnx")
    assert isinstance(onnx, OnnxEmbedder) and onnx.runtime == "onnxruntime"
    assert onnx.name == default.name  # the same export and vectors: stored embeddings stay comparable
    plain = cached_embedder.__wrapped__("efficientnet_lite0", None, "cpu", "torch")
    assert not isinstance(plain, OnnxEmbedder) and plain.runtime == "torch"
    with pytest.raises(ValueError, match="runtime"):
        cached_embedder("efficientnet_lite0", None, "cpu", "tensorrt")


def test_auto_falls_back_to_onnx_runtime_where_openvino_is_not_installed(monkeypatch):
    import importlib.util

    assert cpu_onnx_runtime("auto") == "openvino"
    # A platform without an OpenVINO wheel, simulated: the package is installed here.
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else find_spec(name, *a))
    assert cpu_onnx_runtime("auto") == "onnxruntime"
    assert cpu_onnx_runtime("openvino") == "openvino" and cpu_onnx_runtime("torch") is None


def test_a_recorded_export_loads_without_pytorch_and_gives_the_same_vectors(samples, tmp_path, monkeypatch):
    import subprocess
    import sys

    monkeypatch.setenv("DEDUP_MODEL_CACHE", str(tmp_path))
    images = list(samples.values())
    first = cached_embedder.__wrapped__("efficientnet_lite0", None, "cpu", "auto")  # exports and records
    np.save(tmp_path / "images.npy", np.stack([np.resize(image, (64, 64, 3)) for image in images]))
    expected = first.embed(list(np.load(tmp_path / "images.npy")))
    script = (
        "import sys, numpy as np\n"
        "from dedup_assets.embedding_stage import cached_embedder\n"
        "embedder = cached_embedder('efficientnet_lite0', None, 'cpu', 'auto')\n"
        "np.save(sys.argv[1], embedder.embed(list(np.load(sys.argv[2]))))\n"
        "print(type(embedder).__name__, embedder.runtime, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "got.npy"), str(tmp_path / "images.npy")],
                         capture_output=True, text=True, check=True, timeout=300).stdout.split()
    assert out == ["OnnxEmbedder", "openvino", "False"]
    assert np.einsum("ij,ij->i", np.load(tmp_path / "got.npy"), expected).min() > 0.99999
