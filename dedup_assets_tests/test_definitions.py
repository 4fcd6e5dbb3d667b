import dagster as dg

from dedup_assets.definitions import defs


def test_definitions_load_with_the_pipeline_sensor_and_schedule():
    dg.Definitions.validate_loadable(defs)
    repository = defs.get_repository_def()
    asset_names = {key.path[-1] for key in repository.asset_graph.get_all_asset_keys()}
    assert {"blob_inventory", "wavelet_hashes"} <= asset_names
    assert repository.has_sensor_def("new_blobs_sensor")
    assert repository.has_schedule_def("backfill_schedule")
    job = defs.resolve_job_def("dedup_job")
    assert job.partitions_def.name == "batches"


def test_lineage_runs_from_inventory_to_hashes():
    graph = defs.get_repository_def().asset_graph
    hashes = dg.AssetKey("wavelet_hashes")
    assert dg.AssetKey("blob_inventory") in graph.get(hashes).parent_keys
