"""Where the images come from: a local folder now, Azure Blob Storage later.

A source lists blobs with the properties the ledger needs and reads one blob's bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterator, Protocol


@dataclass(frozen=True)
class BlobInfo:
    name: str  # relative to the source root, '/'-separated
    size: int
    etag: str
    last_modified: datetime  # UTC
    content_md5: str | None = None  # hex, when the store records one
    # Stored where it cannot be read until restored (Azure's Archive tier, rehydrating too).
    offline: bool = False


class BlobChangedError(RuntimeError):
    """The blob's content changed since it was inventoried."""


class BlobOfflineError(RuntimeError):
    """The blob is stored offline (an archive tier): unreadable until it is restored."""


class SourceUnavailableError(RuntimeError):
    """The source, not the blob, failed: access refused (an expired SAS token, a missing
    role) or no answer from the service. Not to be recorded against every blob: a run of
    them (SOURCE_DOWN_IN_A_ROW) stops the work, which runs again later."""


# Failures in a row, each a SourceUnavailableError, that stop a stage: one alone may be a
# single blob's (Azure's attribute-based access conditions can refuse one), a run of them
# is the source's. Recorded per blob, a SAS token expiring mid-run would mark every later
# blob of the corpus failed.
SOURCE_DOWN_IN_A_ROW = 8


class SourceDownRun:
    """Counts the source's failures in a row among `total` requests; raises
    SourceUnavailableError ("N <what> in a row failed, <then>. The last: …") when they make
    a run: SOURCE_DOWN_IN_A_ROW of them, or all `total`."""

    def __init__(self, total: int, what: str, then: str):
        self.total, self.what, self.then = total, what, then
        self.in_a_row = 0

    def note(self, source_down: str | None) -> None:
        """After each request: the source's failure (its reason), or None."""
        self.in_a_row = self.in_a_row + 1 if source_down else 0
        if source_down and self.in_a_row in (SOURCE_DOWN_IN_A_ROW, self.total):
            raise SourceUnavailableError(f"{self.in_a_row} {self.what} in a row failed, {self.then}. "
                                         f"The last: {source_down}")


class BlobSource(Protocol):
    def iter_blobs(self) -> Iterator[BlobInfo]: ...

    def list_pages(self, resume: str | None = None) -> Iterator[tuple[list[BlobInfo], str | None]]:
        """The listing in pages, each with the token that resumes it after that page (None
        after the last): a listing too long for one sensor tick goes on at the next."""

    def read_bytes(self, name: str, expected_etag: str | None = None) -> bytes: ...

    def read_head(self, name: str, length: int, expected_etag: str | None = None) -> bytes:
        """The first `length` bytes (all of a shorter blob)."""

    def describe(self) -> str: ...

    def not_listed_note(self) -> str | None:
        """One line on entries the listings so far passed over that a person may take for
        images (a folder's symbolic links), or None."""
