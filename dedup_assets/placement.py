"""Where heavy steps may run, in Dagster's own terms.

- Pool `gpu` (embeddings, verified_pairs): `dagster instance concurrency set gpu N` caps
  how many of these steps run at once across all runs, N = the GPUs available.
- With Celery workers (`DEDUP_EXECUTOR=celery`) and `DEDUP_GPU_QUEUE=gpu`, the same steps
  carry dagster-celery's queue tag, so only workers started with `-q gpu` (one per GPU,
  concurrency 1) take them; every other step goes to the default `dagster` queue.
"""

from __future__ import annotations

import os

GPU_POOL = "gpu"


def gpu_step_tags() -> dict[str, str]:
    queue = os.environ.get("DEDUP_GPU_QUEUE")
    return {"dagster-celery/queue": queue} if queue else {}
