"""Environment defaults shared by the Dagster definitions, the CLI and the tests.

`DEDUP_HOME` holds every output (Parquet, thumbnails, the DuckDB catalog, the Dagster
instance); `DEDUP_SOURCE` names the images to deduplicate. Both are read by resources
through `dg.EnvVar`; this module only fills in the documented defaults when unset so
that `dg dev`, `dedup run` and the tests agree without extra setup.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HOME = PROJECT_ROOT / "data"


def apply_defaults() -> None:
    home = Path(os.environ.get("DEDUP_HOME") or DEFAULT_HOME).resolve()
    os.environ["DEDUP_HOME"] = str(home)
    os.environ.setdefault("DEDUP_SOURCE", str(home / "demo" / "images"))
    os.environ.setdefault("DEDUP_BATCH_SIZE", "1000")
    os.environ.setdefault("DEDUP_SETTLE_SECONDS", "5")
    # The instance config (dagster.yaml) lives at the project root and stores
    # everything under $DEDUP_HOME.
    if not os.environ.get("DAGSTER_HOME") and (PROJECT_ROOT / "dagster.yaml").exists():
        os.environ["DAGSTER_HOME"] = str(PROJECT_ROOT)
    # No model hub is reachable in this project's environments: fail fast on a miss.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    home.mkdir(parents=True, exist_ok=True)
