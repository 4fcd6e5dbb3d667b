import os
import subprocess
import sys

import polars as pl

from dedup_assets.cli import build_parser
from dedup_assets.settings import PROJECT_ROOT


def dedup(*args, env):
    return subprocess.run([sys.executable, "-m", "dedup_assets.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_run_registers_batches_materializes_them_and_says_where_results_are(home, image_folder):
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update({"DEDUP_HOME": str(home), "DEDUP_SOURCE": str(image_folder)})
    first = dedup("run", "--batch-size", "10", "--no-progress", env=env)
    assert first.returncode == 0, first.stderr
    assert "2 new batch(es); 2 batch(es) to materialize" in first.stdout
    assert str(home / "dedup.duckdb") in first.stdout
    hashes = pl.read_parquet(home / "parquet" / "wavelet_hashes" / "*.parquet")
    assert sorted(hashes["blob_name"]) == sorted(os.listdir(image_folder))
    # The runs live in the instance under DEDUP_HOME, so the UI shows them.
    assert (home / "dagster" / "history" / "runs.db").exists()
    assert (home / "dagster" / "dagster.yaml").resolve() == PROJECT_ROOT / "dagster.yaml"

    second = dedup("run", "--no-progress", env=env)
    assert second.returncode == 0, second.stderr
    assert "0 new batch(es); 0 batch(es) to materialize" in second.stdout


def test_run_processes_a_blob_restored_from_the_archive_tier(home, image_folder, azurite, container):
    from dedup_assets_tests.test_azure_pipeline import upload_folder

    upload_folder(container, image_folder)
    archived = sorted(os.listdir(image_folder))[3]
    container.get_blob_client(archived).set_standard_blob_tier("Archive")
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update({"DEDUP_HOME": str(home), "DEDUP_SOURCE": f"az://{container.container_name}",
                "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string})
    first = dedup("run", "--batch-size", "100", "--no-progress", env=env)
    assert first.returncode == 0, first.stderr
    failed = pl.read_parquet(home / "parquet" / "failed_blobs" / "*" / "*.parquet")
    assert failed.select("blob_name", "offline").rows() == [(archived, True)]
    assert "0 new batch(es); 0 batch(es) to materialize" in dedup("run", "--no-progress", env=env).stdout

    container.get_blob_client(archived).set_standard_blob_tier("Hot")
    restored = dedup("run", "--no-progress", env=env)
    assert restored.returncode == 0, restored.stderr
    assert "1 batch(es) to materialize (1 for blobs restored from an archive tier)" in restored.stdout
    assert pl.read_parquet(home / "parquet" / "failed_blobs" / "*" / "*.parquet").height == 0
    hashes = pl.read_parquet(home / "parquet" / "wavelet_hashes" / "*.parquet")
    assert sorted(hashes["blob_name"]) == sorted(os.listdir(image_folder))


def test_parser_knows_the_documented_commands():
    parser = build_parser()
    for command in (["run"], ["demo-data"], ["catalog"], ["ui"], ["evaluate", "--images", "x", "--truth", "y"]):
        assert parser.parse_args(command).func


def test_a_large_group_is_summarised_as_a_few_names_and_a_count():
    from dedup_assets.cli import _listed

    names = [f"copy_{i:03d}.jpg" for i in range(400)]
    assert _listed(names) == "copy_000.jpg, copy_001.jpg, copy_002.jpg, copy_003.jpg, copy_004.jpg and 395 more"
    assert _listed(names[:6]) == ", ".join(names[:6])  # "and 1 more" would save nothing
