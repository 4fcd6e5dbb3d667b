import os
import re
import subprocess
import sys

import polars as pl
import pytest

from dedup_assets.cli import build_parser
from dedup_assets.ledger import BatchLedger
from dedup_assets.settings import PROJECT_ROOT
from dedup_assets.storage import StorageLayout


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

    # Another folder on the same DEDUP_HOME would take every blob batched so far for deleted.
    other = home.parent / "other_images"
    other.mkdir()
    (other / "x.jpg").write_bytes((image_folder / sorted(os.listdir(image_folder))[0]).read_bytes())
    switched = dedup("run", "--no-progress", env={**env, "DEDUP_SOURCE": str(other)})
    assert switched.returncode == 2
    assert f"holds the batches of {image_folder}, not of {other}" in switched.stderr
    assert BatchLedger(StorageLayout(home)).tombstones().height == 0


def test_a_source_of_links_says_why_it_found_nothing(home, image_folder, tmp_path):
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "photos").symlink_to(image_folder)
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update({"DEDUP_HOME": str(home), "DEDUP_SOURCE": str(linked)})
    run = dedup("run", "--no-progress", env=env)
    assert run.returncode == 0, run.stderr
    assert "0 new batch(es)" in run.stdout
    assert f"dedup: not listed under {linked}: 1 symbolic link (e.g. photos/): links are not followed" in run.stderr


def test_more_copies_than_the_searches_neighbours_make_one_group(home, tmp_path):
    """A photo saved again and again (re-sized, re-encoded), more times than each search
    gives an image neighbours, across batches: one group, one copy kept (it had split into
    several, each keeping a copy)."""
    from dedup_assets.demo_data import shipped_photos

    photo = shipped_photos()["coffee"].convert("RGB")
    folder = tmp_path / "copies"
    folder.mkdir()
    for i in range(24):
        width = 300 + 9 * i
        photo.resize((width, width * photo.height // photo.width)).save(folder / f"copy_{i:02d}.jpg",
                                                                         quality=70 + i % 25)
    config = tmp_path / "run.yaml"
    config.write_text("ops:\n  color_candidates: {config: {neighbours: 6}}\n"
                      "  verified_pairs: {config: {neighbours: 6}}\n")
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update({"DEDUP_HOME": str(home), "DEDUP_SOURCE": str(folder)})
    run = dedup("run", "--batch-size", "8", "--no-progress", "--config", str(config), env=env)
    assert run.returncode == 0, run.stderr
    manifest = pl.read_parquet(home / "review" / "keep_drop_manifest.parquet")
    (kept,) = manifest.filter(pl.col("action") == "keep")["blob_name"].to_list()
    assert kept in {"copy_21.jpg", "copy_22.jpg", "copy_23.jpg"}  # of the largest (age and resemblance then decide)
    assert manifest.filter(pl.col("action") == "drop").height == 23


def test_the_summary_counts_the_blobs_not_used_by_reason(home, demo_subset):
    # A photo export holds sidecars beside its photos (a Takeout's .json, Lightroom's .xmp).
    folder = demo_subset(2)
    for name in ("a.jpg.json", "b.jpg.json"):
        (folder / name).write_text('{"title": "a.jpg"}')
    (folder / "a.xmp").write_text('<x:xmpmeta xmlns:x="adobe:ns:meta/"></x:xmpmeta>')
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    run = dedup("run", "--no-progress", env={**env, "DEDUP_HOME": str(home), "DEDUP_SOURCE": str(folder)})
    assert run.returncode == 0, run.stderr
    summary = [line.split() for line in run.stdout.split("blob(s) not used")[1].splitlines()[1:3]]
    assert run.stdout.count("3 blob(s) not used") == 1
    assert [(line[0], " ".join(line[1:])) for line in summary] == [
        ("2", "not a recognised image format (it looks like JSON text)"),
        ("1", "not a recognised image format (it looks like XML or HTML text)")]


def test_a_home_inside_the_source_folder_is_refused(image_folder):
    """Its thumbnails and files would be listed as new images by the next run (probed: the
    second run found 12 images each a "duplicate" of its own thumbnail)."""
    home = image_folder / "results"
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update({"DEDUP_HOME": str(home), "DEDUP_SOURCE": str(image_folder)})
    run = dedup("run", "--no-progress", env=env)
    assert run.returncode == 2
    assert run.stderr.strip() == (f"dedup: DEDUP_HOME={home} lies inside the source folder {image_folder}: the "
                                  "results would be listed as new images by the next run; put them outside it")
    assert not (home / "batches").exists()


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


def test_a_setting_to_change_is_one_line_and_nothing_runs(home, image_folder):
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update({"DEDUP_HOME": str(home), "DEDUP_SOURCE": str(image_folder), "DEDUP_BATCH_SIZE": "1e3"})
    typo = dedup("run", "--no-progress", env=env)
    assert typo.returncode == 2
    assert typo.stderr.strip() == "dedup: DEDUP_BATCH_SIZE='1e3': expected a whole number, at least 1"

    env["DEDUP_BATCH_SIZE"] = "10"
    config = home / "run.yaml"
    config.write_text("ops: {verified_pairs: {config: {min_coverage: 55}}}\n")  # a percentage for a share
    out_of_range = dedup("run", "--no-progress", "--config", str(config), env=env)
    assert out_of_range.returncode == 2
    assert out_of_range.stderr.strip() == (f"dedup: run config {config}: ops.verified_pairs.config: "
                                           "min_coverage: Input should be less than or equal to 1")
    # Checked before the listing: no batch was cut, no run started.
    assert not (home / "batches").exists() or not any((home / "batches").iterdir())
    assert not (home / "parquet").exists()


@pytest.mark.parametrize("text, problem", [
    ("ops: {verified_pairs: {config: {verify_sid: 320}}}",
     'Received unexpected config entry "verify_sid" at path root:ops:verified_pairs:config. (settings: README'),
    ("ops: {verified_pair: {config: {verify_side: 320}}}", 'unexpected config entry "verified_pair" at path root:ops.'),
    ("ops: {verified_pairs: {config: {verifier: sift}}}", "verifier not in enum type"),
    ("ops: {verified_pairs: {config: {verify_side: 0}}}",
     "ops.verified_pairs.config: verify_side: Input should be greater than or equal to 64"),
    ("ops: {color_candidates: {config: {hamming_radius: 65}}}",
     "ops.color_candidates.config: hamming_radius: Input should be less than or equal to 64"),
    ("ops: {embeddings: {config: {batch_size: 0}}}", "ops.embeddings.config: batch_size: Input should be greater"),
    ("ops: {duplicate_gallery: {config: {clusters_per_page: 0}}}", "ops.duplicate_gallery.config: clusters_per_page"),
    ("ops: {duplicate_actions: {config: {mode: delete}}}", "mode not in enum type"),
    ("ops: [1, 2", "is not valid YAML"),
    ("- ops", "expected a mapping"),
])
def test_a_run_config_is_checked_whole_before_anything_runs(tmp_path, text, problem):
    from dedup_assets.cli import _run_config
    from dedup_assets.settings import SetupError

    path = tmp_path / "run.yaml"
    path.write_text(text + "\n")
    with pytest.raises(SetupError, match=re.escape(problem)):
        _run_config(str(path))


def test_the_documented_run_configs_pass_the_check(tmp_path):
    from dedup_assets.cli import _run_config

    path = tmp_path / "run.yaml"
    path.write_text("ops: {embeddings: {config: {input_size: 160}}, verified_pairs: {config: {verify_side: 320, "
                    "verifier: torch-orb}}, duplicate_actions: {config: {dry_run: false, mode: tag}}}\n")
    assert _run_config(str(path))["ops"]["verified_pairs"]["config"]["verify_side"] == 320


def test_every_configurable_asset_has_its_settings_checked():
    from dedup_assets.assets import pipeline_assets, review_assets, run_settings

    configurable = {asset.key.path[-1] for asset in pipeline_assets + review_assets
                    if getattr(asset.op.config_schema.config_type, "fields", None)}
    assert configurable == set(run_settings)
    for name, settings in run_settings.items():
        fields = set(next(a for a in pipeline_assets + review_assets if a.key.path[-1] == name)
                     .op.config_schema.config_type.fields)
        assert fields == set(settings.model_fields)


def test_run_again_after_a_kept_copy_is_deleted_keeps_one_of_its_copies(home, image_folder):
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update({"DEDUP_HOME": str(home), "DEDUP_SOURCE": str(image_folder)})
    assert dedup("run", "--no-progress", env=env).returncode == 0
    manifest = pl.read_parquet(home / "review" / "keep_drop_manifest.parquet")
    victim = manifest.filter((pl.col("action") == "keep") & (pl.col("cluster_size") > 1))["blob_name"][0]
    group = manifest.filter(pl.col("representative") == victim)["cluster_id"][0]
    copies = sorted(set(manifest.filter(pl.col("cluster_id") == group)["blob_name"]) - {victim})
    (image_folder / victim).unlink()

    again = dedup("run", "--no-progress", env=env)
    assert again.returncode == 0, again.stderr
    assert "1 batch(es) to materialize (1 for blobs deleted or overwritten in the source)" in again.stdout
    manifest = pl.read_parquet(home / "review" / "keep_drop_manifest.parquet")
    assert victim not in manifest.filter(pl.col("action") != "review")["blob_name"].to_list()
    assert victim not in manifest["representative"].to_list()
    remaining = manifest.filter(pl.col("blob_name").is_in(copies))
    if len(copies) > 1:  # the copies left are still one group, with one of them kept
        assert remaining["action"].to_list().count("keep") == 1
    else:
        assert remaining["action"].to_list() == ["keep"]
    assert "0 new batch(es); 0 batch(es) to materialize" in dedup("run", "--no-progress", env=env).stdout


def test_ctrl_c_stops_the_whole_run_and_the_next_run_goes_on(home, image_folder):
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update({"DEDUP_HOME": str(home), "DEDUP_SOURCE": str(image_folder)})
    process = subprocess.Popen([sys.executable, "-m", "dedup_assets.cli", "run", "--batch-size", "5", "--no-progress"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first_step = home / "parquet" / "blob_inventory" / "batch-000001.parquet"
    deadline = time.monotonic() + 120
    while not first_step.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert re.search(r"dedup: interrupted in batch-\d{6} \(\d+ of \d+ batch\(es\) done\)", stderr)
    # Before, the interrupt failed that batch only, and every later batch and the review ran.
    batches = BatchLedger(StorageLayout(home)).batch_keys()
    assert len(batches) > 2
    assert len(list((home / "parquet" / "clusters").glob("*.parquet"))) < len(batches) - 1
    assert not (home / "review").exists()

    again = dedup("run", "--no-progress", env=env)
    assert again.returncode == 0, again.stderr
    hashes = pl.read_parquet(home / "parquet" / "wavelet_hashes" / "*.parquet")
    assert sorted(hashes["blob_name"]) == sorted(os.listdir(image_folder))


def test_a_home_that_cannot_be_a_folder_is_named(tmp_path, monkeypatch):
    from dedup_assets.settings import SetupError, apply_defaults

    taken = tmp_path / "results.txt"
    taken.write_text("a file, not a folder")
    monkeypatch.setenv("DEDUP_HOME", str(taken))
    with pytest.raises(SetupError, match=re.escape(f"DEDUP_HOME={taken}: cannot be made a folder (File exists)")):
        apply_defaults()


def test_one_dedup_run_at_a_time_per_home(home, image_folder):
    import fcntl

    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update({"DEDUP_HOME": str(home), "DEDUP_SOURCE": str(image_folder)})
    # Held as a running `dedup run` holds it: two would compute the same batches at once.
    with open(home / ".dedup-run.lock", "w") as running:
        fcntl.flock(running, fcntl.LOCK_EX)
        second = dedup("run", "--no-progress", env=env)
    assert second.returncode == 2
    assert second.stderr.strip() == f"dedup: another `dedup run` is working on {home}: run this one once it is done"
    assert not (home / "batches").exists()
