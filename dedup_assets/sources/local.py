"""A local folder as a blob source."""

from __future__ import annotations

import os
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from dedup_assets.sources import BlobChangedError, BlobInfo


def _etag(stat: os.stat_result) -> str:
    # Like a web server's weak ETag: size and modification time change with the content.
    return f"{stat.st_size:x}-{stat.st_mtime_ns:x}"


_ESCAPED_BYTE = re.compile(rb"\\x([0-9a-f]{2})")


def stored_name(relative: str) -> str:
    """A path as the inventory holds it. File names are bytes on Linux; one that is not
    UTF-8 (a Latin-1 'café' from an old archive) comes from `os` with surrogates, which no
    Parquet string can hold: its undecodable bytes are written as \\xNN ('caf\\xe9.jpg')."""
    try:
        relative.encode("utf-8")
        return relative
    except UnicodeEncodeError:
        return os.fsencode(relative).decode("utf-8", "backslashreplace")


def file_system_name(name: str) -> str:
    """The path `stored_name` was made from: \\xNN back to bytes where that gives a name
    that is not UTF-8 (so no valid name is ever read as escaped)."""
    if "\\x" not in name:
        return name
    raw = _ESCAPED_BYTE.sub(lambda match: bytes([int(match.group(1), 16)]), name.encode("utf-8"))
    try:
        raw.decode("utf-8")
        return name
    except UnicodeDecodeError:
        return os.fsdecode(raw)


class LocalFolderSource:
    supports_tags = False  # files have no blob index tags; quarantine copies instead
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()

    def describe(self) -> str:
        return str(self.root)

    def iter_blobs(self) -> Iterator[BlobInfo]:
        """Every visible regular file under the root, in name order.

        Hidden files and folders (a leading '.') are skipped: copy tools write their
        partial files that way. Symlinks are not followed.
        """
        if not self.root.is_dir():
            raise FileNotFoundError(f"image source folder does not exist: {self.root}")
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                if filename.startswith("."):
                    continue
                path = Path(dirpath) / filename
                try:
                    stat = path.lstat()
                except FileNotFoundError:
                    continue  # deleted while listing; it never existed for this batch
                if not path.is_file() or path.is_symlink():
                    continue
                yield BlobInfo(
                    name=stored_name(path.relative_to(self.root).as_posix()),
                    size=stat.st_size,
                    etag=_etag(stat),
                    last_modified=datetime.fromtimestamp(stat.st_mtime, tz=timezone.utc),
                )

    def _resolve(self, name: str) -> Path:
        literal = self.root / name
        path = (literal if literal.exists() else self.root / file_system_name(name)).resolve()
        if not path.is_relative_to(self.root):
            raise PermissionError(f"blob name escapes the source root: {name!r}")
        return path

    def read_bytes(self, name: str, expected_etag: str | None = None) -> bytes:
        return self.read_head(name, -1, expected_etag)

    def read_head(self, name: str, length: int, expected_etag: str | None = None) -> bytes:
        """The first `length` bytes (-1: all)."""
        path = self._resolve(name)
        with open(path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            if expected_etag is not None and _etag(stat) != expected_etag:
                raise BlobChangedError(
                    "blob changed since it was inventoried; its new version gets its own batch"
                )
            return handle.read(length)

    # Actions on duplicates (dedup_assets.actions). None of them deletes anything.

    def check_quarantine(self, quarantine: str) -> None:
        destination = Path(quarantine).resolve()
        if destination.is_relative_to(self.root):
            raise ValueError(f"the quarantine folder {destination} lies inside the scanned folder {self.root}: "
                             "its copies would be scanned as new images")

    def quarantine_target(self, quarantine: str, name: str) -> str:
        return str(Path(quarantine).resolve() / name)

    def copy_to(self, name: str, target: str, expected_etag: str | None = None) -> None:
        path = self._resolve(name)
        if expected_etag is not None and _etag(path.stat()) != expected_etag:
            raise BlobChangedError("file changed since the decision; left alone")
        # A file whose stored name is escaped keeps its own name in the quarantine too.
        destination = Path(file_system_name(target)) if path.name != Path(name).name else Path(target)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)
