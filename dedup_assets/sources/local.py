"""A local folder as a blob source."""

from __future__ import annotations

import os
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from dedup_assets.settings import SetupError
from dedup_assets.sources import BlobChangedError, BlobInfo


def _etag(stat: os.stat_result) -> str:
    # Like a web server's weak ETag: size and modification time change with the content.
    return f"{stat.st_size:x}-{stat.st_mtime_ns:x}"


LOCAL_PAGE_SIZE = 5000  # as many as an Azure listing page

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


class SourceFolderMissing(SetupError, FileNotFoundError):
    """The folder named as the source is not there (a typo, an unmounted share)."""


NOT_LISTED_EXAMPLES = 3


class LocalFolderSource:
    supports_tags = False  # files have no blob index tags; quarantine copies instead
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        # What listings passed over that a person may take for images: kind -> (count, first names).
        self.not_listed: dict[str, tuple[int, list[str]]] = {}

    def describe(self) -> str:
        return str(self.root)

    @property
    def identity(self) -> str:
        return str(self.root)

    def iter_blobs(self) -> Iterator[BlobInfo]:
        """Every visible regular file under the root, in path order.

        Hidden files and folders (a leading '.') are skipped: copy tools write their
        partial files that way. Symlinks are not followed (a link and the file it leads to
        would be offered as copies of each other, and a link may lead out of the root);
        they and special files are counted in `not_listed`, for `not_listed_note`.
        """
        for page, _ in self.list_pages():
            yield from page

    def list_pages(self, resume: str | None = None,
                   page_size: int | None = None) -> Iterator[tuple[list[BlobInfo], str | None]]:
        """`iter_blobs` in pages, each with the token that resumes the listing after it (the
        last path listed; None after the last page), so that a listing can stop and go on."""
        if not self.root.is_dir():
            raise SourceFolderMissing(f"image source folder does not exist: {self.root}")
        page_size = page_size or LOCAL_PAGE_SIZE
        page: list[BlobInfo] = []
        for entry in self._files(self.root, tuple(resume.split("/")) if resume else ()):
            try:
                stat = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted while listing; it never existed for this batch
            relative = Path(entry.path).relative_to(self.root).as_posix()
            page.append(BlobInfo(name=stored_name(relative), size=stat.st_size, etag=_etag(stat),
                                 last_modified=datetime.fromtimestamp(stat.st_mtime, tz=timezone.utc)))
            if len(page) == page_size:
                yield page, relative
                page = []
        yield page, None

    def _files(self, directory: Path, after: tuple[str, ...]) -> Iterator[os.DirEntry]:
        """Visible regular files under `directory` in path order (each folder's entries by
        name, a subfolder's files in its place), from the first path after `after`."""
        try:
            with os.scandir(directory) as scan:
                entries = sorted((e for e in scan if not e.name.startswith(".")), key=lambda e: e.name)
        except FileNotFoundError:
            if directory == self.root:
                raise SourceFolderMissing(f"image source folder does not exist: {self.root}") from None
            return  # removed while listing: its files are gone
        except PermissionError as error:
            # Not skipped: its files would look deleted, and leave their duplicate groups.
            raise PermissionError(f"cannot list {error.filename}: permission denied; the listing "
                                  "stops rather than take its files for deleted") from None
        for entry in entries:
            if after and entry.name < after[0]:
                continue
            within = after[1:] if after and entry.name == after[0] else ()
            if entry.is_dir(follow_symlinks=False):
                yield from self._files(Path(entry.path), within)
            elif after and entry.name == after[0]:
                continue  # listed on the page before
            elif entry.is_file(follow_symlinks=False):
                yield entry
            else:
                self._pass_over(entry)

    def _pass_over(self, entry: os.DirEntry) -> None:
        kind = "symbolic link" if entry.is_symlink() else "FIFO, socket or device file"
        count, examples = self.not_listed.get(kind, (0, []))
        relative = stored_name(Path(entry.path).relative_to(self.root).as_posix())
        if len(examples) < NOT_LISTED_EXAMPLES:
            examples = examples + [relative + ("/" if entry.is_dir() else "")]
        self.not_listed[kind] = (count + 1, examples)

    def not_listed_note(self) -> str | None:
        """One line on what the listings so far passed over, or None: without it a folder
        of links to the pictures (a NAS's folders linked into one) would find nothing, silently."""
        if not self.not_listed:
            return None
        parts = [f"{count:,} {kind if count == 1 else kind.replace('link', 'links').replace(' file', ' files')} "
                 f"(e.g. {', '.join(examples)})"
                 for kind, (count, examples) in sorted(self.not_listed.items())]
        advice = (": links are not followed (a link and its file would be offered as copies of each other); "
                  "give the folder they lead to as the source" if "symbolic link" in self.not_listed else "")
        return f"not listed under {self.root}: {'; '.join(parts)}{advice}"

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
