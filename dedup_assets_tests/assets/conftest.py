import dagster as dg
import pytest

from dedup_assets.assets import blob_inventory, wavelet_hashes
from dedup_assets.ledger import BatchLedger


@pytest.fixture
def batch(instance, resources, image_folder, layout) -> str:
    """One batch over the whole image folder, registered as a partition."""
    keys = BatchLedger(layout).register(resources["image_source"].open().iter_blobs(), max_batch_size=1000)
    instance.add_dynamic_partitions("batches", keys)
    return keys[0]


@pytest.fixture
def materialize_batch(instance, resources, batch):
    def run(assets=(blob_inventory, wavelet_hashes), partition_key=batch):
        result = dg.materialize(list(assets), partition_key=partition_key, instance=instance, resources=resources)
        assert result.success
        return result

    return run
