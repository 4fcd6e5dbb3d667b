import ctypes
import platform
import resource
import threading

import pytest

from dedup_assets.hash_stage import ThumbnailUploads, _worker_pool, hash_blobs
from dedup_assets.ledger import _to_frame
from dedup_assets.sources import SOURCE_DOWN_IN_A_ROW, SourceUnavailableError
from dedup_assets.sources.local import LocalFolderSource
from dedup_assets.storage import StorageLayout, data_storage_options
from dedup_assets_tests.crashing_source import CrashingFolderSource
from dedup_assets_tests.fault_proxy import FaultProxy


def test_a_worker_killed_by_one_file_fails_only_that_file(image_folder, layout):
    names = sorted(p.name for p in image_folder.iterdir())
    culprit = names[5]
    source = CrashingFolderSource(image_folder, crash_on={culprit})
    result = hash_blobs(source, _to_frame(source.iter_blobs()), layout, workers=2)
    assert [f["blob_name"] for f in result.failures] == [culprit]
    assert "crashed" in result.failures[0]["reason"]
    assert sorted(result.hashes["blob_name"]) == sorted(set(names) - {culprit})


class RefusingFolderSource(LocalFolderSource):
    """Refuses chosen blobs as a storage service refusing access would. Injected: Azure's
    attribute-based access conditions can refuse single blobs, and Azurite has none (an
    expired SAS refusing everything is tested against Azurite, test_azure_pipeline.py)."""

    def __init__(self, root, refuse: set[str]):
        super().__init__(root)
        self.refuse = refuse

    def read_bytes(self, name, expected_etag=None):
        if name in self.refuse:
            raise SourceUnavailableError(f"downloading {name} failed: access refused (AuthorizationFailure)")
        return super().read_bytes(name, expected_etag)


def test_a_refused_blob_is_recorded_but_refusals_in_a_row_stop_the_batch(image_folder, layout):
    names = sorted(p.name for p in image_folder.iterdir())
    source = RefusingFolderSource(image_folder, refuse={names[3], names[9]})
    result = hash_blobs(source, _to_frame(source.iter_blobs()), layout, workers=2)
    assert [f["blob_name"] for f in result.failures] == [names[3], names[9]]
    assert result.hashes.height == len(names) - 2

    source = RefusingFolderSource(image_folder, refuse=set(names[4:4 + SOURCE_DOWN_IN_A_ROW]))
    with pytest.raises(SourceUnavailableError, match=f"{SOURCE_DOWN_IN_A_ROW} downloads in a row failed"):
        hash_blobs(source, _to_frame(source.iter_blobs()), layout, workers=2)
    # A batch smaller than that, refused whole, stops too.
    source = RefusingFolderSource(image_folder, refuse=set(names))
    with pytest.raises(SourceUnavailableError, match="2 downloads in a row failed"):
        hash_blobs(source, _to_frame(source.iter_blobs()).head(2), layout, workers=2)


class DownloadingFolderSource(LocalFolderSource):
    """A folder read as the stage reads a remote source (downloads on threads of the stage's
    process), noting at each read how many blobs had been started."""

    is_remote = True
    download_concurrency = 16

    def __init__(self, root):
        super().__init__(root)
        self.started = 0
        self.reads: list[tuple[int, int]] = []  # (blobs started before, blobs hashed before)
        self.hashed = 0
        self.lock = threading.Lock()

    def read_bytes(self, name, expected_etag=None):
        with self.lock:
            self.reads.append((self.started, self.hashed))
            self.started += 1
        return super().read_bytes(name, expected_etag)


def test_downloads_held_at_once_stay_within_the_byte_budget(image_folder, layout, monkeypatch):
    from dedup_assets import hash_stage

    source = DownloadingFolderSource(image_folder)
    inventory = _to_frame(source.iter_blobs())
    sizes = inventory["size"].to_list()
    budget = 3 * sorted(sizes)[len(sizes) // 2]
    monkeypatch.setattr(hash_stage, "DOWNLOAD_BUDGET", budget)
    result = hash_blobs(source, inventory, layout, workers=2,
                        on_progress=lambda done, _: setattr(source, "hashed", done))
    assert result.hashes.height == len(sizes)
    # Held as a read starts: the blobs started and not yet hashed, this one included;
    # over the budget only when it is alone (one blob always goes through).
    held = [(sum(sizes[hashed:started + 1]), started == hashed) for started, hashed in source.reads]
    assert all(total <= budget or alone for total, alone in held)
    assert max(started + 1 - hashed for started, hashed in source.reads) >= 2  # still concurrent


def page_faults_reusing_one_block(size: int = 512 << 10, rounds: int = 20) -> int:
    """Page faults of allocating (through libc), filling and freeing one block, again and again."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(ctypes.c_void_p(block))
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc allocator settings")
def test_hash_workers_reuse_their_heap_for_an_images_blocks(image_folder, layout, monkeypatch):
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    pages = (512 << 10) // resource.getpagesize()
    with _worker_pool(2, LocalFolderSource(image_folder), layout) as pool:
        in_a_worker = pool.submit(page_faults_reusing_one_block).result()
    # The block's pages faulted in once, then reused (mapped alone, as a long run's
    # process keeps blocks from 128 KB up, each round would fault them in afresh).
    assert in_a_worker < 2 * pages


@pytest.fixture
def refusing_azure(azurite, container, tmp_path):
    """A data root on Azurite behind a proxy that can refuse uploads (403): a fault the
    emulator cannot produce on request."""
    proxy = FaultProxy(azurite.port)
    connection = azurite.connection_string.replace(f":{azurite.port}/", f":{proxy.port}/")
    layout = StorageLayout(tmp_path / "home", f"az://{container.container_name}/data",
                           data_storage_options(connection_string=connection))
    yield layout, proxy
    proxy.close()


def test_thumbnails_not_stored_are_named_and_the_rest_are_stored(refusing_azure):
    layout, proxy = refusing_azure
    uploads = ThumbnailUploads(layout, chunk=5)
    proxy.faults = [(403, None)] * 7  # the whole round of five, then the first two alone
    files = {f"thumbnails/{i}.jpg": bytes([i]) * 10 for i in range(5)}
    for key, data in files.items():
        uploads.add(key, data)
    failed = uploads.finish()
    assert sorted(failed) == ["thumbnails/0.jpg", "thumbnails/1.jpg"]
    assert all(reason.startswith("thumbnail not stored: ") and "Forbidden" in reason for reason in failed.values())
    stored = layout.read_existing(files)
    assert stored == {key: data for key, data in files.items() if key not in failed}


def test_a_blob_whose_thumbnail_cannot_be_stored_is_a_failure_not_a_row(image_folder, refusing_azure):
    layout, proxy = refusing_azure
    source = LocalFolderSource(image_folder)
    inventory = _to_frame(source.iter_blobs())
    proxy.faults = [(403, None)] * 1000
    result = hash_blobs(source, inventory, layout, workers=2)
    assert result.hashes.height == 0
    assert sorted(f["blob_name"] for f in result.failures) == sorted(inventory["blob_name"])
    assert {f["reason"] for f in result.failures} == {"thumbnail not stored: HttpResponseError: Forbidden"}
    proxy.faults = []
    result = hash_blobs(source, inventory, layout, workers=2)
    assert not result.failures and result.hashes.height == inventory.height
    thumbnails = result.hashes["thumbnail"].unique().to_list()
    assert set(layout.read_thumbnails(thumbnails)) == set(thumbnails)


def test_a_large_blob_that_is_not_an_image_is_told_from_its_head_and_not_read_whole(image_folder, layout):
    from dedup_assets.hash_worker import READ_HEAD_FIRST_ABOVE
    from PIL import Image

    size = READ_HEAD_FIRST_ABOVE + 2**20
    with open(image_folder / "holiday.mp4", "wb") as video:  # sparse: no disk space taken
        video.write(b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41")
        video.truncate(size)
    Image.new("RGB", (2600, 2300), (90, 140, 200)).save(image_folder / "master.tif")  # 17.9 MB, an image
    assert (image_folder / "master.tif").stat().st_size > READ_HEAD_FIRST_ABOVE
    for source in (LocalFolderSource(image_folder), DownloadingFolderSource(image_folder)):  # workers; threads
        result = hash_blobs(source, _to_frame(source.iter_blobs()), layout, workers=2)
        assert [(f["blob_name"], f["reason"]) for f in result.failures] == [(
            "holiday.mp4", "not a recognised image format (it looks like an MP4 or QuickTime video); told from "
            f"its first 64 KB, the rest of its {size / 2**20:,.0f} MB not read")]
        assert "master.tif" in set(result.hashes["blob_name"])
