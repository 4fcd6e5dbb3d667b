from dedup_assets.hash_stage import hash_blobs
from dedup_assets.ledger import _to_frame
from dedup_assets_tests.crashing_source import CrashingFolderSource


def test_a_worker_killed_by_one_file_fails_only_that_file(image_folder, layout):
    names = sorted(p.name for p in image_folder.iterdir())
    culprit = names[5]
    source = CrashingFolderSource(image_folder, crash_on={culprit})
    result = hash_blobs(source, _to_frame(source.iter_blobs()), layout, workers=2)
    assert [f["blob_name"] for f in result.failures] == [culprit]
    assert "crashed" in result.failures[0]["reason"]
    assert sorted(result.hashes["blob_name"]) == sorted(set(names) - {culprit})
