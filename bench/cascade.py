"""The whole cascade on CPU, images/s and time per stage, beside imagededup PHash
(encode + find duplicates) on the same folder in the same run.

    .venv/bin/python bench/cascade.py [--count 1000] [--config run.yaml]

~1,000 JPEGs of about 1200 px, 40 % of them edited copies (generated once under
$DEDUP_HOME/bench/cascade_<count>). The graph runs in-process on an ephemeral Dagster
instance into a scratch DEDUP_HOME, one batch, exactly as `dedup run` would; model
loading happens before the clock starts (a long-lived run process loads it once).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from dedup_assets.settings import apply_defaults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--config", help="YAML run config for the cascade, as for `dedup run --config`")
    args = parser.parse_args()
    apply_defaults()
    # Imported here, not at the top: the hash stage's worker processes import this script
    # again (multiprocessing's forkserver), as under `dedup run` they import its light CLI
    # module; Dagster at the top cost each of them 0.4 s, `dedup run` does not.
    import dagster as dg

    from dedup_assets.demo_data import build_cascade_bench_set

    folder = Path(os.environ["DEDUP_HOME"]) / "bench" / f"cascade_{args.count}"
    if len(list(folder.iterdir()) if folder.exists() else []) != args.count:
        print(f"generating {args.count} images in {folder} ...")
        build_cascade_bench_set(folder, count=args.count)
    files = sorted(folder.iterdir())
    for path in files:
        path.read_bytes()  # page cache: both contenders read from memory

    from dedup_assets.assets import pipeline_assets
    from dedup_assets.cli import _run_config
    from dedup_assets.embedding_stage import cached_embedder
    from dedup_assets.io_manager import storage_resources
    from dedup_assets.ledger import BatchLedger
    from dedup_assets.resources import DedupStorageResource, ImageSourceResource
    from dedup_assets.storage import StorageLayout

    run_config = _run_config(args.config)
    embedding_config = run_config.get("ops", {}).get("embeddings", {}).get("config", {})
    embedder = cached_embedder(embedding_config.get("model", "efficientnet_lite0"), None, "auto",
                               embedding_config.get("runtime", "auto"), embedding_config.get("input_size"))
    print(f"{len(files)} images, {sum(f.stat().st_size for f in files) / 1e6:.0f} MB, {os.cpu_count()} cores, "
          f"embedder {embedder.name}\n")

    with tempfile.TemporaryDirectory() as home, dg.DagsterInstance.ephemeral() as instance:
        layout = StorageLayout(home)
        resources = {"image_source": ImageSourceResource(uri=str(folder)),
                     **storage_resources(DedupStorageResource(home=home))}
        keys = BatchLedger(layout).register(resources["image_source"].open().iter_blobs(), args.count)
        instance.add_dynamic_partitions("batches", keys)
        started = time.perf_counter()
        result = dg.materialize(pipeline_assets, partition_key=keys[0], instance=instance, resources=resources,
                                run_config=run_config)
        ours = time.perf_counter() - started
        assert result.success
        print(f"{'stage':<18}{'seconds':>9}{'ms/image':>10}  notes")
        for event in result.get_asset_materialization_events():
            name = event.asset_key.path[-1]
            meta = {k: v.value for k, v in event.materialization.metadata.items()}
            notes = {k: meta[k] for k in ("dagster/row_count", "geometrically_verified", "pairs_per_second",
                                          "duplicate_groups") if k in meta}
            print(f"{name:<18}{meta.get('seconds', 0):9.2f}{meta.get('ms_per_image', 0):10.2f}  {notes}")
    print(f"{'whole cascade':<18}{ours:9.2f}{1000 * ours / len(files):10.2f}  (incl. Dagster step overhead)")

    from imagededup.methods import PHash

    started = time.perf_counter()
    PHash(verbose=False).find_duplicates(image_dir=str(folder), max_distance_threshold=10)
    theirs = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\ndedup_assets whole cascade     {len(files) / ours:7.1f} images/s")
    print(f"imagededup PHash (hashes only) {len(files) / theirs:7.1f} images/s   (same files, same run)")
    print(f"the seed (reported)               5.7 images/s   -> {len(files) / ours / 5.7:.1f}x")
    print(f"peak RSS of this process: {peak:.0f} MB")


if __name__ == "__main__":
    main()
