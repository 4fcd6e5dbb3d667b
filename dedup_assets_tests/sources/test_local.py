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


def test_links_and_special_files_passed_over_are_named_not_silent(tmp_path):
    """A folder of links to the pictures (a NAS's folders linked into one) lists nothing:
    said in one line, with how many, a few names, and what to do."""
    elsewhere = tmp_path / "nas"
    elsewhere.mkdir()
    (elsewhere / "a.jpg").write_bytes(b"1")
    root = tmp_path / "root"
    (root / "albums").mkdir(parents=True)
    (root / "albums" / "real.jpg").write_bytes(b"2")
    (root / "2019").symlink_to(elsewhere)
    (root / "albums" / "b.jpg").symlink_to(elsewhere / "a.jpg")
    (root / "albums" / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    os.mkfifo(root / "albums" / "pipe.jpg")
    source = LocalFolderSource(root)
    assert source.not_listed_note() is None
    assert [b.name for b in source.iter_blobs()] == ["albums/real.jpg"]
    assert source.not_listed_note() == (
        f"not listed under {root}: 1 FIFO, socket or device file (e.g. albums/pipe.jpg); 3 symbolic links "
        "(e.g. 2019/, albums/b.jpg, albums/gone.jpg): links are not followed (a link and its file would be "
        "offered as copies of each other); give the folder they lead to as the source")
    assert LocalFolderSource(elsewhere).not_listed_note() is None


def test_a_file_changed_after_listing_is_reported(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"first")
    source = LocalFolderSource(tmp_path)
    (listed,) = list(source.iter_blobs())
    (tmp_path / "a.jpg").write_bytes(b"second version")
    os.utime(tmp_path / "a.jpg", (1, 1))
    with pytest.raises(BlobChangedError):
        source.read_bytes("a.jpg", expected_etag=listed.etag)


def test_a_missing_source_folder_is_a_clear_error(tmp_path):
    from dedup_assets.settings import SetupError

    with pytest.raises(FileNotFoundError, match="does not exist") as raised:
        list(LocalFolderSource(tmp_path / "nowhere").iter_blobs())
    assert isinstance(raised.value, SetupError)  # `dedup` prints it without a traceback


@pytest.mark.parametrize("address", ["s3://bucket/photos?X-Amz-Signature=SECRETSIG", "gs://bucket", "ftp://host/x"])
def test_an_address_of_another_storage_is_refused_not_taken_for_a_folder(address):
    from dedup_assets.settings import SetupError
    from dedup_assets.sources.factory import open_source

    with pytest.raises(SetupError, match="this tool reads a folder, or Azure Blob Storage as az://") as raised:
        open_source(address)
    assert "SECRETSIG" not in str(raised.value)


def test_a_file_name_that_is_not_utf8_is_listed_escaped_and_read_back(tmp_path, layout):
    from datetime import timedelta

    from dedup_assets.ledger import BatchLedger

    root = os.fsencode(tmp_path / "root")
    os.makedirs(root + b"/\xe9t\xe9")
    files = {b"caf\xe9.jpg": b"latin-1 name", b"\xe9t\xe9/x.jpg": b"latin-1 folder",
             "caf\\xe9 (2).jpg".encode(): b"a backslash in a UTF-8 name", "café.jpg".encode(): b"utf-8 name"}
    for name, content in files.items():
        with open(root + b"/" + name, "wb") as handle:
            handle.write(content)
    source = LocalFolderSource(os.fsdecode(root))
    listed = list(source.iter_blobs())
    names = sorted(b.name for b in listed)
    assert names == sorted(["caf\\xe9.jpg", "caf\\xe9 (2).jpg", "café.jpg", "\\xe9t\\xe9/x.jpg"]), names
    # Every name is text a Parquet file holds (a surrogate had failed the whole listing) ...
    later = max(b.last_modified for b in listed) + timedelta(minutes=5)
    (key,) = BatchLedger(layout).register(listed, max_batch_size=10, now=later)
    assert sorted(BatchLedger(layout).read_manifest(key)["blob_name"]) == names
    # ... and reads the file it was listed from.
    contents = {b.name: source.read_bytes(b.name, expected_etag=b.etag) for b in listed}
    assert sorted(contents.values()) == sorted(files.values())
    assert contents["caf\\xe9.jpg"] == b"latin-1 name"
    assert contents["caf\\xe9 (2).jpg"] == b"a backslash in a UTF-8 name"
    # A quarantine copy keeps the file's own name.
    quarantine = tmp_path / "quarantine"
    source.copy_to("caf\\xe9.jpg", source.quarantine_target(str(quarantine), "caf\\xe9.jpg"))
    assert os.listdir(os.fsencode(quarantine)) == [b"caf\xe9.jpg"]


def test_a_listing_resumes_after_the_last_path_of_a_page(tmp_path):
    for name in ["a.jpg", "b/c.jpg", "b/d/e.jpg", "b/f.jpg", "g.jpg", "h/.partial.jpg", "h/i.jpg"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    source = LocalFolderSource(tmp_path)
    everything = ["a.jpg", "b/c.jpg", "b/d/e.jpg", "b/f.jpg", "g.jpg", "h/i.jpg"]
    assert [b.name for b in source.iter_blobs()] == everything  # path order
    pages = list(source.list_pages(page_size=2))
    assert [[b.name for b in page] for page, _ in pages] == [everything[:2], everything[2:4], everything[4:], []]
    assert [token for _, token in pages] == ["b/c.jpg", "b/f.jpg", "h/i.jpg", None]
    # From any token, exactly the paths after it, even once that path is gone.
    for position, token in enumerate(everything):
        assert [b.name for page, _ in source.list_pages(token) for b in page] == everything[position + 1:]
    (tmp_path / "b" / "d" / "e.jpg").unlink()
    assert [b.name for page, _ in source.list_pages("b/d/e.jpg") for b in page] == everything[3:]


def test_an_unreadable_folder_stops_the_listing_instead_of_looking_deleted(tmp_path, monkeypatch):
    """Injected: the tests run as root, whom no folder's permissions refuse."""
    (tmp_path / "open").mkdir()
    (tmp_path / "open" / "a.jpg").write_bytes(b"x")
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "b.jpg").write_bytes(b"x")
    scandir = os.scandir

    def refusing(path):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    with pytest.raises(PermissionError, match="cannot list .*locked: permission denied"):
        list(LocalFolderSource(tmp_path).iter_blobs())


def test_results_inside_the_scanned_folder_are_refused(tmp_path):
    from dedup_assets.settings import SetupError
    from dedup_assets.sources.factory import check_results_outside
    from dedup_assets.storage import StorageLayout

    source = LocalFolderSource(tmp_path / "photos")
    (tmp_path / "photos").mkdir()
    check_results_outside(source, StorageLayout(tmp_path / "results"))  # beside it: fine
    for layout, setting in [(StorageLayout(tmp_path / "photos"), "DEDUP_HOME"),
                            (StorageLayout(tmp_path / "photos" / "out"), "DEDUP_HOME"),
                            (StorageLayout(tmp_path / "home", str(tmp_path / "photos" / "data")), "DEDUP_DATA_URL")]:
        with pytest.raises(SetupError, match=f"{setting}=.* lies inside the source folder"):
            check_results_outside(source, layout)
