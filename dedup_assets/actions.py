"""Acting on the keep/drop manifest, as plain Python: mark or quarantine the copies to
drop. Nothing here ever deletes a blob; a dry run (the default) only plans.

- `tag`: blob index tags on each duplicate (`dedup_action=drop`, `dedup_cluster=<id>`),
  so a lifecycle rule or a person can find them with `find_blobs_by_tags`.
- `copy`: a copy of each duplicate under a quarantine location outside the scanned one.

Each action first checks the blob still has the etag the decision was made on: a blob
rewritten since is skipped, never acted on blindly.
"""

from __future__ import annotations

import time
from typing import Callable

import polars as pl

from dedup_assets.sources import BlobChangedError, SourceDownRun, SourceUnavailableError
from dedup_assets.storage import StorageLayout

MODES = ("tag", "copy")
ACTION_SCHEMA = {"blob_name": pl.String, "cluster_id": pl.String, "mode": pl.String, "target": pl.String,
                 "status": pl.String, "detail": pl.String}
DROP_COLUMNS = ["blob_name", "cluster_id", "reason", "representative", "etag"]
# Actions held as Python rows at once; done ones are kept as a frame (a 3M-blob manifest
# has ~700k drops: as Python tuples they were ~300 MB of the step's peak).
ROWS_PER_FRAME = 10_000


def plan_drops(layout: StorageLayout, manifest_path: str) -> pl.DataFrame:
    """The manifest's drops, by name: only their rows and the columns acting needs are
    read (the whole 3M-blob manifest as a frame took the step to ~1.5 GB)."""
    if not layout.exists(manifest_path):
        raise FileNotFoundError(f"no keep/drop manifest at {manifest_path}: materialize keep_drop_manifest first")
    ((_, drops),) = layout.iter_parquet([manifest_path], DROP_COLUMNS, where=pl.col("action") == "drop")
    return drops.sort("blob_name")


def apply_actions(source, drops: pl.DataFrame, mode: str, dry_run: bool, quarantine: str | None = None,
                  on_progress: Callable[[int, int], None] | None = None) -> tuple[pl.DataFrame, float]:
    """Tag or copy each dropped blob (or, in a dry run, say what would be done).

    Returns one row per blob: status planned / tagged / copied / skipped / failed.
    """
    if mode not in MODES:
        raise ValueError(f"unknown action mode {mode!r}; expected one of {', '.join(MODES)}")
    started = time.perf_counter()
    if mode == "tag" and not source.supports_tags:
        raise ValueError(f"{source.describe()} has no blob index tags: use mode 'copy' with a quarantine location")
    if mode == "copy":
        if not quarantine:
            raise ValueError("mode 'copy' needs a quarantine location")
        source.check_quarantine(quarantine)
    rows, frames = [], []
    source_down = SourceDownRun(drops.height, "actions", "so the rest were not tried")
    for done, drop in enumerate(drops.iter_rows(named=True), 1):
        name, cluster = drop["blob_name"], drop["cluster_id"]
        target = source.quarantine_target(quarantine, name) if mode == "copy" else _tag_summary(cluster)
        refused = None  # the source's failure, not this blob's
        if dry_run:
            status, detail = "planned", f"dry run: would {mode} ({drop['reason']})"
        else:
            try:
                if mode == "tag":
                    source.set_tags(name, duplicate_tags(cluster, drop["representative"]), expected_etag=drop["etag"])
                    status, detail = "tagged", drop["reason"]
                else:
                    source.copy_to(name, target, expected_etag=drop["etag"])
                    status, detail = "copied", drop["reason"]
            except BlobChangedError as error:
                status, detail = "skipped", str(error)
            except FileNotFoundError:
                status, detail = "skipped", "blob no longer exists"
            except Exception as error:  # one blob's failure must not stop the others
                status, detail = "failed", f"{type(error).__name__}: {error}"[:500]
                if isinstance(error, SourceUnavailableError):
                    refused = str(error)
        source_down.note(refused)
        rows.append((name, cluster, mode, target, status, detail))
        if len(rows) == ROWS_PER_FRAME:
            frames.append(pl.DataFrame(rows, schema=ACTION_SCHEMA, orient="row"))
            rows = []
        if on_progress:
            on_progress(done, drops.height)
    frames.append(pl.DataFrame(rows, schema=ACTION_SCHEMA, orient="row"))
    return pl.concat(frames, rechunk=True), time.perf_counter() - started


def duplicate_tags(cluster_id: str, representative: str | None) -> dict[str, str]:
    tags = {"dedup_action": "drop", "dedup_cluster": cluster_id}
    # Tag values allow only ASCII letters and digits, space and + - . / : = _ (256 at most).
    if representative and len(representative) <= 256 and all(
            (c.isascii() and c.isalnum()) or c in " +-./:=_" for c in representative):
        tags["dedup_keep"] = representative
    return tags


def _tag_summary(cluster_id: str) -> str:
    return f"tags dedup_action=drop, dedup_cluster={cluster_id}"
