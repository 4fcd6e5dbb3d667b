from typing import Literal

import dagster as dg
import polars as pl

from dedup_assets.actions import apply_actions, plan_drops
from dedup_assets.assets.keep_drop_manifest import keep_drop_manifest
from dedup_assets.assets.reporting import log_progress, markdown_preview
from dedup_assets.resources import DedupStorageResource, ImageSourceResource


class DuplicateActionsConfig(dg.Config):
    # A dry run only writes the plan. Set false to act; nothing is ever deleted.
    dry_run: bool = True
    # tag: blob index tags (Azure); copy: a copy under `quarantine`; auto: tag where
    # the source has tags, else copy.
    mode: Literal["auto", "tag", "copy"] = "auto"
    # az://container/prefix or a folder, outside the scanned source (default for a
    # local folder source: $DEDUP_HOME/quarantine).
    quarantine: str | None = None


@dg.asset(
    # The manifest is read here, drops only, rather than loaded whole as an input.
    deps=[keep_drop_manifest],
    group_name="review",
    kinds={"azure", "parquet"},
    io_manager_key="parquet_io_manager",
)
def duplicate_actions(
    context: dg.AssetExecutionContext,
    config: DuplicateActionsConfig,
    image_source: ImageSourceResource,
    storage: DedupStorageResource,
) -> dg.Output[pl.DataFrame]:
    """Marks every `drop` of the manifest: blob index tags (`dedup_action=drop`,
    `dedup_cluster`) or a copy under a quarantine prefix. A dry run by default; never
    deletes; a blob rewritten since its decision is skipped."""
    source = image_source.open()
    mode = config.mode if config.mode != "auto" else ("tag" if source.supports_tags else "copy")
    quarantine = config.quarantine
    if mode == "copy" and not quarantine and not source.supports_tags:
        quarantine = str(storage.layout.home / "quarantine")
    drops = plan_drops(storage.layout, storage.layout.partition_path("keep_drop_manifest", None))
    actions, seconds = apply_actions(source, drops, mode, config.dry_run, quarantine,
                                     on_progress=log_progress(context.log, f"{mode} duplicates"))
    counts = {status: int(n) for status, n in actions.group_by("status").len().rows()}
    if counts.get("failed"):
        context.log.warning(f"{counts['failed']} action(s) failed; see the `duplicate_actions` table")
    return dg.Output(actions, metadata={
        "dagster/row_count": actions.height,
        "dry_run": config.dry_run,
        "mode": mode,
        **{f"status_{status}": n for status, n in sorted(counts.items())},
        "ms_per_blob": round(1000 * seconds / max(actions.height, 1), 2),
        "preview": markdown_preview(actions.select("blob_name", "status", "target", "detail"), 20),
    })
