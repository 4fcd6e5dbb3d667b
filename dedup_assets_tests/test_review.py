"""The keep/drop manifest and the HTML gallery, from a real run over two duplicate groups."""

import csv
import html.parser
import re

import dagster as dg
import numpy as np
import polars as pl
import pytest
from PIL import Image

from dedup_assets.catalog import query
from dedup_assets.review import write_gallery, write_manifest
from dedup_assets.storage import StorageLayout


class GalleryParser(html.parser.HTMLParser):
    """Clusters, their members (kept or dropped) and image sources of a gallery page."""

    def __init__(self):
        super().__init__()
        self.clusters: dict[str, list[tuple[str, str]]] = {}
        self.images: list[str] = []
        self.links: list[str] = []
        self._cluster = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "data-cluster" in attrs:
            self._cluster = attrs["data-cluster"]
            self.clusters[self._cluster] = []
        if "data-blob" in attrs:
            state = "kept" if "kept" in attrs["class"].split() else "dropped"
            self.clusters[self._cluster].append((attrs["data-blob"], state))
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "a":
            self.links.append(attrs["href"])


def parse(path) -> GalleryParser:
    parser = GalleryParser()
    parser.feed(path.read_text())
    return parser


def test_the_manifest_lists_every_blob_once_with_an_action_and_a_reason(
    run_everything, resources, image_folder, layout
):
    (image_folder / "zero_bytes.jpg").write_bytes(b"")
    (image_folder / "notes.jpg").write_bytes(b"not an image\n" * 20)
    run_everything(resources)

    with open(layout.review_dir / "keep_drop_manifest.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == len(list(image_folder.iterdir()))
    manifest = pl.read_csv(layout.review_dir / "keep_drop_manifest.csv")
    assert manifest.columns[:4] == ["blob_name", "cluster_id", "action", "reason"]
    assert sorted(manifest["blob_name"]) == sorted(p.name for p in image_folder.iterdir())
    assert manifest.filter(pl.col("reason").is_null()).height == 0
    stored = pl.read_parquet(layout.review_dir / "keep_drop_manifest.parquet")
    assert stored.equals(manifest.cast(stored.schema))

    clusters = dict(query(layout, "select blob_name, is_representative from clusters"))
    for row in manifest.iter_rows(named=True):
        if row["blob_name"] in clusters:
            assert row["action"] == ("keep" if clusters[row["blob_name"]] else "drop")
        else:  # a file that could not be decoded is left for a person, with the cause
            assert row["action"] == "review"
            assert "wavelet_hashes" in row["reason"]
    assert manifest.filter(pl.col("action") == "review").height == 2
    # Each drop names a kept copy of the same cluster.
    kept = manifest.filter(pl.col("action") == "keep").select("blob_name", "cluster_id")
    drops = manifest.filter(pl.col("action") == "drop")
    assert drops.height >= 10
    assert drops.join(kept, left_on=["representative", "cluster_id"], right_on=["blob_name", "cluster_id"]).height == drops.height
    assert query(layout, "select count(*) from keep_drop_manifest")[0][0] == manifest.height


def test_a_manifest_of_nothing_yet_has_its_columns_and_no_rows(tmp_path):
    manifest = write_manifest(StorageLayout(tmp_path / "empty_home"))
    assert manifest.rows == 0 and manifest.counts == {}
    assert manifest.csv.read_text().strip() == "blob_name,cluster_id,action,reason,representative,cluster_size,etag"
    assert pl.read_parquet(manifest.parquet).schema == pl.Schema({
        "blob_name": pl.String, "cluster_id": pl.String, "action": pl.String, "reason": pl.String,
        "representative": pl.String, "cluster_size": pl.Int32, "etag": pl.String})


def test_the_gallery_shows_each_cluster_with_its_kept_copy_and_pair_scores(
    run_everything, resources, layout
):
    run_everything(resources)
    index = layout.review_dir / "index.html"
    assert index.exists()
    page = layout.review_dir / "page-00001.html"
    parsed = parse(page)
    truth = dict(query(layout, "select cluster_id, list(blob_name order by blob_name) from clusters where cluster_size > 1 group by 1"))
    representatives = dict(query(layout, "select cluster_id, representative from clusters where cluster_size > 1"))
    assert set(parsed.clusters) == set(truth) and len(truth) == 2
    for cluster, members in parsed.clusters.items():
        assert sorted(name for name, _ in members) == truth[cluster]
        assert [name for name, state in members if state == "kept"] == [representatives[cluster]]
        assert members[0][1] == "kept"  # the kept copy comes first
    # Thumbnails are relative links that resolve from the page's folder: no server.
    assert parsed.images and all(not src.startswith(("/", "http")) for src in parsed.images)
    assert all((page.parent / src).resolve().is_file() for src in parsed.images)
    text = page.read_text()
    assert "decided by" in text and ("verify" in text or "hash" in text)


def test_a_large_group_shows_every_pair_with_its_kept_copy_and_a_few_others(run_everything, resources, layout):
    run_everything(resources)
    write_gallery(layout, layout.review_dir / "few", other_pairs_per_cluster=3)
    text = (layout.review_dir / "few" / "page-00001.html").read_text()
    shown = re.findall(r'<td class="name">(.*?) ↔ (.*?)</td>', text)
    kept = {name for (name,) in query(layout, "select representative from clusters where cluster_size > 1")}
    pairs = query(layout, "select p.blob_a, p.blob_b, c.representative from verified_pairs p join clusters a "
                          "on a.blob_name = p.blob_a join clusters b on b.blob_name = p.blob_b join clusters c "
                          "on c.blob_name = c.representative and c.cluster_id = a.cluster_id "
                          "where a.cluster_id = b.cluster_id and a.cluster_size > 1")
    with_kept = {(a, b) for a, b, representative in pairs if representative in (a, b)}
    others = [(a, b) for a, b, representative in pairs if representative not in (a, b)]
    assert with_kept and with_kept <= set(shown)  # why each copy goes: all shown
    assert len([pair for pair in shown if not kept & set(pair)]) == 3 * len(kept)
    more = sum(int(n) for n in re.findall(r"and (\d+) more pairs between copies", text))
    assert more == len(others) - 3 * len(kept) > 0


def test_the_gallery_pages_large_results_and_links_them(run_everything, resources, layout):
    run_everything(resources)
    gallery = write_gallery(layout, layout.review_dir / "paged", clusters_per_page=1)
    assert gallery.pages == 2 and gallery.clusters == 2
    index = parse(gallery.index)
    assert index.links[-2:] == ["page-00001.html", "page-00002.html"]
    first, second = parse(gallery.index.parent / "page-00001.html"), parse(gallery.index.parent / "page-00002.html")
    assert "page-00002.html" in first.links and "page-00001.html" in second.links
    assert len(first.clusters) == len(second.clusters) == 1
    assert len(next(iter(first.clusters.values()))) >= len(next(iter(second.clusters.values())))  # largest first

    # Rewritten with fewer pages, the gallery drops the pages it no longer links.
    write_gallery(layout, layout.review_dir / "paged", clusters_per_page=50)
    assert sorted(p.name for p in (layout.review_dir / "paged").glob("page-*.html")) == ["page-00001.html"]


def test_names_are_escaped_in_the_gallery(resources, run_everything, image_folder, layout):
    original = sorted(image_folder.iterdir())[0]
    original.rename(image_folder / ("<img src=x onerror=alert(1)>" + original.suffix))
    run_everything(resources)
    pages = "".join(p.read_text() for p in layout.review_dir.glob("page-*.html"))
    assert "<img src=x onerror" not in pages
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages



@pytest.mark.parametrize("change", ["deleted", "overwritten"])
def test_no_copy_is_dropped_for_a_kept_copy_changed_since_its_batch_ran(run_everything, resources, image_folder,
                                                                        layout, instance, change):
    from dedup_assets.assets import pipeline_assets
    from dedup_assets.ledger import BatchLedger

    run_everything(resources)
    before = pl.read_parquet(layout.review_dir / "keep_drop_manifest.parquet")
    victim = before.filter((pl.col("action") == "keep") & (pl.col("cluster_size") > 1))["blob_name"][0]
    copies = before.filter((pl.col("action") == "drop") & (pl.col("representative") == victim))["blob_name"]
    if change == "deleted":
        (image_folder / victim).unlink()
    else:  # another picture under its name, like no other in the folder
        noise = np.random.default_rng(7).integers(0, 256, (480, 640, 3), dtype=np.uint8)
        Image.fromarray(noise).save(image_folder / victim, "JPEG", quality=90)
    # The next listing records the change; the batch that decided the group has not run
    # again yet (no sensor, or its run still queued) when someone rebuilds the manifest.
    ledger = BatchLedger(layout)
    new = ledger.register(resources["image_source"].open().iter_blobs(), 100)
    assert ledger.tombstones()["blob_name"].to_list() == [victim]
    if change == "overwritten":  # its new content is batched and decided first
        instance.add_dynamic_partitions("batches", new)
        assert dg.materialize(pipeline_assets, partition_key=new[0], instance=instance, resources=resources).success
    write_manifest(layout)
    after = pl.read_parquet(layout.review_dir / "keep_drop_manifest.parquet")
    for row in after.filter(pl.col("blob_name").is_in(copies.to_list())).iter_rows(named=True):
        assert row["action"] == "review"
        assert row["reason"] == (f"not decided: the copy kept, {victim}, was deleted or overwritten since; "
                                 "its batch runs again to keep another")
    assert (victim in after["blob_name"].to_list()) == (change == "overwritten")
    # Every other decision stands.
    untouched = before.filter(~pl.col("blob_name").is_in([victim, *copies.to_list()]))
    assert untouched.join(after, on=list(untouched.columns), how="anti").height == 0


def test_the_review_is_written_while_a_person_holds_the_catalog_open(run_everything, resources, layout):
    import subprocess
    import sys

    run_everything(resources)
    # `duckdb data/dedup.duckdb` opens the file read-write and locks out every other process.
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); "
                               "print('holding', flush=True); time.sleep(120)", str(layout.catalog_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        manifest = write_manifest(layout)
        assert manifest.rows == len(list(resources["image_source"].open().iter_blobs()))
        assert write_gallery(layout, layout.review_dir / "held").clusters >= 2
        assert query(layout, "select count(*) from clusters")[0][0] == manifest.rows
    finally:
        holder.kill()
        holder.wait()
