"""Small PNG charts for the Dagster UI, embedded in markdown metadata as data URIs."""

from __future__ import annotations

import base64
import io

import numpy as np


def _pyplot():
    # Imported when a chart is drawn, not when the definitions load (sensor ticks,
    # the webserver's code server).
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in tests
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    return buffer.getvalue()


def cluster_size_histogram(sizes: np.ndarray) -> bytes:
    """How many duplicate groups have 2, 3, ... copies."""
    figure, axis = _pyplot().subplots(figsize=(5, 3))
    if len(sizes):
        values, counts = np.unique(sizes, return_counts=True)
        axis.bar(values, counts, color="#4c72b0")
        axis.set_xticks(values)
    axis.set_xlabel("copies per group")
    axis.set_ylabel("groups")
    axis.set_title("Duplicate group sizes")
    return _png(figure)


def similarity_distributions(scores: dict[str, tuple[np.ndarray, np.ndarray]]) -> bytes:
    """One panel per score, duplicates against distinct pairs: {title: (dup, distinct)}."""
    figure, axes = _pyplot().subplots(1, len(scores), figsize=(4 * len(scores), 3), squeeze=False)
    for axis, (title, (duplicate, distinct)) in zip(axes[0], scores.items()):
        values = np.concatenate([duplicate, distinct]) if len(duplicate) + len(distinct) else np.zeros(1)
        bins = np.linspace(float(values.min()), float(values.max()) + 1e-6, 30)
        axis.hist(distinct, bins=bins, alpha=.6, label=f"distinct ({len(distinct)})", color="#cf222e")
        axis.hist(duplicate, bins=bins, alpha=.6, label=f"duplicate ({len(duplicate)})", color="#1a7f37")
        axis.set_title(title)
        axis.legend(fontsize=7)
    return _png(figure)


def markdown_image(png: bytes, title: str) -> str:
    return f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})"
