"""The duplicate_actions asset: a dry run by default, tags or quarantine copies when
asked, on a local folder and on Azure (Azurite). Nothing is ever deleted."""

import os

import polars as pl
import pytest

from dedup_assets.io_manager import storage_resources
from dedup_assets.resources import DedupStorageResource, ImageSourceResource
from dedup_assets_tests.test_azure_pipeline import upload_folder


def actions(layout) -> pl.DataFrame:
    return pl.read_parquet(layout.partition_path("duplicate_actions", None))


def drops(layout) -> set[str]:
    manifest = pl.read_parquet(layout.review_dir / "keep_drop_manifest.parquet")
    return set(manifest.filter(pl.col("action") == "drop")["blob_name"])


def test_the_default_is_a_dry_run_that_changes_nothing(run_everything, resources, image_folder, layout):
    before = {p.name: p.stat().st_mtime_ns for p in image_folder.iterdir()}
    run_everything(resources)
    planned = actions(layout)
    assert set(planned["blob_name"]) == drops(layout) and len(drops(layout)) >= 10
    assert set(planned["status"]) == {"planned"}
    assert {p.name: p.stat().st_mtime_ns for p in image_folder.iterdir()} == before
    assert not (layout.home / "quarantine").exists()


def test_copies_go_to_a_quarantine_folder_and_the_originals_stay(run_everything, resources, image_folder, layout):
    before = sorted(p.name for p in image_folder.iterdir())
    run_everything(resources, {"duplicate_actions": {"config": {"dry_run": False}}})
    done = actions(layout)
    assert set(done["status"]) == {"copied"}
    quarantine = layout.home / "quarantine"
    assert sorted(p.name for p in quarantine.iterdir()) == sorted(drops(layout))
    assert sorted(p.name for p in image_folder.iterdir()) == before  # nothing deleted
    for name in drops(layout):
        assert (quarantine / name).read_bytes() == (image_folder / name).read_bytes()


def test_a_quarantine_inside_the_scanned_folder_is_refused(run_everything, resources, image_folder):
    with pytest.raises(Exception, match="inside the scanned folder"):
        run_everything(resources, {"duplicate_actions": {"config": {
            "dry_run": False, "quarantine": str(image_folder / "quarantine")}}})
    assert not (image_folder / "quarantine").exists()


def test_a_file_changed_since_the_decision_is_skipped(run_everything, resources, image_folder, layout, instance):
    import dagster as dg

    from dedup_assets.assets import review_assets

    run_everything(resources)
    changed = sorted(drops(layout))[0]
    os.utime(image_folder / changed, (1_800_000_000, 1_800_000_000))  # a new etag
    result = dg.materialize(review_assets, selection=["duplicate_actions"], instance=instance, resources=resources,
                            run_config={"ops": {"duplicate_actions": {"config": {"dry_run": False}}}})
    assert result.success
    statuses = dict(actions(layout).select("blob_name", "status").rows())
    assert statuses.pop(changed) == "skipped"
    assert set(statuses.values()) == {"copied"}


@pytest.fixture
def azure_review_resources(azurite, container, home, image_folder):
    upload_folder(container, image_folder)
    return {
        "image_source": ImageSourceResource(uri=f"az://{container.container_name}/",
                                            connection_string=azurite.connection_string, download_concurrency=4),
        **storage_resources(DedupStorageResource(home=str(home))),
    }


def test_duplicates_get_blob_index_tags_on_azure(run_everything, azure_review_resources, container, layout):
    names_before = sorted(container.list_blob_names())
    for name in names_before:
        container.get_blob_client(name).set_blob_tags({"owner": "team-a"})
    run_everything(azure_review_resources, {"duplicate_actions": {"config": {"dry_run": False}}})
    done = actions(layout)
    assert set(done["status"]) == {"tagged"}, done.filter(pl.col("status") != "tagged").rows()
    tagged = {blob["name"] for blob in container.find_blobs_by_tags("dedup_action = 'drop'")}
    assert tagged == drops(layout)
    manifest = pl.read_parquet(layout.review_dir / "keep_drop_manifest.parquet")
    for name, cluster, keep in manifest.filter(pl.col("action") == "drop").select(
            "blob_name", "cluster_id", "representative").rows():
        tags = container.get_blob_client(name).get_blob_tags()
        assert tags["dedup_cluster"] == cluster and tags["dedup_keep"] == keep
    # Existing tags are kept; kept copies are untouched; nothing deleted.
    assert all(container.get_blob_client(name).get_blob_tags()["owner"] == "team-a" for name in names_before)
    for name in set(names_before) - drops(layout):
        assert "dedup_action" not in container.get_blob_client(name).get_blob_tags()
    assert sorted(container.list_blob_names()) == names_before


@pytest.mark.parametrize("kept", ["Müller.jpg", "photo (1).jpg", "a&b.jpg", "写真.jpg", "x" * 257,
                                  "plain/IMG_0001 copy-2.jpg", "c:/x+y=z_1.jpg"])
def test_the_tags_of_a_duplicate_are_accepted_by_the_service_whatever_the_kept_copy_is_named(
    kept, container
):
    from dedup_assets.actions import duplicate_tags

    container.upload_blob("drop.jpg", b"x", overwrite=True)
    tags = duplicate_tags("0123456789abcdef", kept)
    container.get_blob_client("drop.jpg").set_blob_tags(tags)  # Azurite refuses what Azure refuses
    assert container.get_blob_client("drop.jpg").get_blob_tags() == tags
    # The kept copy's name goes in a tag when the service allows it; the cluster id always does.
    assert tags.get("dedup_keep") == (kept if kept in ("plain/IMG_0001 copy-2.jpg", "c:/x+y=z_1.jpg") else None)


def test_credentials_without_write_permission_stop_the_actions_early(
    run_everything, azure_review_resources, azurite, container, layout
):
    from dedup_assets.actions import apply_actions, plan_drops
    from dedup_assets.sources import SOURCE_DOWN_IN_A_ROW, SourceUnavailableError
    from dedup_assets_tests.sources.test_azure import sas_source

    run_everything(azure_review_resources)  # a dry run: the plan
    drops = plan_drops(layout, layout.partition_path("keep_drop_manifest", None))
    assert drops.height > SOURCE_DOWN_IN_A_ROW
    reader = sas_source(azurite, container, 3600, read=True, list=True)  # no tag permission
    with pytest.raises(SourceUnavailableError, match=f"{SOURCE_DOWN_IN_A_ROW} actions in a row failed.*access refused"):
        apply_actions(reader, drops, "tag", dry_run=False)
    assert not list(container.find_blobs_by_tags("dedup_action = 'drop'"))


def test_quarantine_copies_on_azure_go_outside_the_scanned_prefix(
    run_everything, azure_review_resources, azurite, container, layout
):
    names_before = sorted(container.list_blob_names())
    with pytest.raises(Exception, match="inside the scanned"):
        run_everything(azure_review_resources, {"duplicate_actions": {"config": {
            "dry_run": False, "mode": "copy", "quarantine": f"az://{container.container_name}/quarantine/"}}})

    quarantine = f"{container.container_name}-q"
    run_everything(azure_review_resources, {"duplicate_actions": {"config": {
        "dry_run": False, "mode": "copy", "quarantine": f"az://{quarantine}/dups/"}}})
    assert set(actions(layout)["status"]) == {"copied"}
    copies = azurite.container(quarantine)
    try:
        assert sorted(copies.list_blob_names()) == sorted(f"dups/{name}" for name in drops(layout))
        name = sorted(drops(layout))[0]
        assert copies.download_blob(f"dups/{name}").readall() == container.download_blob(name).readall()
    finally:
        copies.delete_container()
    assert sorted(container.list_blob_names()) == names_before


def test_only_the_drops_are_read_and_every_one_is_acted_on_in_order(tmp_path, monkeypatch):
    # A 3M-blob manifest loaded whole took the step to ~1.5 GB: the drops are read alone
    # and the actions kept as frames of ROWS_PER_FRAME rows (set to 2 here).
    from dedup_assets import actions as module
    from dedup_assets.sources.local import LocalFolderSource
    from dedup_assets.storage import StorageLayout

    layout = StorageLayout(tmp_path / "home")
    path = layout.partition_path("keep_drop_manifest", None)
    with pytest.raises(FileNotFoundError, match="materialize keep_drop_manifest first"):
        module.plan_drops(layout, path)
    names = [f"img{i}.jpg" for i in (4, 0, 3, 1, 2)]
    layout.write_parquet(pl.DataFrame({
        "blob_name": names, "cluster_id": ["c1"] * 5, "action": ["drop", "keep", "drop", "review", "drop"],
        "reason": ["copy"] * 5, "representative": ["img0.jpg"] * 5, "cluster_size": [5] * 5, "etag": ["e"] * 5,
    }), path)
    drops = module.plan_drops(layout, path)
    assert drops.columns == module.DROP_COLUMNS and drops["blob_name"].to_list() == ["img2.jpg", "img3.jpg", "img4.jpg"]

    monkeypatch.setattr(module, "ROWS_PER_FRAME", 2)
    (tmp_path / "images").mkdir()
    planned, _ = module.apply_actions(LocalFolderSource(tmp_path / "images"), drops, "copy", True, str(tmp_path / "q"))
    assert planned["blob_name"].to_list() == ["img2.jpg", "img3.jpg", "img4.jpg"]
    assert set(planned["status"]) == {"planned"} and planned["target"][0] == str((tmp_path / "q").resolve() / "img2.jpg")
