"""The same pretrained embedders run from an ONNX export on the CPU: the torch model is
exported once (cached on disk by a key of model, weights and input size), optionally
quantised to int8 with calibration images, then served by OpenVINO's CPU plugin (~2×
ONNX Runtime here, same vectors: bench/embedding_speed.py) or an ONNX Runtime
InferenceSession.

When the weights come from a file, the export is also recorded under a key of that
file's content, so later processes load it without building the network or importing
PyTorch at all (about 470 MB less memory per process)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from dedup_assets.local_files import write_bytes_atomic
from dedup_assets.vision.cores import usable_cores
from dedup_assets.vision.embedders import (TorchEmbedder, WeightsUnavailableError, default_weights_file,
                                           embed_in_passes, squashed)


@dataclass
class OnnxEmbedder:
    name: str
    session: object  # onnxruntime.InferenceSession, or OpenVinoSession (the same run())
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dim: int
    device: str = "cpu"
    path: Path | None = None  # the .onnx file the session runs

    @property
    def runtime(self) -> str:
        return "openvino" if isinstance(self.session, OpenVinoSession) else "onnxruntime"

    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        stacked = squashed(images, self.input_size)  # as TorchEmbedder
        # Channels first while still bytes, then normalised in place: (x/255 - mean)/std
        # in two passes over the floats (seven times faster than step by step).
        pixels = stacked.transpose(0, 3, 1, 2).astype(np.float32, order="C")
        pixels -= (np.asarray(self.mean, np.float32) * 255)[:, None, None]
        pixels *= (1 / (np.asarray(self.std, np.float32) * 255))[:, None, None]
        return pixels

    def embed_preprocessed(self, pixels: np.ndarray) -> np.ndarray:
        (features,) = self.session.run(None, {"pixels": pixels})
        return (features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def embed(self, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        return embed_in_passes(self, images, batch_size)


def _cache_dir() -> Path:
    root = os.environ.get("DEDUP_MODEL_CACHE") or Path(os.environ.get("DEDUP_HOME", "data")) / "models"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _export(embedder: TorchEmbedder, path: Path, input_size: int) -> None:
    import torch

    dummy = torch.zeros(1, 3, input_size, input_size)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.onnx.export(embedder.model.float().cpu(), dummy, str(tmp), input_names=["pixels"],
                      output_names=["features"], dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}},
                      opset_version=17, dynamo=False)
    os.replace(tmp, path)


class _Calibration:
    """Feeds calibration images to onnxruntime's static quantiser, one batch at a time."""

    def __init__(self, batches: list[np.ndarray]):
        self._batches = iter(batches)

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {"pixels": batch}


def _quantize(fp32: Path, path: Path, calibration: list[np.ndarray]) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_Calibration, CalibrationDataReader):
        pass

    prepared = path.with_suffix(".prep.onnx")
    quant_pre_process(str(fp32), str(prepared))
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    quantize_static(str(prepared), str(tmp), Reader(calibration), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    os.replace(tmp, path)
    prepared.unlink(missing_ok=True)


def onnx_embedder(embedder: TorchEmbedder, input_size: int | None = None, int8: bool = False,
                  calibration_images: Sequence[np.ndarray] | None = None, threads: int = 0,
                  runtime: str = "onnxruntime") -> OnnxEmbedder:
    """ONNX twin of a CPU torch embedder (same weights, same preprocessing), run by
    `runtime`: onnxruntime or openvino."""
    size = input_size or embedder.input_size
    digest = hashlib.sha1()
    for tensor in embedder.model.state_dict().values():
        digest.update(tensor.detach().cpu().numpy().tobytes()[:4096])
    key = f"{embedder.name.replace(':', '_')}-{size}-{digest.hexdigest()[:12]}"
    fp32 = _cache_dir() / f"{key}.onnx"
    if not fp32.exists():
        _export(embedder, fp32, size)
    model_path = fp32
    twin = OnnxEmbedder(embedder.name, None, size, embedder.mean, embedder.std, embedder.dim)
    if int8:
        if not calibration_images:
            raise ValueError("int8 quantisation needs calibration images")
        model_path = _cache_dir() / f"{key}-int8.onnx"
        if not model_path.exists():
            batches = [twin.preprocess(calibration_images[i:i + 16]) for i in range(0, len(calibration_images), 16)]
            _quantize(fp32, model_path, batches)
    twin.session = _session(model_path, threads, runtime)
    # The name is the export's, whichever runtime serves it: the vectors are the same, so
    # embeddings (and the compressed index keyed by this name) stay comparable.
    twin.name = f"{embedder.name}@{size}{'-int8' if int8 else ''}-onnx"
    twin.path = model_path
    return twin


RUNTIMES = ("onnxruntime", "openvino")


class OpenVinoSession:
    """OpenVINO's CPU plugin behind ONNX Runtime's `run(None, {"pixels": batch})`.

    float32 by default: OpenVINO would otherwise run bfloat16 on CPUs with AMX, twice as
    fast but moving the vectors (cosine to float32 down to 0.978; bench/embedding_speed.py)."""

    def __init__(self, model_path: Path, threads: int, precision: str = "f32"):
        import openvino as ov

        self._compiled = ov.Core().compile_model(str(model_path), "CPU", {
            "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY"})
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request, reused; its output is overwritten by the next

    def run(self, output_names, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            result = self._request.infer(feeds)
            return [np.array(result[0], copy=True)]


def _session(model_path: Path, threads: int = 0, runtime: str = "onnxruntime"):
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown ONNX runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    threads = threads or usable_cores()
    if runtime == "openvino":
        return OpenVinoSession(model_path, threads)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # No arena: activations of a 32-image batch (~0.5 GB) are returned after each run,
    # not kept for the life of the process.
    options.enable_cpu_mem_arena = False
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


@functools.lru_cache(maxsize=8)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _record_path(model: str, weights: str | None, input_size: int | None) -> Path | None:
    """Where the export of these weights is recorded; None when they are not one file."""
    try:
        path = weights if weights and os.path.isfile(weights) else (None if weights else default_weights_file(model))
    except WeightsUnavailableError:
        return None
    if not path:
        return None
    stat = os.stat(path)
    digest = _file_digest(path, stat.st_size, stat.st_mtime_ns)
    name = model.replace(":", "_").replace("/", "_")
    return _cache_dir() / f"{name}-{input_size or 'default'}-w{digest[:12]}.json"


def record_export(model: str, weights: str | None, input_size: int | None, twin: OnnxEmbedder) -> None:
    record = _record_path(model, weights, input_size)
    if record is None:
        return
    facts = {"onnx": twin.path.name, "name": twin.name, "input_size": twin.input_size,
             "mean": list(twin.mean), "std": list(twin.std), "dim": twin.dim}
    write_bytes_atomic(json.dumps(facts).encode(), record)


def load_exported(model: str, weights: str | None, input_size: int | None, threads: int = 0,
                  runtime: str = "onnxruntime") -> OnnxEmbedder | None:
    """The recorded export of these weights, loaded without PyTorch; None if there is none."""
    record = _record_path(model, weights, input_size)
    if record is None or not record.exists():
        return None
    facts = json.loads(record.read_text())
    path = record.parent / facts["onnx"]
    if not path.exists():
        return None
    twin = OnnxEmbedder(facts["name"], _session(path, threads, runtime), facts["input_size"], tuple(facts["mean"]),
                        tuple(facts["std"]), facts["dim"])
    twin.path = path
    return twin
