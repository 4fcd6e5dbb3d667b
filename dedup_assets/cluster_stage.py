"""The cluster stage as plain Python: duplicate groups touching a batch, and the copy
to keep in each, from every verified pair stored so far."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import polars as pl

from dedup_assets.vision.clustering import (CENTRALITY_TIE, Image, adjacency, fidelity, quality_score, reachable,
                                           star_clusters)
from dedup_assets.vision.color import SIGNATURE_SIZE, has_colour
from dedup_assets.vision.verify import WHOLE_INSIDE

CLUSTER_SCHEMA = {
    "blob_name": pl.String, "cluster_id": pl.String, "representative": pl.String,
    "is_representative": pl.Boolean, "cluster_size": pl.Int32, "quality_score": pl.Float32,
    "reason": pl.String, "computed_at": pl.Datetime("us", "UTC"),
}
# A pair member whose whole frame lies inside the other copy, which it covers only
# partly, is a crop of it: never kept over the copy that contains it ...
_PARTIAL = 0.9
# ... unless the copy's picture ends on every side of its footprint inside the other
# (`verify.frame_sides`): a frame around it, not more of the scene — a screenshot's
# interface, a caption bar, a perspective warp's filled corners. Then the other's picture
# is only the part the copy covers.
FRAMED = 1.0


def with_nodes(pairs: pl.DataFrame) -> pl.DataFrame:
    """Pairs with node_a, node_b: what each end stands for in the duplicate graph, its
    content (a decision holds for every byte-identical copy), or, for pairs stored before
    contents were (null there), its name."""
    if "content_a" not in pairs.columns:
        return pairs.with_columns(pl.col("blob_a").alias("node_a"), pl.col("blob_b").alias("node_b"))
    return pairs.with_columns(pl.coalesce("content_a", "blob_a").alias("node_a"),
                              pl.coalesce("content_b", "blob_b").alias("node_b"))


def _inside_another(duplicates: pl.DataFrame) -> tuple[set[str], dict[str, float]]:
    """The nodes that are crops of another copy (their whole frame inside it, which shows
    more of the scene), and for copies that frame another whole, the share of their
    picture that copy covers (the least, if several)."""
    contained: set[str] = set()
    picture_share: dict[str, float] = {}
    frames = [pl.col(c) if c in duplicates.columns else pl.lit(None).alias(c) for c in ("frame_a", "frame_b")]
    ends = duplicates.select("node_a", "node_b", "coverage_a", "coverage_b", *frames).rows()
    for a, b, coverage_a, coverage_b, frame_a, frame_b in ends:
        for inner, outer, inner_inside, outer_covered, outer_frame in ((a, b, coverage_a, coverage_b, frame_b),
                                                                        (b, a, coverage_b, coverage_a, frame_a)):
            if inner_inside is None or inner_inside < WHOLE_INSIDE or outer_covered > _PARTIAL:
                continue
            if outer_frame is not None and outer_frame >= FRAMED:
                picture_share[outer] = min(picture_share.get(outer, 1.0), outer_covered)
            else:
                contained.add(inner)
    return contained, picture_share


def _mean_cosines(duplicates: pl.DataFrame) -> dict[str, float]:
    """Each node's mean embedding cosine to the copies it is a verified duplicate of."""
    if "cosine" not in duplicates.columns or duplicates.height == 0:
        return {}
    ends = pl.concat([duplicates.select(pl.col("node_a").alias("node"), "cosine"),
                      duplicates.select(pl.col("node_b").alias("node"), "cosine")])
    return dict(ends.group_by("node").agg(pl.col("cosine").mean()).rows())


def _why_kept(kept: Image, dropped: Image) -> str:
    """What a score alone would not show: that the dropped copy frames the kept one (its
    pixels beyond it are a frame), the kept copy's colour, or, stored together, that the
    other copies resemble it more."""
    if dropped.framed and not kept.framed:
        return ", which it shows inside a frame"
    if kept.has_colour and not dropped.has_colour:
        return ", which has colour"
    if kept.age_rank == dropped.age_rank and kept.centrality > dropped.centrality + CENTRALITY_TIE:
        return ", which the other copies resemble most"
    return ""


def touching_pairs(batch_nodes: list[str], pairs: pl.DataFrame) -> pl.DataFrame:
    """The duplicate pairs of every component of the duplicate graph that touches the
    batch's nodes (its contents, `with_nodes`), with node_a, node_b: all `cluster_batch`
    needs. Found by repeated joins on the columnar frame, one ring of the components at a
    time: a Python graph of every duplicate pair in the corpus (hundreds of thousands at
    millions of images) is never built."""
    duplicates = with_nodes(pairs.filter(pl.col("is_duplicate")))
    reached = pl.Series("node", batch_nodes, dtype=pl.String).unique()
    frontier = reached
    while frontier.len():
        ring = duplicates.filter(pl.col("node_a").is_in(frontier) | pl.col("node_b").is_in(frontier))
        ends = pl.concat([ring["node_a"], ring["node_b"]]).rename("node").unique()
        frontier = ends.filter(~ends.is_in(reached))
        reached = pl.concat([reached, frontier])
    # Both ends of a pair lie in the same component: one end reached means both were.
    return duplicates.filter(pl.col("node_a").is_in(reached))


def touched_nodes(batch_nodes: list[str], component_pairs: pl.DataFrame) -> set[str]:
    """The batch's nodes and every node of the components touching them (`touching_pairs`):
    the images of these contents are the only ones `cluster_batch` needs."""
    return set(batch_nodes) | set(component_pairs["node_a"]) | set(component_pairs["node_b"])


def cluster_batch(batch_names: list[str], pairs: pl.DataFrame, images: pl.DataFrame,
                  now: datetime | None = None) -> pl.DataFrame:
    """Clusters of every component of the duplicate graph that touches `batch_names`.

    pairs: blob_a, blob_b, is_duplicate, coverage_a, coverage_b, optionally cosine,
        frame_a, frame_b (`_inside_another`) and content_a, content_b (the latest decision
        on every pair stored so far, or only `touching_pairs`; non-duplicates may be left out)
    images: blob_name, width, height, format, jpeg_quality, sharpness, bytes,
        color_signature, last_modified, optionally content_hash, picture_width and
        picture_height (at least every copy of `touched_nodes`; blobs without a row are
        left out). Copies with one content_hash are one node of the graph: always
        grouped together, and a pair verified for one holds for each.
    """
    now = now or datetime.now(timezone.utc)
    duplicates = with_nodes(pairs.filter(pl.col("is_duplicate")))
    neighbours = adjacency(duplicates.select("node_a", "node_b").rows())
    contained, picture_share = _inside_another(duplicates)
    centrality = _mean_cosines(duplicates)
    names = images["blob_name"]
    nodes = images["content_hash"].fill_null(names) if "content_hash" in images.columns else names
    node_of = dict(zip(names.to_list(), nodes.to_list()))
    known = set(node_of.values())
    members = reachable({node_of[name] for name in batch_names if name in node_of}, neighbours) & known
    selected = images.filter(nodes.is_in(list(members))).sort("last_modified", "blob_name")
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
        node = node_of[row["blob_name"]]
        pixels = round(width * height * picture_share.get(node, 1.0))
        score = quality_score(pixels, row["format"], row["jpeg_quality"], row["sharpness"], row["bytes"])
        records.append(Image(row["blob_name"], pixels, fidelity(row["format"], row["jpeg_quality"]),
                             score, age, node in contained, bool(colour), centrality.get(node, 0.0),
                             row["bytes"] or 0, row["sharpness"] or 0.0, node in picture_share))
    by_name = {record.name: record for record in records}
    edges = [(a, b) for a in members for b in neighbours[a] if b in members and a < b]
    rows = []
    for representative, group in star_clusters(records, edges, node_of):
        cluster_id = hashlib.sha1(representative.encode()).hexdigest()[:16]
        for name in group:
            keep = name == representative
            if len(group) == 1:
                reason = "unique"
            elif keep:
                reason = f"kept: best of {len(group)} copies (quality {by_name[name].quality:.2f})"
            elif node_of[name] == node_of[representative]:
                reason = f"byte-identical copy of {representative}"
            else:
                reason = (f"duplicate of {representative}{_why_kept(by_name[representative], by_name[name])} "
                          f"(quality {by_name[name].quality:.2f} vs {by_name[representative].quality:.2f})")
            rows.append((name, cluster_id, representative, keep, len(group), by_name[name].quality, reason, now))
    return pl.DataFrame(rows, schema=CLUSTER_SCHEMA, orient="row").sort("cluster_id", "blob_name")
