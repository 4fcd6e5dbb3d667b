"""Azurite, the real Azure Blob Storage emulator (npm package, pinned in package-lock.json),
started on a free loopback port for the tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from dedup_assets.settings import PROJECT_ROOT

ACCOUNT = "devstoreaccount1"
# Azurite's published development key (not a secret); the tests still check it never leaks.
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
BINARY = PROJECT_ROOT / "node_modules" / ".bin" / "azurite-blob"


class Azurite:
    def __init__(self, workdir: Path, persistent: bool = False):
        self.workdir = workdir
        self.persistent = persistent
        self.port: int | None = None
        self.process: subprocess.Popen | None = None

    def start(self) -> "Azurite":
        if not BINARY.exists():
            raise RuntimeError(f"{BINARY} is missing: run `npm ci` (make test does)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        storage = ["--location", str(self.workdir / "data")] if self.persistent else ["--inMemoryPersistence"]
        log = open(self.workdir / "azurite.log", "ab")
        self.process = subprocess.Popen(
            [str(BINARY), "--blobHost", "127.0.0.1", "--blobPort", str(self.port or 0), *storage,
             "--skipApiVersionCheck", "--loose", "--disableTelemetry"],
            stdout=subprocess.PIPE, stderr=log, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.process.stdout.readline().decode()
            match = re.search(r"listens on http://127\.0\.0\.1:(\d+)", line)
            if match:
                self.port = int(match.group(1))
                return self
            if not line and self.process.poll() is not None:
                break
        raise RuntimeError(f"Azurite did not start; see {self.workdir / 'azurite.log'}")

    def stop(self, graceful: bool = False) -> None:
        """Kill it, or (graceful) let it flush its on-disk metadata and exit, as a service
        restart would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM if graceful else signal.SIGKILL)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.process = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
                f"BlobEndpoint={self.url};")

    def container(self, name: str):
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(self.connection_string, api_version="2025-11-05")
        client = service.get_container_client(name)
        if not client.exists():
            client.create_container()
        return client
