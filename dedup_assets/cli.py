"""`dedup`: run the pipeline from a terminal, without the UI.

    dedup demo-data [--hard]   build a labelled set under $DEDUP_HOME/demo (or /hard, /products, /edits, /phone)
    dedup run                  batch everything new in $DEDUP_SOURCE and materialize it
    dedup evaluate --images DIR --truth CSV
                               precision/recall on a labelled folder, beside imagededup PHash
    dedup ui                   the Dagster UI on the same instance and data
    dedup catalog              rebuild the DuckDB views over the Parquet files
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
from pathlib import Path

from dedup_assets.settings import SetupError, whole_number


def _configure(args: argparse.Namespace) -> None:
    if getattr(args, "home", None):
        os.environ["DEDUP_HOME"] = str(Path(args.home).resolve())
    if getattr(args, "source", None):
        os.environ["DEDUP_SOURCE"] = args.source
    if getattr(args, "batch_size", None) is not None:
        os.environ["DEDUP_BATCH_SIZE"] = str(args.batch_size)
    from dedup_assets.settings import apply_defaults

    apply_defaults()


def cmd_demo_data(args: argparse.Namespace) -> int:
    _configure(args)
    from dedup_assets.demo_data import (build_demo_set, build_edits_set, build_hard_set, build_phone_set,
                                        build_product_set)

    kind = next((kind for kind in ("hard", "products", "edits", "phone") if getattr(args, kind)), "demo")
    out = Path(args.out or Path(os.environ["DEDUP_HOME"]) / kind)
    if (out / "truth.csv").exists() and not args.force:
        print(f"labelled set already at {out / 'images'} (use --force to rebuild)")
        return 0
    builders = {"hard": build_hard_set, "products": build_product_set, "edits": build_edits_set,
                "phone": build_phone_set, "demo": build_demo_set}
    images = builders[kind](out)
    print(f"demo set: {len(list(images.iterdir()))} images in {images}, truth in {out / 'truth.csv'}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    _configure(args)
    import dagster as dg

    return _materialize_all(dg.DagsterInstance.get(), progress=not args.no_progress,
                            run_config=_run_config(args.config))


def _run_config(path: str | None) -> dict:
    """A YAML run config (`ops: {embeddings: {config: {...}}}`), as in the UI's launchpad,
    checked whole before anything is listed or run (a SetupError says what to change)."""
    if not path:
        return {}
    import dagster as dg
    import yaml
    from pydantic import ValidationError

    from dedup_assets.assets import run_settings
    from dedup_assets.definitions import defs

    try:
        with open(path) as handle:
            config = yaml.safe_load(handle) or {}
    except OSError as error:
        raise SetupError(f"run config {path}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise SetupError(f"run config {path} is not valid YAML: {error}") from None
    if not isinstance(config, dict):
        raise SetupError(f"run config {path}: expected a mapping such as ops: {{embeddings: {{config: ...}}}}")
    for job_name, job_config in zip(("dedup_job", "review_job"), _job_configs(config)):
        try:
            # Names and types; the answer has every op's settings, defaults and env values filled in.
            resolved = dg.validate_run_config(defs.resolve_job_def(job_name), job_config)
        except dg.DagsterInvalidConfigError as error:
            # Dagster's messages end with the whole schema; the README's settings table is shorter.
            problems = "; ".join(e.message.split(" Expected: ")[0] for e in error.errors)
            raise SetupError(f"run config {path}: {problems} (settings: README, Policies and settings)") from None
        for op, values in resolved["ops"].items():
            try:
                if op in run_settings:
                    run_settings[op](**values["config"])
            except ValidationError as error:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
                raise SetupError(f"run config {path}: ops.{op}.config: {problems}") from None
    return config


def _job_configs(run_config: dict) -> tuple[dict, dict]:
    """One config file for both jobs: the batch job's ops and the review job's."""
    from dedup_assets.assets import pipeline_assets

    batch_ops = {asset.key.path[-1] for asset in pipeline_assets}
    ops = run_config.get("ops") or {}
    return ({**run_config, "ops": {k: v for k, v in ops.items() if k in batch_ops}},
            {**run_config, "ops": {k: v for k, v in ops.items() if k not in batch_ops}})


def _materialize_all(instance, progress: bool = True, summary: bool = True, run_config: dict | None = None) -> int:
    """Batch what is new in DEDUP_SOURCE, then materialize every batch needing work."""
    from dedup_assets.storage import layout_from_environment

    layout = layout_from_environment()
    with _only_run(layout.home):
        return _materialize_batches(instance, layout, progress, summary, run_config)


@contextlib.contextmanager
def _only_run(home: Path):
    """One `dedup run` per home at a time: two would compute the same batches at once, and
    each one's writes clear the other's temporary files (measured: one batch failed)."""
    from dedup_assets.local_files import exclusive_lock

    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(exclusive_lock(home / ".dedup-run.lock", wait=False))
        except BlockingIOError:
            raise SetupError(f"another `dedup run` is working on {home}: run this one once it is done") from None
        yield


def _materialize_batches(instance, layout, progress: bool, summary: bool, run_config: dict | None) -> int:
    import duckdb
    from tqdm import tqdm

    from dedup_assets.assets import pipeline_assets
    from dedup_assets.catalog import register_views
    from dedup_assets.definitions import defs
    from dedup_assets.ledger import BatchLedger, batch_sequence
    from dedup_assets.partitions import batch_partitions
    from dedup_assets.sources.factory import check_results_outside, source_from_environment
    from dedup_assets.work_planning import (batches_readable_again, batches_with_deletions_not_applied,
                                            partitions_needing_work)

    source = source_from_environment()
    ledger = BatchLedger(layout)
    print(f"source: {source.describe()}")
    check_results_outside(source, layout)
    ledger.claim_source(source.identity)
    created = ledger.register(source.iter_blobs(), max_batch_size=whole_number("DEDUP_BATCH_SIZE"))
    if note := source.not_listed_note():
        print(f"dedup: {note}", file=sys.stderr)
    known = set(instance.get_dynamic_partitions(batch_partitions.name))
    missing = [key for key in ledger.batch_keys() if key not in known]
    if missing:
        instance.add_dynamic_partitions(batch_partitions.name, missing)
    todo = partitions_needing_work(instance, [asset.key for asset in pipeline_assets], ledger.batch_keys())
    readable = [key for key in batches_readable_again(ledger) if key not in todo]
    deleted = [key for key in batches_with_deletions_not_applied(instance, ledger) if key not in todo + readable]
    todo = sorted(todo + readable + deleted, key=batch_sequence)
    reasons = [f"{len(readable)} for blobs restored from an archive tier"] if readable else []
    reasons += [f"{len(deleted)} for blobs deleted or overwritten in the source"] if deleted else []
    print(f"{len(created)} new batch(es); {len(todo)} batch(es) to materialize"
          + (f" ({'; '.join(reasons)})" if reasons else ""))

    job = defs.resolve_job_def("dedup_job")
    sizes = {key: ledger.read_manifest(key).height for key in todo}
    failed_runs = []
    quiet = {**(run_config or {}), "loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    batch_config, review_config = _job_configs(quiet)
    with tqdm(total=sum(sizes.values()), unit="img", desc="dedup", disable=not progress) as bar:
        for done, key in enumerate(todo):
            bar.set_postfix_str(key)
            result = job.execute_in_process(
                partition_key=key, instance=instance, raise_on_error=False, run_config=batch_config
            )
            if _interrupted(result):
                # Dagster turns Ctrl-C into a failed step; the batches left wait for the next run.
                bar.close()
                print(f"dedup: interrupted in {key} ({done} of {len(todo)} batch(es) done); "
                      "`dedup run` again goes on from there", file=sys.stderr)
                return 130
            if not result.success:
                failed_runs.append((key, result.run_id, _step_errors(result)))
            bar.update(sizes[key])
    review = defs.resolve_job_def("review_job").execute_in_process(
        instance=instance, raise_on_error=False, run_config=review_config)
    if not review.success:
        failed_runs.append(("review", review.run_id, _step_errors(review)))
    try:
        register_views(layout)
    except duckdb.IOException:  # the results are in Parquet either way; the views catch up next time
        print(f"dedup: {layout.catalog_path} is held open by another process (a duckdb shell?): its views "
              "were not refreshed; `dedup catalog` does it once it is closed", file=sys.stderr)
    if summary:
        _print_summary(layout)
    for key, run_id, errors in failed_runs:
        print(f"FAILED: {key} (run {run_id}); details in the Dagster UI", file=sys.stderr)
        for step, message in errors:
            print(f"  {step}: {message}", file=sys.stderr)
    return 1 if failed_runs else 0


def _interrupted(result) -> bool:
    """Whether the run stopped for a Ctrl-C (SIGINT) or SIGTERM rather than failed."""
    for event in result.all_events:
        data = event.step_failure_data if event.is_step_failure else None
        if data and data.error and data.error.cls_name == "DagsterExecutionInterruptedError":
            return True
    return False


def _step_errors(result) -> list[tuple[str, str]]:
    errors = []
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            errors.append((event.step_key, (error.cause or error).message.strip() if error else "unknown error"))
    return errors


SUMMARY_NAMES = 5


def _listed(names: list[str], shown: int = SUMMARY_NAMES) -> str:
    """A few names, and how many more (a picture stored 400 times is one line, not 400 names)."""
    more = f" and {len(names) - shown} more" if len(names) > shown + 1 else ""
    return ", ".join(names[:shown] if more else names) + more


def _print_summary(layout) -> None:
    from dedup_assets.catalog import connect_views

    con = connect_views(layout)  # one set of views for every count below

    def query(sql: str) -> list[tuple]:
        return con.execute(sql).fetchall()

    print(f"\nresults in {layout.home}")
    print(f"  Parquet:  {layout.uri(layout.parquet_root)}/<asset>/<batch>.parquet")
    print(f"  DuckDB:   {layout.catalog_path}")
    if not layout.catalog_path.exists():
        return
    views = [row[0] for row in query("select view_name from duckdb_views() where not internal order by 1")]
    for view in views:
        count = query(f'select count(*) from "{view}"')[0][0]
        print(f"    {view:<20} {count:>8} rows")
    if "failed_blobs" in views:
        from dedup_assets.review import decided_names_sql

        _print_not_used(query, decided_names_sql(set(views)))
    if "clusters" in views:
        (groups, drop) = query("select count(distinct cluster_id) filter (where cluster_size > 1), "
                                       "count(*) filter (where not is_representative) from clusters")[0]
        print(f"\n{groups} duplicate group(s); {drop} copies can go. Largest groups (kept copy first):")
        largest = query("select cluster_id, list(blob_name order by is_representative desc, blob_name) "
                                "from clusters where cluster_size > 1 group by cluster_id "
                                "order by count(*) desc, cluster_id limit 5")
        for cluster_id, members in largest:
            print(f"  {cluster_id}: keep {members[0]}; drop {_listed(members[1:])}")
    print(f"\n  gallery:  {(layout.review_dir / 'index.html').as_uri()}")
    print(f"  manifest: {layout.review_dir / 'keep_drop_manifest.csv'} (and .parquet)")
    # A command to copy: the path quoted for the shell (a home may hold spaces or quotes).
    print(f'  try:      duckdb {shlex.quote(str(layout.catalog_path))} '
          '"select * from keep_drop_manifest where action = \'drop\'"')


def _print_not_used(query, decided: str) -> None:
    """How many blobs no result holds, by kind of reason: a folder of exports holds
    sidecars (a Takeout's .json, Lightroom's .xmp) beside its photos."""
    undecided = f"from failed_blobs where blob_name not in ({decided})"
    # A reason's kind: its text before any detail after a colon.
    kinds = query(f"select split_part(reason, ': ', 1) as kind, count(distinct blob_name) {undecided} "
                  "group by kind order by 2 desc, 1")
    if not kinds:
        return
    total = query(f"select count(distinct blob_name) {undecided}")[0][0]
    print(f"\n{total} blob(s) not used (failed_blobs; 'review' in the manifest):")
    for kind, count in kinds[:SUMMARY_NAMES]:
        print(f"  {count:>8}  {kind}")
    if len(kinds) > SUMMARY_NAMES:
        print(f"  {sum(count for _, count in kinds[SUMMARY_NAMES:]):>8}  for {len(kinds) - SUMMARY_NAMES} other reasons")


def cmd_evaluate(args: argparse.Namespace) -> int:
    import tempfile

    images = Path(args.images).resolve()
    from dedup_assets.evaluation import (format_report, imagededup_phash_pairs, pairs_from_clusters,
                                         read_truth, score)

    truth = read_truth(args.truth, images)
    with tempfile.TemporaryDirectory(prefix="dedup-evaluate-") as scratch:
        keep = bool(args.home)
        args.home = args.home or scratch
        args.source = str(images)
        _configure(args)
        import dagster as dg

        from dedup_assets.catalog import query
        from dedup_assets.storage import layout_from_environment

        with dg.DagsterInstance.ephemeral() as instance:
            code = _materialize_all(instance, progress=not args.no_progress, summary=keep,
                                    run_config=_run_config(args.config))
        layout = layout_from_environment()
        rows = query(layout, "select blob_name, cluster_id, is_representative from clusters")
    clusters = {name: cluster for name, cluster, _ in rows}
    representatives = {name: keep for name, _, keep in rows}
    ours = score(truth, pairs_from_clusters(clusters), representatives)
    baseline = None if args.no_baseline else score(truth, imagededup_phash_pairs(images))
    print(format_report(str(images), ours, baseline))
    return code


def cmd_catalog(args: argparse.Namespace) -> int:
    _configure(args)
    from dedup_assets.catalog import register_views
    from dedup_assets.storage import layout_from_environment

    layout = layout_from_environment()
    views = register_views(layout)
    print(f"{layout.catalog_path}: views {', '.join(views) or '(none yet)'}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    _configure(args)
    command = [str(Path(sys.executable).parent / "dagster"), "dev", "-w",
               str(Path(__file__).resolve().parent.parent / "workspace.yaml"), "-p", str(args.port)]
    print(f"DEDUP_HOME={os.environ['DEDUP_HOME']} DAGSTER_HOME={os.environ['DAGSTER_HOME']}")
    os.execv(command[0], command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dedup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub):
        sub.add_argument("--home", help="output folder (default: $DEDUP_HOME or ./data)")
        return sub

    demo = common(commands.add_parser("demo-data", help="build the labelled demo image set"))
    demo.add_argument("--out", help="folder for images/ and truth.csv (default: $DEDUP_HOME/demo)")
    sets = demo.add_mutually_exclusive_group()
    sets.add_argument("--hard", action="store_true",
                      help="the larger set with hard negatives (default out: $DEDUP_HOME/hard)")
    sets.add_argument("--products", action="store_true",
                      help="product shots on white in shared framings (default out: $DEDUP_HOME/products)")
    sets.add_argument("--edits", action="store_true",
                      help="shared photos' edits: stickers, screenshots, frames, filters, perspective "
                           "(default out: $DEDUP_HOME/edits)")
    sets.add_argument("--phone", action="store_true",
                      help="phone photos: HEIC originals, their JPEG exports and HEIC edits "
                           "(default out: $DEDUP_HOME/phone)")
    demo.add_argument("--force", action="store_true", help="rebuild even if present")
    demo.set_defaults(func=cmd_demo_data)

    run = common(commands.add_parser("run", help="batch new blobs and materialize the graph"))
    run.add_argument("--source", help="image folder (default: $DEDUP_SOURCE)")
    run.add_argument("--batch-size", type=int, help="max blobs per batch (default: $DEDUP_BATCH_SIZE or 1000)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--config", help="YAML run config, e.g. ops: {embeddings: {config: {input_size: 160}}}")
    run.set_defaults(func=cmd_run)

    evaluate = commands.add_parser("evaluate", help="score the graph on a labelled folder, beside imagededup PHash")
    evaluate.add_argument("--images", required=True, help="folder of labelled images")
    evaluate.add_argument("--truth", required=True, help="CSV with columns name, group[, kind]")
    evaluate.add_argument("--home", help="keep outputs here (default: a temporary folder)")
    evaluate.add_argument("--batch-size", type=int, help="max blobs per batch")
    evaluate.add_argument("--no-baseline", action="store_true", help="skip imagededup PHash")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate.add_argument("--config", help="YAML run config for the graph (as for run)")
    evaluate.set_defaults(func=cmd_evaluate)

    ui = common(commands.add_parser("ui", help="the Dagster UI (dagster dev) on this project's instance"))
    ui.add_argument("--source", help="image folder (default: $DEDUP_SOURCE)")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=cmd_ui)

    catalog = common(commands.add_parser("catalog", help="rebuild the DuckDB views"))
    catalog.set_defaults(func=cmd_catalog)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SetupError as error:  # a setting to change: the message says which, no traceback
        print(f"dedup: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outside a run (listing, say): nothing half-written to report
        print("dedup: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
