import dagster as dg

from dedup_assets.definitions import defs


def test_definitions_load_with_the_pipeline_sensor_and_schedule():
    dg.Definitions.validate_loadable(defs)
    repository = defs.get_repository_def()
    asset_names = {key.path[-1] for key in repository.asset_graph.get_all_asset_keys()}
    assert asset_names == {"blob_inventory", "wavelet_hashes", "color_candidates", "embeddings",
                           "verified_pairs", "clusters", "keep_drop_manifest", "duplicate_gallery",
                           "duplicate_actions"}
    assert repository.has_sensor_def("new_blobs_sensor")
    assert repository.has_schedule_def("backfill_schedule")
    job = defs.resolve_job_def("dedup_job")
    assert job.partitions_def.name == "batches"


def test_lineage_follows_the_cascade():
    graph = defs.get_repository_def().asset_graph

    def parents(name):
        return {key.path[-1] for key in graph.get(dg.AssetKey(name)).parent_keys}

    assert parents("wavelet_hashes") == {"blob_inventory"}
    assert parents("color_candidates") == {"wavelet_hashes"}
    assert parents("embeddings") == {"wavelet_hashes"}
    assert parents("verified_pairs") == {"color_candidates", "embeddings"}
    assert parents("clusters") == {"verified_pairs", "wavelet_hashes"}
    assert parents("keep_drop_manifest") == {"clusters"}
    assert parents("duplicate_gallery") == {"keep_drop_manifest", "verified_pairs"}
    assert parents("duplicate_actions") == {"keep_drop_manifest"}


def test_the_instance_fails_runs_left_behind_by_a_dead_daemon(tmp_path):
    # A reboot mid-run leaves runs STARTED for ever, and two fill the queue (measured with a
    # daemon killed with its code server and run workers: the queued runs never started).
    from dedup_assets.jobs import BATCH_RUN_MAX_SECONDS
    from dedup_assets.settings import prepare_dagster_home

    with dg.DagsterInstance.from_config(str(prepare_dagster_home(tmp_path / "dagster"))) as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_start_timeout_seconds == 180
        assert instance.run_monitoring_max_runtime_seconds == 6 * 3600
    assert defs.resolve_job_def("dedup_job").tags["dagster/max_runtime"] == str(BATCH_RUN_MAX_SECONDS)
