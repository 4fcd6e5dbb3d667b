import time

import dagster as dg
import numpy as np
from pydantic import Field

from dedup_assets.assets.keep_drop_manifest import keep_drop_manifest
from dedup_assets.assets.verified_pairs import verified_pairs
from dedup_assets.plots import cluster_size_histogram, markdown_image
from dedup_assets.resources import DedupStorageResource
from dedup_assets.review import write_gallery


class GalleryConfig(dg.Config):
    clusters_per_page: int = Field(50, ge=1)


@dg.asset(
    deps=[keep_drop_manifest, verified_pairs],
    group_name="review",
    kinds={"html"},
)
def duplicate_gallery(context: dg.AssetExecutionContext, config: GalleryConfig,
                      storage: DedupStorageResource) -> dg.MaterializeResult:
    """A static HTML gallery of every duplicate cluster: thumbnails, the copy kept and
    why (quality scores), the scores of each pair and the stage that decided it. Paged,
    largest clusters first; open `$DEDUP_HOME/review/index.html` in a browser, no server."""
    started = time.perf_counter()
    gallery = write_gallery(storage.layout, storage.layout.review_dir, config.clusters_per_page)
    context.log.info(f"gallery: {gallery.clusters} clusters on {gallery.pages} page(s) -> {gallery.index}")
    sizes = np.array(gallery.sizes, dtype=np.int64)
    return dg.MaterializeResult(metadata={
        "index": dg.MetadataValue.url(gallery.index.as_uri()),
        "path": dg.MetadataValue.path(str(gallery.index)),
        "clusters": gallery.clusters,
        "images": gallery.images,
        "pages": gallery.pages,
        "ms_per_image": round(1000 * (time.perf_counter() - started) / max(gallery.images, 1), 3),
        "cluster_sizes": dg.MetadataValue.md(markdown_image(cluster_size_histogram(sizes), "cluster sizes")),
    })
