"""The cluster stage as plain Python: duplicate groups touching a batch, and the copy
to keep in each, from every verified pair stored so far."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from datetime import datetime, timezone

import polars as pl

from dedup_assets.vision.clustering import CENTRALITY_TIE, Image, fidelity, quality_score, star_clusters
from dedup_assets.vision.color import SIGNATURE_SIZE, has_colour

CLUSTER_SCHEMA = {
    "blob_name": pl.String, "cluster_id": pl.String, "representative": pl.String,
    "is_representative": pl.Boolean, "cluster_size": pl.Int32, "quality_score": pl.Float32,
    "reason": pl.String, "computed_at": pl.Datetime("us", "UTC"),
}
# A pair member whose whole frame lies inside the other copy, which it covers only
# partly, is a crop of it: never kept over the copy that contains it.
_CONTAINED, _PARTIAL = 0.97, 0.9


def _connected(start: set[str], neighbours: dict[str, set[str]]) -> set[str]:
    seen, stack = set(start), list(start)
    while stack:
        for other in neighbours[stack.pop()]:
            if other not in seen:
                seen.add(other)
                stack.append(other)
    return seen


def _duplicate_graph(pairs: pl.DataFrame) -> dict[str, set[str]]:
    neighbours: dict[str, set[str]] = defaultdict(set)
    for a, b in pairs.filter(pl.col("is_duplicate")).select("blob_a", "blob_b").rows():
        neighbours[a].add(b)
        neighbours[b].add(a)
    return neighbours


def _mean_cosines(duplicates: pl.DataFrame) -> dict[str, float]:
    """Each image's mean embedding cosine to the copies it is a verified duplicate of."""
    if "cosine" not in duplicates.columns or duplicates.height == 0:
        return {}
    ends = pl.concat([duplicates.select(pl.col("blob_a").alias("blob_name"), "cosine"),
                      duplicates.select(pl.col("blob_b").alias("blob_name"), "cosine")])
    return dict(ends.group_by("blob_name").agg(pl.col("cosine").mean()).rows())


def _why_kept(kept: Image, dropped: Image) -> str:
    """What a score alone would not show: the kept copy's colour, or, stored together, that
    the other copies resemble it more."""
    if kept.has_colour and not dropped.has_colour:
        return ", which has colour"
    if kept.age_rank == dropped.age_rank and kept.centrality > dropped.centrality + CENTRALITY_TIE:
        return ", which the other copies resemble most"
    return ""


def touching_pairs(batch_names: list[str], pairs: pl.DataFrame) -> pl.DataFrame:
    """The duplicate pairs of every component of the duplicate graph that touches the
    batch: all `cluster_batch` needs. Found by repeated joins on the columnar frame, one
    ring of the components at a time: a Python graph of every duplicate pair in the
    corpus (hundreds of thousands at millions of images) is never built."""
    duplicates = pairs.filter(pl.col("is_duplicate"))
    reached = pl.Series("name", batch_names, dtype=pl.String).unique()
    frontier = reached
    while frontier.len():
        ring = duplicates.filter(pl.col("blob_a").is_in(frontier) | pl.col("blob_b").is_in(frontier))
        ends = pl.concat([ring["blob_a"], ring["blob_b"]]).rename("name").unique()
        frontier = ends.filter(~ends.is_in(reached))
        reached = pl.concat([reached, frontier])
    # Both ends of a pair lie in the same component: one end reached means both were.
    return duplicates.filter(pl.col("blob_a").is_in(reached))


def touched_names(batch_names: list[str], component_pairs: pl.DataFrame) -> set[str]:
    """The batch and every blob of the components touching it (`touching_pairs`): the
    only images `cluster_batch` needs (read those, not the whole corpus)."""
    return set(batch_names) | set(component_pairs["blob_a"]) | set(component_pairs["blob_b"])


def cluster_batch(batch_names: list[str], pairs: pl.DataFrame, images: pl.DataFrame,
                  now: datetime | None = None) -> pl.DataFrame:
    """Clusters of every component of the duplicate graph that touches `batch_names`.

    pairs: blob_a, blob_b, is_duplicate, coverage_a, coverage_b, optionally cosine (the
        latest decision on every pair stored so far, or only `touching_pairs`;
        non-duplicates may be left out)
    images: blob_name, width, height, format, jpeg_quality, sharpness, bytes,
        color_signature, last_modified, optionally picture_width and picture_height (at
        least those of `touched_names`; blobs without a row are left out)
    """
    now = now or datetime.now(timezone.utc)
    neighbours = _duplicate_graph(pairs)
    contained: set[str] = set()
    duplicates = pairs.filter(pl.col("is_duplicate"))
    for a, b, coverage_a, coverage_b in duplicates.select("blob_a", "blob_b", "coverage_a", "coverage_b").rows():
        if coverage_a is not None and coverage_a >= _CONTAINED and coverage_b <= _PARTIAL:
            contained.add(a)
        if coverage_b is not None and coverage_b >= _CONTAINED and coverage_a <= _PARTIAL:
            contained.add(b)
    centrality = _mean_cosines(duplicates)
    known = set(images["blob_name"])
    members = _connected(set(batch_names) & known, neighbours) & known
    selected = images.filter(pl.col("blob_name").is_in(list(members))).sort("last_modified", "blob_name")
    # Stored partitions read back give the signature as a list: one row of 48 per image.
    signatures = selected["color_signature"].cast(pl.Array(pl.UInt8, SIGNATURE_SIZE)).to_numpy()
    coloured = has_colour(signatures)
    records = []
    age, previous = -1, object()
    for row, colour in zip(selected.drop("color_signature").iter_rows(named=True), coloured):
        # Copies stored in the same second (a bulk upload) are as old as each other:
        # Azure reports whole seconds, a local file's mtime its write order within one.
        stored_second = row["last_modified"].replace(microsecond=0)
        if stored_second != previous:
            age, previous = age + 1, stored_second
        # Bars around the picture (letterboxing, padding) add no resolution. Partitions
        # stored before the picture's size was measured have none.
        width, height = row.get("picture_width") or row["width"], row.get("picture_height") or row["height"]
        score = quality_score(width, height, row["format"], row["jpeg_quality"], row["sharpness"], row["bytes"])
        records.append(Image(row["blob_name"], width * height, fidelity(row["format"], row["jpeg_quality"]),
                             score, age, row["blob_name"] in contained, bool(colour),
                             centrality.get(row["blob_name"], 0.0), row["bytes"] or 0, row["sharpness"] or 0.0))
    by_name = {record.name: record for record in records}
    edges = [(a, b) for a in members for b in neighbours[a] if b in members and a < b]
    rows = []
    for representative, group in star_clusters(records, edges):
        cluster_id = hashlib.sha1(representative.encode()).hexdigest()[:16]
        for name in group:
            keep = name == representative
            if len(group) == 1:
                reason = "unique"
            elif keep:
                reason = f"kept: best of {len(group)} copies (quality {by_name[name].quality:.2f})"
            else:
                reason = (f"duplicate of {representative}{_why_kept(by_name[representative], by_name[name])} "
                          f"(quality {by_name[name].quality:.2f} vs {by_name[representative].quality:.2f})")
            rows.append((name, cluster_id, representative, keep, len(group), by_name[name].quality, reason, now))
    return pl.DataFrame(rows, schema=CLUSTER_SCHEMA, orient="row").sort("cluster_id", "blob_name")
