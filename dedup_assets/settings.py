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
# The whole numbers read from the environment: their default and least valid value.
WHOLE_NUMBER_SETTINGS = {"DEDUP_BATCH_SIZE": (1000, 1), "DEDUP_SETTLE_SECONDS": (5, 0),
                         "DEDUP_DOWNLOAD_CONCURRENCY": (16, 1)}


class SetupError(ValueError):
    """A setting a person has to change (an environment variable, a run config file, a
    source's address): `dedup` prints it alone, without a traceback."""


def whole_number(name: str) -> int:
    """The environment variable `name` as a whole number, or a SetupError naming it."""
    default, least = WHOLE_NUMBER_SETTINGS[name]
    value = os.environ.get(name, str(default))
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < least:
        raise SetupError(f"{name}={value!r}: expected a whole number, at least {least}")
    return number


def prepare_dagster_home(dagster_home: Path) -> Path:
    """Create the instance folder; link the project's dagster.yaml unless it has its own."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    if not config.exists() and (PROJECT_ROOT / "dagster.yaml").exists():
        config.symlink_to(PROJECT_ROOT / "dagster.yaml")
    return dagster_home


def apply_defaults() -> None:
    home = Path(os.environ.get("DEDUP_HOME") or DEFAULT_HOME).resolve()
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a file of that name, a read-only disk, no permission
        raise SetupError(f"DEDUP_HOME={home}: cannot be made a folder ({error.strerror or error})") from None
    os.environ["DEDUP_HOME"] = str(home)
    os.environ.setdefault("DEDUP_SOURCE", str(home / "demo" / "images"))
    for name, (default, _) in WHOLE_NUMBER_SETTINGS.items():
        os.environ.setdefault(name, str(default))
        whole_number(name)  # a typo stops here, named, not deep inside a run or a sensor tick
    # The Dagster instance lives under $DEDUP_HOME/dagster (runs, event logs, schedules,
    # compute logs), configured by the project's dagster.yaml.
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or home / "dagster").resolve()
    os.environ["DAGSTER_HOME"] = str(prepare_dagster_home(dagster_home))
    # No model hub is reachable in this project's environments: fail fast on a miss.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
