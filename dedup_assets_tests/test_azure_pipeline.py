"""The pipeline on an Azure container (Azurite): sensor, whole graph, secrets."""

import json
import shutil
import threading
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest
from azure.storage.blob import ContainerSasPermissions, generate_container_sas

from dedup_assets.assets import pipeline_assets
from dedup_assets.catalog import query
from dedup_assets.ledger import BatchLedger
from dedup_assets.resources import BatchingResource, DedupStorageResource, ImageSourceResource
from dedup_assets.io_manager import storage_resources
from dedup_assets.storage import StorageLayout
from dedup_assets.work_planning import partitions_needing_work
from dedup_assets_tests.azurite import ACCOUNT, KEY
from dedup_assets_tests.test_sensors import tick


def upload_folder(container, folder, names=None):
    for path in sorted(folder.iterdir()):
        if names is None or path.name in names:
            container.upload_blob(path.name, path.read_bytes(), overwrite=True)


@pytest.fixture
def azure_resources(azurite, container, home):
    return {
        "image_source": ImageSourceResource(uri=f"az://{container.container_name}",
                                            connection_string=azurite.connection_string, download_concurrency=4),
        **storage_resources(DedupStorageResource(home=str(home))),
        "batching": BatchingResource(max_batch_size=10, settle_seconds=0),
    }


def clusters_by_member(layout: StorageLayout) -> set[frozenset[str]]:
    rows = query(layout, "select cluster_id, list(blob_name) from clusters group by cluster_id")
    return {frozenset(members) for _, members in rows}


def test_the_sensor_batches_new_blobs_exactly_once_even_during_a_run(
    instance, azure_resources, container, image_folder, layout
):
    names = sorted(p.name for p in image_folder.iterdir())
    upload_folder(container, image_folder, names[:10])
    requests, cursor = tick(instance, azure_resources, None)
    assert [r.partition_key for r in requests] == ["batch-000001"]

    # Upload the rest while batch-000001 is being materialized.
    uploader = threading.Thread(target=upload_folder, args=(container, image_folder, names[10:]))
    uploader.start()
    result = dg.materialize(pipeline_assets, partition_key="batch-000001", instance=instance,
                            resources=azure_resources)
    uploader.join()
    assert result.success
    requests, cursor = tick(instance, azure_resources, cursor)
    assert [r.partition_key for r in requests] == ["batch-000002"]
    assert tick(instance, azure_resources, cursor)[0] == []  # a restart from the cursor: nothing

    batched = [n for key in BatchLedger(layout).batch_keys() for n in BatchLedger(layout).read_manifest(key)["blob_name"]]
    assert sorted(batched) == names

    # A blob overwritten with new content is processed again, once, and the batch that
    # decided its old content runs again (its groups may have kept it).
    container.upload_blob(names[0], (image_folder / names[1]).read_bytes(), overwrite=True)
    requests, cursor = tick(instance, azure_resources, cursor)
    assert [r.partition_key for r in requests] == ["batch-000003", "batch-000001"]
    assert requests[1].run_key.startswith("batch-000001:deletions")
    assert BatchLedger(layout).read_manifest("batch-000003")["blob_name"].to_list() == [names[0]]
    assert tick(instance, azure_resources, cursor)[0] == []


# Names people give files, and Azure allows: each must be listed, read and clustered alike.
ODD_NAMES = ["Fotos/Ürlaub 2019/Strand (1).jpg", "a b#c?d.jpg", "100% & more.jpg", "plus+sign=eq.jpg",
             "quote'\"<b>.jpg", "emoji 😀.jpg", "deep/" * 150 + "long.jpg", "already%20encoded.jpg", "Photo.JPG",
             "photo.jpg", "colon:semi;.jpg", "写真/ユニコード.jpg", "dir//double slash.jpg", "  leading spaces.jpg"]


def odd_named_copy(folder, destination):
    """`folder`'s images under ODD_NAMES (the rest keep theirs), as files under `destination`."""
    paths = sorted(folder.iterdir())
    for path, name in zip(paths, ODD_NAMES + [p.name for p in paths[len(ODD_NAMES):]]):
        target = destination.joinpath(*name.replace("//", "/").split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return destination


def test_the_graph_on_azure_gives_the_same_clusters_as_on_a_local_folder(
    instance, azure_resources, resources, container, image_folder, tmp_path
):
    image_folder = odd_named_copy(image_folder, tmp_path / "odd names")
    for path in sorted(p for p in image_folder.rglob("*") if p.is_file()):
        name = path.relative_to(image_folder).as_posix()
        container.upload_blob(name.replace("dir/", "dir//"), path.read_bytes())
    azure_home = StorageLayout(azure_resources["storage"].home)
    for source_resources, layout in ((azure_resources, azure_home), (resources_for(tmp_path, image_folder), None)):
        ledger_layout = layout or StorageLayout(source_resources["storage"].home)
        keys = BatchLedger(ledger_layout).register(source_resources["image_source"].open().iter_blobs(), 100)
        with dg.DagsterInstance.ephemeral() as run_instance:
            run_instance.add_dynamic_partitions("batches", keys)
            for key in keys:
                assert dg.materialize(pipeline_assets, partition_key=key, instance=run_instance,
                                      resources=source_resources).success
    local_home = StorageLayout(tmp_path / "local_home")
    # Azure keeps "dir//double slash.jpg" as named; a file system has no empty folder name.
    local_clusters = {frozenset(n.replace("dir/", "dir//") for n in c) for c in clusters_by_member(local_home)}
    assert clusters_by_member(azure_home) == local_clusters
    assert {n for c in local_clusters for n in c} >= set(ODD_NAMES)
    assert len(local_clusters) < sum(len(members) for members in local_clusters)  # duplicates found


def resources_for(tmp_path, folder):
    home = tmp_path / "local_home"
    home.mkdir()
    return {
        "image_source": ImageSourceResource(uri=str(folder)),
        **storage_resources(DedupStorageResource(home=str(home))),
        "batching": BatchingResource(max_batch_size=100, settle_seconds=0),
    }


def test_no_key_or_connection_string_in_logs_metadata_or_errors(
    instance, azure_resources, azurite, container, image_folder, layout
):
    upload_folder(container, image_folder)
    keys = BatchLedger(layout).register(azure_resources["image_source"].open().iter_blobs(), 100)
    instance.add_dynamic_partitions("batches", keys)
    ok = dg.materialize(pipeline_assets, partition_key=keys[0], instance=instance, resources=azure_resources)
    assert ok.success
    # A failing run: the container is gone, so every download fails and the listing errors.
    broken = {**azure_resources, "image_source": ImageSourceResource(
        uri="az://no-such-container", connection_string=azurite.connection_string)}
    with pytest.raises(Exception) as raised:
        list(broken["image_source"].open().iter_blobs())
    failed = dg.materialize(pipeline_assets[:2], partition_key=keys[0], instance=instance, resources=broken,
                            raise_on_error=False)
    texts = [str(raised.value)]
    for run_id in (ok.run_id, failed.run_id):
        for record in instance.all_logs(run_id):
            texts.append(record.user_message or "")
            texts.append(repr(record.dagster_event))
    texts.append(json.dumps(query(layout, "select * from failed_blobs"), default=str))
    texts.append(repr(azure_resources["image_source"]) + str(azure_resources["image_source"]))
    secret_fragments = [KEY, KEY[:16], "AccountKey="]
    leaks = [fragment for fragment in secret_fragments for text in texts if fragment in text]
    assert leaks == []


def test_a_data_root_on_azure_gives_the_local_results_and_a_gallery_that_opens_from_disk(
    azurite, container, resources, run_everything, layout, tmp_path
):
    """Parquet partitions, thumbnails and the ledger on Azurite; home holds only the
    catalog and the review folder. Same groups, kept copies, pairs and features as local."""
    from dedup_assets.assets import review_assets
    from dedup_assets_tests.processes import assert_same_results
    from dedup_assets_tests.test_review import parse

    run_everything(resources)  # the local reference, in `layout`
    storage = DedupStorageResource(home=str(tmp_path / "azure_home"), data_url=f"az://{container.container_name}/d",
                                   data_connection_string=azurite.connection_string)
    on_azure = {**resources, **storage_resources(storage)}
    shared = storage.layout
    keys = BatchLedger(shared).register(resources["image_source"].open().iter_blobs(), 10)
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("batches", keys)
        runs = [dg.materialize(pipeline_assets, partition_key=key, instance=instance, resources=on_azure)
                for key in keys]
        runs.append(dg.materialize(review_assets, instance=instance, resources=on_azure))
        assert all(run.success for run in runs)
        texts = [repr(record) for run in runs for record in instance.all_logs(run.run_id)]

    assert_same_results(layout, shared)
    assert container.get_blob_client(f"d/batches/{keys[0]}.parquet").exists()
    # Locally only the review, and copies of the stored pairs that `clusters` scans.
    assert not [p for p in shared.home.rglob("*") if p.suffix == ".parquet"
                and "review" not in p.parts and ".data_cache" not in p.parts]
    assert {p.parent.parent.name for p in (shared.home / ".data_cache").rglob("*.parquet")} == {"verified_pairs"}
    page = shared.review_dir / "page-00001.html"
    images = parse(page).images
    assert images and all((page.parent / src).resolve().is_file() for src in images)
    assert not [text for text in texts if KEY[:16] in text or "AccountKey=" in text]


def test_an_archived_blob_is_recorded_as_offline_and_processed_once_rehydrated(
    instance, azure_resources, container, image_folder, layout
):
    """Set Blob Tier changes no etag, so the rehydrated blob is no new version: the sensor
    must run its batch again for it, once."""
    names = sorted(p.name for p in image_folder.iterdir())[:6]
    upload_folder(container, image_folder, names)
    archived = names[2]
    container.get_blob_client(archived).set_standard_blob_tier("Archive")

    requests, cursor = tick(instance, azure_resources, None)
    assert [r.partition_key for r in requests] == ["batch-000001"]
    assert dg.materialize(pipeline_assets, partition_key="batch-000001", instance=instance,
                          resources=azure_resources).success
    failures = query(layout, "select blob_name, reason, offline from failed_blobs")
    assert len(failures) == 1 and failures[0][0] == archived and failures[0][2] is True
    assert "Archive access tier" in failures[0][1] and "\n" not in failures[0][1]
    assert archived not in {row[0] for row in query(layout, "select blob_name from clusters")}
    assert tick(instance, azure_resources, cursor)[0] == []  # still archived: nothing to do

    container.get_blob_client(archived).set_standard_blob_tier("Hot")  # Azurite: online at once
    requests, cursor = tick(instance, azure_resources, cursor)
    assert [r.partition_key for r in requests] == ["batch-000001"]
    assert dg.materialize(pipeline_assets, partition_key="batch-000001", instance=instance,
                          resources=azure_resources).success
    assert query(layout, "select * from failed_blobs") == []
    assert archived in {row[0] for row in query(layout, "select blob_name from clusters")}
    assert tick(instance, azure_resources, cursor)[0] == []


def test_an_expired_sas_token_fails_the_batch_for_a_later_run_instead_of_recording_its_blobs(
    instance, azure_resources, azurite, container, image_folder, layout
):
    upload_folder(container, image_folder)
    keys = BatchLedger(layout).register(azure_resources["image_source"].open().iter_blobs(), 100)
    instance.add_dynamic_partitions("batches", keys)
    expired = generate_container_sas(ACCOUNT, container.container_name, account_key=KEY,
                                     permission=ContainerSasPermissions(read=True, list=True),
                                     expiry=datetime.now(timezone.utc) - timedelta(minutes=1))
    refused = {**azure_resources, "image_source": ImageSourceResource(
        uri=f"az://{container.container_name}", account_url=azurite.url, sas_token=expired)}
    run = dg.materialize(pipeline_assets, partition_key=keys[0], instance=instance, resources=refused,
                         raise_on_error=False)
    assert not run.success
    (failure,) = [event for event in run.all_events if event.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error.to_string()
    assert "downloads in a row failed" in message and "access refused (AuthorizationFailure)" in message
    assert expired not in message and expired[-20:] not in message
    assert not layout.exists(layout.failures_path("wavelet_hashes", keys[0]))  # no blob blamed
    assert partitions_needing_work(instance, [a.key for a in pipeline_assets]) == keys  # the schedule's work

    assert dg.materialize(pipeline_assets, partition_key=keys[0], instance=instance,
                          resources=azure_resources).success
    assert query(layout, "select count(*) from wavelet_hashes")[0][0] == len(list(image_folder.iterdir()))
    assert partitions_needing_work(instance, [a.key for a in pipeline_assets]) == []
