"""Where each kind of output lives, on local disk or on Azure Blob Storage, and atomic writes.

Two roots:
- `home` (`DEDUP_HOME`), always a local folder: the DuckDB catalog, locks, the review
  folder (gallery, manifest), the model cache, the Dagster instance.
- the data root (`DEDUP_DATA_URL`, default: `home`): what every step of every run reads
  and writes — Parquet partitions, the batch ledger, thumbnails. Set it to
  `az://<container>/<prefix>` and workers on other machines share it through
  fsspec/adlfs (docs/deployment.md).

Every asset partition is one Parquet file, `parquet/<asset>/<partition>.parquet`. On disk a
write goes to a hidden temporary file in the same directory and is renamed into place; on
Azure a blob upload is committed whole by the service. Either way a reader (or the
DuckDB views, whose globs only match `*.parquet`) never sees a partial file, and
concurrent runs on different partitions never touch the same file.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import shutil
from pathlib import Path
from typing import Iterable, Iterator

import fsspec
import fsspec.asyn
import polars as pl
from fsspec.implementations.local import LocalFileSystem

from dedup_assets.local_files import replaced_atomically, thumbnail_key, write_bytes_atomic

FAILED_BLOBS = "failed_blobs"
# `offline`: stored where it cannot be read until restored (an archive tier); added later:
# null in older partitions.
FAILED_BLOBS_SCHEMA = {"blob_name": pl.String, "stage": pl.String, "reason": pl.String, "offline": pl.Boolean}
REMOTE_FETCH_CHUNK = 256  # Parquet files held encoded at once when reading many
# Requests in flight at once on a remote data root. fsspec's `cat` and adlfs's `pipe`
# send their files one at a time (31 files/s behind 20 ms of latency); requests sent
# together reach ~180 files/s there (`bench/azure_io.py`).
REMOTE_CONCURRENCY = 32


class StorageLayout:
    def __init__(self, home: str | os.PathLike, data_url: str | None = None,
                 storage_options: dict | None = None):
        self.home = Path(home)
        self.data_url = str(data_url or self.home)
        # storage_options carry credentials: kept on the filesystem object only, never
        # in a repr, a path or a URL this class hands out.
        self.fs, root = fsspec.core.url_to_fs(self.data_url, **(storage_options or {}))
        self.is_local = isinstance(self.fs, LocalFileSystem)
        self.data_root = root.rstrip("/") or root
        self._protocol = "" if self.is_local else self.data_url.split("://", 1)[0]

    def __repr__(self) -> str:
        return f"StorageLayout(home={str(self.home)!r}, data_url={self.data_url!r})"

    # -- where things are (paths inside the data filesystem, '/'-separated) --------------

    def data_path(self, relative: str) -> str:
        return f"{self.data_root}/{relative}"

    @property
    def parquet_root(self) -> str:
        return self.data_path("parquet")

    @property
    def batches_dir(self) -> str:
        return self.data_path("batches")

    @property
    def review_dir(self) -> Path:
        """The gallery and the keep/drop manifest: what a person opens."""
        return self.home / "review"

    @property
    def catalog_path(self) -> Path:
        return self.home / "dedup.duckdb"

    def asset_dir(self, asset_name: str) -> str:
        return f"{self.parquet_root}/{asset_name}"

    def partition_path(self, asset_name: str, partition_key: str | None) -> str:
        return f"{self.asset_dir(asset_name)}/{partition_key or 'all'}.parquet"

    def failures_path(self, stage: str, partition_key: str) -> str:
        return f"{self.asset_dir(FAILED_BLOBS)}/{stage}/{partition_key}.parquet"

    thumbnail_key = staticmethod(thumbnail_key)

    def uri(self, path: str) -> str:
        """`path` as DuckDB reads it: a file path, or `az://...` through the registered fs."""
        return path if self.is_local else f"{self._protocol}://{path}"

    def register(self, con) -> None:
        """Let a DuckDB connection read the data root (views over `az://` globs)."""
        if not self.is_local:
            con.register_filesystem(self.fs)

    # -- reading and writing ---------------------------------------------------------

    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    def glob(self, pattern: str) -> list[str]:
        return sorted(self.fs.glob(pattern))

    def subdirectories(self, path: str) -> list[str]:
        if not self.fs.exists(path):
            return []
        return sorted(entry["name"].rstrip("/").rsplit("/", 1)[-1]
                      for entry in self.fs.ls(path, detail=True) if entry["type"] == "directory")

    def versions(self, directory: str, suffix: str = ".parquet") -> dict[str, str]:
        """Each file's version (its etag on a blob store, else size and modification
        time): a rewritten file gets a new one, so what is derived from a file can be
        kept under the version it was derived from."""
        if not self.fs.exists(directory):
            return {}
        found = {}
        for entry in self.fs.ls(directory, detail=True):
            if entry["type"] != "file" or not entry["name"].endswith(suffix):
                continue
            stamp = entry.get("etag") or entry.get("mtime") or entry.get("last_modified")
            found[entry["name"]] = hashlib.sha1(f"{entry['size']}-{stamp}".encode()).hexdigest()[:16]
        return found

    def read_bytes(self, path: str) -> bytes:
        return self.fs.cat_file(path)

    def read_many_bytes(self, paths: list[str], missing_ok: bool = False) -> dict[str, bytes]:
        """Several files at once: concurrent requests on Azure, plain reads on disk.
        missing_ok: a file that does not exist is left out of the answer, not an error."""
        found: dict[str, bytes] = {}
        for path, result in zip(paths, self._each(self.fs._cat_file if self._concurrent else self.fs.cat_file,
                                                  [(path,) for path in paths])):
            if isinstance(result, FileNotFoundError) and missing_ok:
                continue
            if isinstance(result, BaseException):
                raise result
            found[path] = result
        return found

    @property
    def _concurrent(self) -> bool:
        return not self.is_local and getattr(self.fs, "async_impl", False)

    def _each(self, call, arguments: list[tuple]) -> list:
        """`call(*args)` for each tuple, in order, an exception in place of a result:
        with an async filesystem (Azure) up to REMOTE_CONCURRENCY requests in flight on
        its event loop, otherwise one after another."""
        if not self._concurrent:
            results = []
            for args in arguments:
                try:
                    results.append(call(*args))
                except FileNotFoundError as missing:
                    # A cache's miss, the common failure: kept without its traceback, whose
                    # frames lead back to this one and its `results`, a cycle that held every
                    # file read with it (~50 MB of features per batch) until Python's next
                    # full collection.
                    results.append(missing.with_traceback(None))
                except Exception as error:
                    results.append(error)
            return results

        async def all_of_them():
            in_flight = asyncio.Semaphore(REMOTE_CONCURRENCY)

            async def one(args):
                async with in_flight:
                    return await call(*args)
            return await asyncio.gather(*(one(args) for args in arguments), return_exceptions=True)
        return fsspec.asyn.sync(self.fs.loop, all_of_them)

    def local_copies(self, directory: str, suffix: str = ".parquet") -> list[str]:
        """Local paths of the files in a data-root folder, in name order, for readers that
        make many small requests per file (DuckDB through fsspec: ~17 per Parquet file,
        `bench/azure_io.py`). On a remote data root each file is kept under
        `$DEDUP_HOME/.data_cache`, named by its version (etag), and only files that are
        new or changed since the last call are downloaded, together."""
        if self.is_local:
            return self.glob(f"{directory}/*{suffix}")
        try:
            entries = self.fs.ls(directory, detail=True, refresh=True)
        except FileNotFoundError:
            return []
        cache = self.home / ".data_cache" / directory.removeprefix(self.data_root).strip("/")
        wanted: dict[str, Path] = {}
        for entry in sorted(entries, key=lambda entry: entry["name"]):
            name = entry["name"].rsplit("/", 1)[-1]
            if entry["type"] != "file" or not name.endswith(suffix):
                continue
            version = re.sub(r"[^A-Za-z0-9_-]", "", str(entry.get("etag") or entry.get("last_modified") or entry["size"]))
            wanted[entry["name"]] = cache / name.removesuffix(suffix) / f"{version}{suffix}"
        missing = [remote for remote, local in wanted.items() if not local.exists()]
        for start in range(0, len(missing), REMOTE_FETCH_CHUNK):
            fetched = self.read_many_bytes(missing[start:start + REMOTE_FETCH_CHUNK], missing_ok=True)
            for remote, data in fetched.items():
                local = wanted[remote]
                write_bytes_atomic(data, local)
                for stale in local.parent.glob(f"*{suffix}"):  # earlier versions of this file
                    if stale != local:
                        stale.unlink(missing_ok=True)
        return [str(local) for local in wanted.values() if local.exists()]

    def read_thumbnails(self, relative_paths: list[str]) -> dict[str, bytes]:
        """Encoded thumbnails by their path relative to the data root, fetched together."""
        wanted = sorted(set(relative_paths))
        try:
            data = self.read_many_bytes([self.data_path(relative) for relative in wanted])
        except FileNotFoundError as error:
            raise FileNotFoundError(f"thumbnail missing: {error}") from error
        return {relative: data[self.data_path(relative)] for relative in wanted}

    def read_existing(self, relative_paths: Iterable[str]) -> dict[str, bytes]:
        """Files under the data root by relative path, fetched together; those that do
        not exist are left out of the answer (a cache's misses, not an error)."""
        by_path = {self.data_path(relative): relative for relative in sorted(set(relative_paths))}
        return {by_path[path]: data for path, data in self.read_many_bytes(list(by_path), missing_ok=True).items()}

    def write_many_bytes(self, files: dict[str, bytes]) -> None:
        """Files under the data root by relative path: concurrent uploads on Azure."""
        if self.is_local:
            for relative, data in files.items():
                write_bytes_atomic(data, Path(self.data_path(relative)))
            return
        pipe = self.fs._pipe_file if self._concurrent else self.fs.pipe_file
        for result in self._each(pipe, [(self.data_path(relative), data) for relative, data in files.items()]):
            if isinstance(result, BaseException):
                raise result

    def read_parquet(self, path: str, columns: list[str] | None = None) -> pl.DataFrame:
        if self.is_local:
            return pl.read_parquet(path, columns=columns)
        return pl.read_parquet(io.BytesIO(self.read_bytes(path)), columns=columns)

    def read_parquet_many(self, paths: Iterable[str], columns: list[str] | None = None,
                          file_stem_column: str | None = None) -> pl.DataFrame:
        """Files concatenated (an empty frame when there are none), optionally with a column
        naming each row's file (its name without `.parquet`)."""
        frames = []
        for path, frame in self.iter_parquet(paths, columns):
            if file_stem_column:
                stem = path.rsplit("/", 1)[-1].removesuffix(".parquet")
                frame = frame.with_columns(pl.lit(stem, dtype=pl.String).alias(file_stem_column))
            frames.append(frame)
        return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()

    def iter_parquet(self, paths: Iterable[str], columns: list[str] | None = None,
                     at_once: int = REMOTE_FETCH_CHUNK, where: pl.Expr | None = None
                     ) -> Iterator[tuple[str, pl.DataFrame]]:
        """(path, frame) for each file in order, only the rows `where` selects (if given),
        the `columns` it stores.
        On a remote data root `at_once` files are fetched together, the next group only
        when this one has been read (one round trip per file read 29 partitions/s behind
        20 ms of latency, grouped 107/s: `bench/azure_io.py`)."""
        def read(source) -> pl.DataFrame:
            scan = pl.scan_parquet(source)
            if where is not None:
                # Polars evaluates the filter's columns first and decodes the others only for
                # the rows kept: 6x faster when picking a few embeddings out of a partition.
                scan = scan.filter(where)
            if columns:
                # A column added to an asset later is missing from partitions written before.
                stored = scan.collect_schema()
                scan = scan.select([column for column in columns if column in stored])
            return scan.collect()

        paths = list(paths)
        if self.is_local:
            for path in paths:
                yield path, read(path)
            return
        for start in range(0, len(paths), at_once):
            group = paths[start:start + at_once]
            fetched = self.read_many_bytes(group)
            for path in group:
                yield path, read(io.BytesIO(fetched[path]))

    def write_parquet(self, frame: pl.DataFrame, path: str) -> None:
        if self.is_local:
            write_parquet_atomic(frame, Path(path))
            return
        buffer = io.BytesIO()
        frame.write_parquet(buffer)
        self.fs.pipe_file(path, buffer.getvalue())  # one upload: the service commits it whole

    def put_file(self, local: Path, path: str) -> None:
        """A file written locally (a large output) copied into the data root, streamed."""
        if self.is_local:
            with replaced_atomically(Path(path)) as tmp:
                shutil.copyfile(local, tmp)
        else:
            self.fs.put_file(str(local), path)

    def write_bytes(self, path: str, data: bytes) -> None:
        if self.is_local:
            write_bytes_atomic(data, Path(path))
        else:
            self.fs.pipe_file(path, data)

    def remove(self, paths: list[str], recursive: bool = False) -> None:
        """Files, or with `recursive` folders and all they hold, local or on Azure."""
        if paths:
            self.fs.rm(paths, recursive=recursive)

    def read_failures(self) -> pl.DataFrame:
        """Every stage's failures of every batch, with the batch; a column added later reads
        null in the files written before it."""
        schema = {**FAILED_BLOBS_SCHEMA, "batch": pl.String}
        paths = self.glob(self.failures_path("*", "*"))
        if not paths:
            return pl.DataFrame(schema=schema)
        if self.is_local:  # one scan: 3,000 batches' files in 0.3 s, one by one 3 s
            return pl.scan_parquet(paths, schema=schema, missing_columns="insert").collect()
        return pl.concat([pl.DataFrame(schema=schema), self.read_parquet_many(paths)], how="diagonal_relaxed")

    def write_failures(self, stage: str, partition_key: str, failures: list[dict]) -> int:
        """Replace this stage's failure table for a partition (empty when all succeeded)."""
        from dedup_assets.catalog import ensure_view  # the catalog builds on this module

        frame = pl.DataFrame(failures, schema=FAILED_BLOBS_SCHEMA).with_columns(
            pl.col("offline").fill_null(False), pl.lit(partition_key, dtype=pl.String).alias("batch")
        )
        self.write_parquet(frame, self.failures_path(stage, partition_key))
        ensure_view(self, FAILED_BLOBS)
        return frame.height


def data_storage_options(connection_string: str | None = None, account_name: str | None = None,
                         account_key: str | None = None, sas_token: str | None = None) -> dict:
    """adlfs options for an `az://` data root. With an account name and no key or SAS,
    adlfs signs in with DefaultAzureCredential (managed identity, workload identity, CLI).
    Listings are never cached: other workers add partitions all the time."""
    fresh = {"use_listings_cache": False}
    if connection_string:
        return {"connection_string": connection_string, **fresh}
    if account_name:
        options: dict = {"account_name": account_name, **fresh}
        if account_key:
            options["account_key"] = account_key
        elif sas_token:
            options["sas_token"] = sas_token
        else:
            options["anon"] = False
        return options
    return {}


def layout_from_environment() -> StorageLayout:
    """The layout the CLI and helper scripts use: the same variables the resources read."""
    env = os.environ.get
    return StorageLayout(env("DEDUP_HOME", "data"), env("DEDUP_DATA_URL") or None, data_storage_options(
        env("DEDUP_DATA_CONNECTION_STRING"), env("DEDUP_DATA_ACCOUNT_NAME"),
        env("DEDUP_DATA_ACCOUNT_KEY"), env("DEDUP_DATA_SAS_TOKEN")))


def _remove_leftovers(path: Path) -> None:
    # A writer killed mid-write (SIGKILL, OOM) leaves its hidden temporary file behind.
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        leftover.unlink(missing_ok=True)


def write_parquet_atomic(frame: pl.DataFrame, path: Path) -> None:
    _remove_leftovers(path)
    with replaced_atomically(path) as tmp:
        frame.write_parquet(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
