import os

import pytest

from dedup_assets.sources import BlobChangedError
from dedup_assets.sources.local import LocalFolderSource


def test_lists_visible_files_recursively_with_relative_names(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.jpg").write_bytes(b"1")
    (tmp_path / "top.png").write_bytes(b"22")
    (tmp_path / ".partial.jpg").write_bytes(b"copying")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "y.jpg").write_bytes(b"3")
    names = [(b.name, b.size) for b in LocalFolderSource(tmp_path).iter_blobs()]
    assert sorted(names) == [("a/b/x.jpg", 1), ("top.png", 2)]


def test_refuses_names_and_links_that_escape_the_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    (root / "link.jpg").symlink_to(secret)
    source = LocalFolderSource(root)
    assert [b.name for b in source.iter_blobs()] == []  # links are not listed
    for name in ("../secret.txt", "link.jpg", "/etc/passwd", "a/../../secret.txt"):
        with pytest.raises(PermissionError, match="escapes the source root"):
            source.read_bytes(name)


def test_a_file_changed_after_listing_is_reported(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"first")
    source = LocalFolderSource(tmp_path)
    (listed,) = list(source.iter_blobs())
    (tmp_path / "a.jpg").write_bytes(b"second version")
    os.utime(tmp_path / "a.jpg", (1, 1))
    with pytest.raises(BlobChangedError):
        source.read_bytes("a.jpg", expected_etag=listed.etag)


def test_a_missing_source_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(LocalFolderSource(tmp_path / "nowhere").iter_blobs())
