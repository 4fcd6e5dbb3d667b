"""What a person reviews and acts on, as plain Python: the keep/drop manifest and a
static, paged HTML gallery of the duplicate clusters.

Both read the DuckDB catalog (latest cluster row per blob, across every batch), so they
reflect the whole corpus, not one partition.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
from jinja2 import Environment, PackageLoader, select_autoescape

from dedup_assets.catalog import bounded_memory, connect_views, quoted
from dedup_assets.local_files import replaced_atomically, write_bytes_atomic
from dedup_assets.storage import StorageLayout

# keep: the representative of a group, or a unique image; drop: a copy of the
# representative; review: the blob could not be decided (it failed a stage).
ACTIONS = ("keep", "drop", "review")


def _views(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {row[0] for row in con.execute("select view_name from duckdb_views() where not internal").fetchall()}


def _frame(con: duckdb.DuckDBPyConnection, sql: str, schema: dict) -> pl.DataFrame:
    # Through Arrow, not Python tuples.
    frame = con.execute(sql).pl()
    return frame.rename(dict(zip(frame.columns, schema))).cast(schema)


# DuckDB sorts the manifest within this much memory and spills the rest to disk: built
# as one in-memory frame it peaked at 2.8 GB for 3M blobs (bench/review_scale.py).
MANIFEST_MEMORY_LIMIT = "512MB"
_EMPTY_MANIFEST = ("select null::varchar as blob_name, null::varchar as cluster_id, null::varchar as action, "
                   "null::varchar as reason, null::varchar as representative, null::integer as cluster_size, "
                   "null::varchar as etag where false")


def decided_names_sql(views: set[str]) -> str:
    """The names `clusters` holds: a failed blob among them (its new version decided since)
    is no 'review' row."""
    return "select blob_name from clusters" if "clusters" in views else "select null where false"


def manifest_sql(views: set[str]) -> str:
    """One row per inventoried blob: keep, drop (with the copy it duplicates) or review
    (it failed a stage: the reason says which and why), sorted by name."""
    if "blob_inventory" not in views:
        return _EMPTY_MANIFEST
    parts = []
    # The latest inventoried version of each name: its etag guards the actions.
    inventory = ("(select blob_name, etag from blob_inventory qualify row_number() over "
                 "(partition by blob_name order by batch desc) = 1)")
    if "clusters" in views:
        # A copy is dropped only for the kept copy its group was decided with: a clusters run
        # writes every member of a group at one `computed_at`. A kept copy deleted since
        # (hidden from the clusters view), or overwritten (its row now its new content's, in
        # a group of its own that may even bear the same id), leaves its copies for review
        # until the batch that decided them runs again and keeps one of them.
        kept_gone = ("not exists (select 1 from clusters r where r.blob_name = c.representative "
                     "and r.cluster_id = c.cluster_id and r.is_representative and r.computed_at = c.computed_at)")
        parts.append(
            "select c.blob_name, c.cluster_id, case when c.is_representative then 'keep' "
            f"when {kept_gone} then 'review' else 'drop' end as action, "
            f"case when not c.is_representative and {kept_gone} then 'not decided: the copy kept, ' || "
            "c.representative || ', was deleted or overwritten since; its batch runs again to keep another' "
            "else c.reason end as reason, "
            "c.representative, c.cluster_size::integer as cluster_size, i.etag "
            f"from clusters c join {inventory} i using (blob_name)"
        )
    if "failed_blobs" in views:
        decided = decided_names_sql(views)
        parts.append(
            "select f.blob_name, null::varchar as cluster_id, 'review' as action, "
            "'not decided: ' || string_agg(f.stage || ': ' || f.reason, '; ') as reason, "
            "null::varchar as representative, null::integer as cluster_size, i.etag "
            f"from failed_blobs f join {inventory} i using (blob_name) "
            f"where f.blob_name not in ({decided}) group by f.blob_name, i.etag"
        )
    return " union all ".join(parts) + " order by 1" if parts else _EMPTY_MANIFEST


@dataclass
class ManifestFiles:
    csv: Path
    parquet: Path
    rows: int
    counts: dict[str, int]  # rows per action


def write_manifest(layout: StorageLayout, directory: Path | None = None) -> ManifestFiles:
    """The manifest as Parquet (for programs) and CSV (for people and spreadsheets),
    streamed by DuckDB from the catalog to the files: memory stays flat with the corpus."""
    directory = directory or layout.review_dir
    directory.mkdir(parents=True, exist_ok=True)
    csv_path, parquet_path = directory / "keep_drop_manifest.csv", directory / "keep_drop_manifest.parquet"
    con = connect_views(layout)
    with bounded_memory(con, layout, MANIFEST_MEMORY_LIMIT):
        sql = manifest_sql(_views(con))
        for path, options in ((parquet_path, "format parquet"), (csv_path, "header")):
            source = sql if path == parquet_path else f"select * from read_parquet('{quoted(str(parquet_path))}')"
            with replaced_atomically(path) as tmp:
                con.execute(f"copy ({source}) to '{quoted(str(tmp))}' ({options})")
        counts = dict(con.execute(f"select action, count(*) from read_parquet('{quoted(str(parquet_path))}') "
                                  "group by action").fetchall())
    return ManifestFiles(csv_path, parquet_path, sum(counts.values()), counts)


# The gallery shows duplicate groups only: images and pairs are read for the blobs in
# them, not for the whole corpus (~25 verified pairs per image).
CLUSTERED = "(select blob_name from clusters where cluster_size > 1)"
IMAGE_SQL = f"""
select blob_name, thumbnail, width, height, format, jpeg_quality, sharpness, bytes
from wavelet_hashes where blob_name in {CLUSTERED}
qualify row_number() over (partition by blob_name order by batch desc) = 1
"""
IMAGE_SCHEMA = {"blob_name": pl.String, "thumbnail": pl.String, "width": pl.Int32, "height": pl.Int32,
                "format": pl.String, "jpeg_quality": pl.Int32, "sharpness": pl.Float32, "bytes": pl.Int64}
PAIR_SQL = f"""
select blob_a, blob_b, found_by, hamming, color_distance, cosine, inliers, coverage_a, coverage_b,
       agreement, is_duplicate, decided_by, reason
from verified_pairs where blob_a in {CLUSTERED} and blob_b in {CLUSTERED}
qualify row_number() over (partition by blob_a, blob_b order by batch desc) = 1
"""
PAIR_SCHEMA = {"blob_a": pl.String, "blob_b": pl.String, "found_by": pl.String, "hamming": pl.Int32,
               "color_distance": pl.Float32, "cosine": pl.Float32, "inliers": pl.Int32,
               "coverage_a": pl.Float32, "coverage_b": pl.Float32, "agreement": pl.Float32,
               "is_duplicate": pl.Boolean, "decided_by": pl.String, "reason": pl.String}
CLUSTER_SQL = """
select cluster_id, blob_name, is_representative, quality_score, reason, cluster_size
from clusters where cluster_size > 1
"""
CLUSTER_SCHEMA = {"cluster_id": pl.String, "blob_name": pl.String, "is_representative": pl.Boolean,
                  "quality_score": pl.Float32, "reason": pl.String, "cluster_size": pl.Int32}


@dataclass
class Gallery:
    index: Path
    pages: int
    clusters: int
    images: int
    sizes: list[int]  # copies per cluster, largest first


def _environment() -> Environment:
    return Environment(loader=PackageLoader("dedup_assets", "templates"),
                       autoescape=select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True)


# Each copy's pair with the kept copy says why it goes: all are shown. Pairs between two
# copies only add context, and a family of thousands of copies has hundreds of thousands
# (120 re-encoded copies of one photo: 4,000 pairs, a page of 1.3 MB): a few, and how many more.
OTHER_PAIRS_PER_CLUSTER = 100


def _cluster_records(groups: pl.DataFrame, images: pl.DataFrame, pairs: pl.DataFrame, layout: StorageLayout,
                     out_dir: Path, other_pairs: int = OTHER_PAIRS_PER_CLUSTER) -> dict[str, dict]:
    """The template's view of every cluster: members (kept copy first) and the pairs
    between them (those with the kept copy first, then up to `other_pairs` others), in
    one pass over each table."""
    members = groups.join(images, on="blob_name", how="left").sort(
        ["cluster_id", "is_representative", "quality_score"], descending=[False, True, True])
    cluster_of = groups.select("blob_name", "cluster_id")
    inside = (pairs.join(cluster_of.rename({"blob_name": "blob_a"}), on="blob_a")
              .join(cluster_of.rename({"blob_name": "blob_b", "cluster_id": "cluster_b"}), on="blob_b")
              .filter(pl.col("cluster_id") == pl.col("cluster_b")))
    # Thumbnails on disk are linked where they are; from Azure they are copied beside the
    # pages (only those shown), so the folder still opens with no server.
    data_from_pages = Path(os.path.relpath(layout.data_root, out_dir)) if layout.is_local else Path(".")
    records: dict[str, dict] = {}
    for row in members.iter_rows(named=True):
        record = records.setdefault(row["cluster_id"], {"id": row["cluster_id"], "members": [], "pairs": [],
                                                        "other_pairs": [], "more_pairs": 0})
        row["src"] = (data_from_pages / row["thumbnail"]).as_posix() if row["thumbnail"] else None
        record["members"].append(row)
        record["size"] = len(record["members"])
    for pair in inside.sort("blob_a", "blob_b").iter_rows(named=True):
        record = records[pair["cluster_id"]]
        if record["members"][0]["blob_name"] in (pair["blob_a"], pair["blob_b"]):
            record["pairs"].append(pair)
        elif len(record["other_pairs"]) < other_pairs:
            record["other_pairs"].append(pair)
        else:
            record["more_pairs"] += 1
    for record in records.values():
        record["pairs"] += record.pop("other_pairs")
    return records


def _copy_thumbnails(layout: StorageLayout, relative_paths: list[str], out_dir: Path) -> None:
    missing = [p for p in relative_paths if not (out_dir / p).exists()]  # keyed by content
    for start in range(0, len(missing), 1000):
        for relative, data in layout.read_thumbnails(missing[start:start + 1000]).items():
            write_bytes_atomic(data, out_dir / relative)


def write_gallery(layout: StorageLayout, out_dir: Path, clusters_per_page: int = 50,
                  other_pairs_per_cluster: int = OTHER_PAIRS_PER_CLUSTER) -> Gallery:
    """index.html plus one page per `clusters_per_page` clusters, largest first; the
    thumbnails are linked relative to the pages, so the folder opens with no server."""
    out_dir.mkdir(parents=True, exist_ok=True)
    environment = _environment()
    con = connect_views(layout)
    try:
        views = _views(con)
        clustered = "clusters" in views
        groups = _frame(con, CLUSTER_SQL, CLUSTER_SCHEMA) if clustered else pl.DataFrame(schema=CLUSTER_SCHEMA)
        images = (_frame(con, IMAGE_SQL, IMAGE_SCHEMA) if clustered and "wavelet_hashes" in views
                  else pl.DataFrame(schema=IMAGE_SCHEMA))
        pairs = (_frame(con, PAIR_SQL, PAIR_SCHEMA) if clustered and "verified_pairs" in views
                 else pl.DataFrame(schema=PAIR_SCHEMA))
    finally:
        con.close()
    order = (groups.group_by("cluster_id").agg(pl.len().alias("n"))
             .sort(["n", "cluster_id"], descending=[True, False])["cluster_id"].to_list())
    page_count = max(1, math.ceil(len(order) / clusters_per_page))
    page_name = "page-{:05d}.html".format
    records = _cluster_records(groups, images, pairs, layout, out_dir, other_pairs_per_cluster)
    if not layout.is_local:
        shown = {m["thumbnail"] for record in records.values() for m in record["members"] if m["thumbnail"]}
        _copy_thumbnails(layout, sorted(shown), out_dir)
    pages = []
    for page in range(page_count):
        ids = order[page * clusters_per_page:(page + 1) * clusters_per_page]
        html = environment.get_template("gallery_page.html.j2").render(
            clusters=[records[i] for i in ids], page=page + 1, pages=page_count, page_name=page_name,
            first=page * clusters_per_page + 1,
        )
        write_bytes_atomic(html.encode(), out_dir / page_name(page + 1))
        pages.append({"file": page_name(page + 1), "first": page * clusters_per_page + 1,
                      "last": page * clusters_per_page + len(ids),
                      "largest": records[ids[0]]["size"] if ids else 0})
    drop = int((~groups["is_representative"]).sum()) if groups.height else 0
    html = environment.get_template("gallery_index.html.j2").render(
        pages=pages, clusters=len(order), images=groups.height, drop=drop, home=str(layout.home),
    )
    index = out_dir / "index.html"
    write_bytes_atomic(html.encode(), index)
    for stale in out_dir.glob("page-*.html"):  # pages of an earlier, longer gallery
        if stale.name not in {p["file"] for p in pages}:
            stale.unlink()
    return Gallery(index=index, pages=page_count, clusters=len(order), images=groups.height,
                   sizes=[records[i]["size"] for i in order])
