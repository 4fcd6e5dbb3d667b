"""Run-log progress and metadata previews shared by the assets."""

from __future__ import annotations

import time

import dagster as dg
import polars as pl
from typing import Callable


def log_progress(log, label: str, every_seconds: float = 5.0) -> Callable[[int, int], None]:
    started = time.perf_counter()
    last = [started]

    def report(done: int, total: int) -> None:
        now = time.perf_counter()
        if done == total or now - last[0] >= every_seconds:
            last[0] = now
            rate = done / max(now - started, 1e-9)
            log.info(f"{label}: {done}/{total} ({rate:.0f}/s)")

    return report


def timing(count: int, seconds: float) -> dict:
    """Time per image, the figure to compare across batches and machines."""
    return {"seconds": round(seconds, 3), "ms_per_image": round(1000 * seconds / max(count, 1), 3)}


def markdown_preview(frame: pl.DataFrame, rows: int = 10) -> dg.MetadataValue:
    if frame.height == 0:
        return dg.MetadataValue.md("_empty_")
    with pl.Config(tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True,
                   tbl_hide_dataframe_shape=True, fmt_str_lengths=60, tbl_width_chars=400):
        return dg.MetadataValue.md(str(frame.head(rows)))
