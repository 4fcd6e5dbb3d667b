"""Shared fixtures: real photographs (built once), a fresh DEDUP_HOME per test,
Dagster resources pointing at it, and an ephemeral Dagster instance."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import dagster as dg
import pytest

from dedup_assets.demo_data import build_demo_set
from dedup_assets.io_manager import storage_resources
from dedup_assets.resources import BatchingResource, DedupStorageResource, ImageSourceResource
from dedup_assets.storage import StorageLayout


@pytest.fixture(scope="session")
def demo_set(tmp_path_factory) -> Path:
    """The labelled demo set (real photos + transformed copies); read-only for tests."""
    root = tmp_path_factory.mktemp("demo")
    build_demo_set(root)
    return root


@pytest.fixture(scope="session")
def demo_truth(demo_set) -> list[dict]:
    with open(demo_set / "truth.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def image_folder(tmp_path, demo_set, demo_truth) -> Path:
    """A writable folder with two duplicate groups of the demo set (16 images)."""
    folder = tmp_path / "images"
    folder.mkdir()
    groups = sorted({row["group"] for row in demo_truth})[:2]
    for row in demo_truth:
        if row["group"] in groups:
            shutil.copy2(demo_set / "images" / row["name"], folder / row["name"])
    return folder


@pytest.fixture
def demo_subset(tmp_path, demo_set, demo_truth):
    """A fresh folder holding the first `count` demo images (with their timestamps)."""

    def make(count: int) -> Path:
        folder = tmp_path / "images"
        folder.mkdir()
        for row in demo_truth[:count]:
            shutil.copy2(demo_set / "images" / row["name"], folder / row["name"])
        return folder

    return make


@pytest.fixture
def home(tmp_path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def layout(home) -> StorageLayout:
    return StorageLayout(home)


@pytest.fixture
def resources(home, image_folder) -> dict:
    return {
        "image_source": ImageSourceResource(uri=str(image_folder)),
        **storage_resources(DedupStorageResource(home=str(home))),
        "batching": BatchingResource(max_batch_size=10, settle_seconds=0),
    }


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


@pytest.fixture
def instance_with_ref():
    """A temporary on-disk instance, for contexts (schedules) that need an instance ref."""
    from dagster._core.storage.defs_state.base import DefsStateStorage

    with dg.instance_for_test() as instance:
        yield instance
        # A schedule context reopens this instance from its ref, and that copy makes its own
        # state storage Dagster's current one until the context is closed. Left open, the copy
        # outlives the test; whenever it is freed it resets the current storage to this
        # instance's, long gone, and a later test's Definitions fail with "Attempted to resolve
        # undefined DagsterInstance weakref". Close contexts: `with`.
        assert DefsStateStorage.get() is instance.defs_state_storage, (
            "a test left a Dagster context open on this instance: use `with build_schedule_context(...)`"
        )


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    """One in-memory Azurite for the session; tests use their own containers."""
    from dedup_assets_tests.azurite import Azurite

    emulator = Azurite(tmp_path_factory.mktemp("azurite")).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def container(azurite, request):
    import re as _re

    name = _re.sub(r"[^a-z0-9]", "", request.node.name.lower())[:50] or "test"
    client = azurite.container(name)
    yield client
    client.delete_container()


@pytest.fixture
def run_everything(instance, layout):
    """Batch the source of `resources`, materialize every batch, then the review assets."""
    from dedup_assets.assets import pipeline_assets, review_assets
    from dedup_assets.ledger import BatchLedger

    def run(resources: dict, review_config: dict | None = None, batch_size: int = 100) -> list[str]:
        keys = BatchLedger(layout).register(resources["image_source"].open().iter_blobs(), batch_size)
        instance.add_dynamic_partitions("batches", keys)
        for key in keys:
            assert dg.materialize(pipeline_assets, partition_key=key, instance=instance, resources=resources).success
        result = dg.materialize(review_assets, instance=instance, resources=resources,
                                run_config={"ops": review_config or {}})
        assert result.success
        return keys

    return run
