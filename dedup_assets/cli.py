"""`dedup`: run the pipeline from a terminal, without the UI.

    dedup demo-data            build the labelled demo set under $DEDUP_HOME/demo
    dedup run                  batch everything new in $DEDUP_SOURCE and materialize it
    dedup catalog              rebuild the DuckDB views over the Parquet files
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _configure(args: argparse.Namespace) -> None:
    if getattr(args, "home", None):
        os.environ["DEDUP_HOME"] = str(Path(args.home).resolve())
    if getattr(args, "source", None):
        os.environ["DEDUP_SOURCE"] = args.source
    if getattr(args, "batch_size", None):
        os.environ["DEDUP_BATCH_SIZE"] = str(args.batch_size)
    from dedup_assets.settings import apply_defaults

    apply_defaults()


def cmd_demo_data(args: argparse.Namespace) -> int:
    _configure(args)
    from dedup_assets.demo_data import build_demo_set

    out = Path(args.out or Path(os.environ["DEDUP_HOME"]) / "demo")
    if (out / "truth.csv").exists() and not args.force:
        print(f"demo set already at {out / 'images'} (use --force to rebuild)")
        return 0
    images = build_demo_set(out)
    print(f"demo set: {len(list(images.iterdir()))} images in {images}, truth in {out / 'truth.csv'}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    _configure(args)
    import dagster as dg
    from tqdm import tqdm

    from dedup_assets.assets import pipeline_assets
    from dedup_assets.catalog import register_views
    from dedup_assets.definitions import defs
    from dedup_assets.ledger import BatchLedger
    from dedup_assets.partitions import batch_partitions
    from dedup_assets.sources.local import open_source
    from dedup_assets.storage import StorageLayout
    from dedup_assets.work_planning import partitions_needing_work

    layout = StorageLayout(os.environ["DEDUP_HOME"])
    source = open_source(os.environ["DEDUP_SOURCE"])
    ledger = BatchLedger(layout)
    print(f"source: {source.describe()}")
    created = ledger.register(source.iter_blobs(), max_batch_size=int(os.environ["DEDUP_BATCH_SIZE"]))
    instance = dg.DagsterInstance.get()
    known = set(instance.get_dynamic_partitions(batch_partitions.name))
    missing = [key for key in ledger.batch_keys() if key not in known]
    if missing:
        instance.add_dynamic_partitions(batch_partitions.name, missing)
    todo = partitions_needing_work(instance, [asset.key for asset in pipeline_assets], ledger.batch_keys())
    print(f"{len(created)} new batch(es); {len(todo)} batch(es) to materialize")

    job = defs.resolve_job_def("dedup_job")
    sizes = {key: ledger.read_manifest(key).height for key in todo}
    failed_runs = []
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    with tqdm(total=sum(sizes.values()), unit="img", desc="dedup", disable=args.no_progress) as bar:
        for key in todo:
            bar.set_postfix_str(key)
            result = job.execute_in_process(
                partition_key=key, instance=instance, raise_on_error=False, run_config=quiet
            )
            if not result.success:
                failed_runs.append((key, result.run_id))
            bar.update(sizes[key])
    register_views(layout)
    _print_summary(layout)
    for key, run_id in failed_runs:
        print(f"FAILED: batch {key} (run {run_id}); see `dg dev` or the run's logs", file=sys.stderr)
    return 1 if failed_runs else 0


def _print_summary(layout) -> None:
    from dedup_assets.catalog import query

    print(f"\nresults in {layout.home}")
    print(f"  Parquet:  {layout.parquet_root}/<asset>/<batch>.parquet")
    print(f"  DuckDB:   {layout.catalog_path}")
    if not layout.catalog_path.exists():
        return
    views = [row[0] for row in query(layout, "select view_name from duckdb_views() where not internal order by 1")]
    for view in views:
        count = query(layout, f'select count(*) from "{view}"')[0][0]
        print(f"    {view:<20} {count:>8} rows")
    print(f'  try:      duckdb {layout.catalog_path} "select * from failed_blobs"')


def cmd_catalog(args: argparse.Namespace) -> int:
    _configure(args)
    from dedup_assets.catalog import register_views
    from dedup_assets.storage import StorageLayout

    layout = StorageLayout(os.environ["DEDUP_HOME"])
    views = register_views(layout)
    print(f"{layout.catalog_path}: views {', '.join(views) or '(none yet)'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dedup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub):
        sub.add_argument("--home", help="output folder (default: $DEDUP_HOME or ./data)")
        return sub

    demo = common(commands.add_parser("demo-data", help="build the labelled demo image set"))
    demo.add_argument("--out", help="folder for images/ and truth.csv (default: $DEDUP_HOME/demo)")
    demo.add_argument("--force", action="store_true", help="rebuild even if present")
    demo.set_defaults(func=cmd_demo_data)

    run = common(commands.add_parser("run", help="batch new blobs and materialize the graph"))
    run.add_argument("--source", help="image folder (default: $DEDUP_SOURCE)")
    run.add_argument("--batch-size", type=int, help="max blobs per batch (default: $DEDUP_BATCH_SIZE or 1000)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)

    catalog = common(commands.add_parser("catalog", help="rebuild the DuckDB views"))
    catalog.set_defaults(func=cmd_catalog)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
