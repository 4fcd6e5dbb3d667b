"""A folder source whose reads kill the worker process for chosen files: a decoder crash
(segfault, OOM kill) is a fault no well-formed test image produces, so it is injected."""

import os

from dedup_assets.sources.local import LocalFolderSource


class CrashingFolderSource(LocalFolderSource):
    def __init__(self, root, crash_on: set[str]):
        super().__init__(root)
        self.crash_on = crash_on
        self.parent = os.getpid()

    def read_bytes(self, name, expected_etag=None):
        if name in self.crash_on and os.getpid() != self.parent:
            os._exit(139)  # as a segfaulting decoder would die
        return super().read_bytes(name, expected_etag)
