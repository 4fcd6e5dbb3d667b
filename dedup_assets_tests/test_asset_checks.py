from pathlib import Path

import dagster as dg
import polars as pl

from dedup_assets.asset_checks import pipeline_checks
from dedup_assets.assets import pipeline_assets
from dedup_assets.definitions import defs
from dedup_assets.ledger import BatchLedger
from dedup_assets.storage import write_parquet_atomic


def check_results(result):
    return {evaluation.check_name: evaluation.passed for evaluation in result.get_asset_check_evaluations()}


def test_checks_pass_on_a_healthy_batch_and_catch_a_lost_blob(instance, resources, layout, image_folder):
    (batch,) = BatchLedger(layout).register(resources["image_source"].open().iter_blobs(), 100)
    instance.add_dynamic_partitions("batches", [batch])
    (image_folder / "broken.jpg").write_bytes(b"not a jpeg")
    result = dg.materialize([*pipeline_assets, *pipeline_checks], partition_key=batch, instance=instance,
                            resources=resources)
    assert result.success
    assert check_results(result) == {"every_blob_accounted_for": True, "one_embedding_per_decoded_blob": True,
                                     "one_representative_per_cluster": True}

    # Lose a row behind the pipeline's back: the check fails (and, being blocking, says so loudly).
    path = layout.partition_path("wavelet_hashes", batch)
    write_parquet_atomic(pl.read_parquet(path).slice(1), Path(path))
    check_only = dg.materialize([*pipeline_assets, *pipeline_checks], partition_key=batch, instance=instance,
                                resources=resources,
                                selection=dg.AssetSelection.assets(pipeline_assets[0]) | dg.AssetSelection.checks(pipeline_checks[0]),
                                raise_on_error=False)
    assert check_results(check_only) == {"every_blob_accounted_for": False}


def test_the_job_runs_the_checks():
    job = defs.resolve_job_def("dedup_job")
    check_names = {key.name for key in job.asset_layer.asset_graph.asset_check_keys}
    assert check_names == {"every_blob_accounted_for", "one_embedding_per_decoded_blob",
                           "one_representative_per_cluster"}
