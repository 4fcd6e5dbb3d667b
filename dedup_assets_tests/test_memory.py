"""The allocator settings that keep a long run's memory flat, observed in fresh processes
through glibc's own report (malloc_info lists one <heap> per arena) and the resident size."""

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc allocator settings")

ARENAS_AFTER_THREADED_WORK = """
import ctypes, os, sys, tempfile, threading
if sys.argv[1] == "import":
    import dedup_assets  # noqa: F401
libc = ctypes.CDLL(None)

def work():
    blocks = [ctypes.create_string_buffer(4096) for _ in range(2000)]
    barrier.wait()  # all threads allocate at once: glibc hands out arenas by contention
    del blocks

barrier = threading.Barrier(12)
threads = [threading.Thread(target=work) for _ in range(12)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
with tempfile.TemporaryFile("w+") as report:
    libc.fdopen.restype = ctypes.c_void_p
    stream = libc.fdopen(os.dup(report.fileno()), b"w")
    libc.malloc_info(0, ctypes.c_void_p(stream))
    libc.fclose(ctypes.c_void_p(stream))
    report.seek(0)
    print(report.read().count("<heap nr="))
"""


def arenas(*args: str, env: dict | None = None) -> int:
    output = subprocess.run([sys.executable, "-c", ARENAS_AFTER_THREADED_WORK, *args], env=env,
                            capture_output=True, text=True, check=True).stdout
    return int(output.strip())


def test_importing_the_package_caps_malloc_arenas_at_one_per_core(monkeypatch):
    from dedup_assets.vision.cores import usable_cores

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    cap = max(2, usable_cores())
    assert arenas("import") <= cap
    assert arenas("plain") > cap  # glibc's default allows 8 per core: the cap is what limits


def test_an_operators_malloc_settings_win(monkeypatch):
    from dedup_assets.memory import fix_mmap_threshold, limit_malloc_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "1")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert limit_malloc_arenas() is None
    assert fix_mmap_threshold() is None


# Allocating through libc itself (not Python's allocator), and the resident size.
LIBC_AND_RESIDENT_MB = """
import ctypes, sys
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p

def resident_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20
"""

HOLES_RETURNED_AT_FREE = LIBC_AND_RESIDENT_MB + """
if sys.argv[1] == "import":
    import dedup_assets  # noqa: F401
libc.free(ctypes.c_void_p(libc.malloc(8 << 20)))  # a large block freed: glibc's threshold rises past it
blocks = [libc.malloc(256 << 10) for _ in range(800)]  # 200 MB in blocks of 256 KB
for block in blocks:
    ctypes.memset(block, 1, 256 << 10)
held = resident_mb()
for block in blocks[::2]:  # every other one: those kept in between pin each hole
    libc.free(ctypes.c_void_p(block))
print(held - resident_mb())
"""


def returned_at_free_mb(*args: str) -> float:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    return float(subprocess.run([sys.executable, "-c", HOLES_RETURNED_AT_FREE, *args], env=env,
                                capture_output=True, text=True, check=True).stdout)


def test_importing_the_package_keeps_large_blocks_mapped_alone_so_free_returns_them():
    # glibc's default: the 256 KB blocks come from the heap, and the holes stay resident.
    assert returned_at_free_mb("plain") < 10
    assert returned_at_free_mb("import") > 90  # of the 100 MB freed


FREED_BUT_HELD = LIBC_AND_RESIDENT_MB + """
from dedup_assets.memory import release_freed_memory
blocks = [libc.malloc(64 * 1024) for _ in range(4000)]  # ~250 MB below the mmap threshold
for block in blocks:
    ctypes.memset(block, 1, 64 * 1024)
# Free nine blocks in ten: the tenth pins each hole inside the heap, where free() never
# returns pages (it only shrinks the heap's top), whatever the heap held before.
for index, block in enumerate(blocks):
    if index % 10:
        libc.free(ctypes.c_void_p(block))
held = resident_mb()
release_freed_memory()
print(held - resident_mb())
"""


def test_release_freed_memory_returns_what_free_kept():
    returned_mb = float(subprocess.run([sys.executable, "-c", FREED_BUT_HELD], capture_output=True,
                                       text=True, check=True).stdout)
    assert returned_mb > 150  # of the ~225 MB freed in holes


TOP_KEPT_UNTIL_RELEASED = LIBC_AND_RESIDENT_MB + """
import dedup_assets  # noqa: F401
blocks = [libc.malloc(64 << 10) for _ in range(32)]  # 2 MB at the heap's top, each block below the mmap threshold
for block in blocks:
    ctypes.memset(block, 1, 64 << 10)
held = resident_mb()
for block in reversed(blocks):
    libc.free(ctypes.c_void_p(block))
at_free = held - resident_mb()
libc.malloc_trim(0)  # what release_freed_memory does after each heavy stage
print(at_free, held - resident_mb())
"""


def returned_mb(env: dict) -> tuple[float, float]:
    """MB given back to the kernel when 2 MB at the heap's top are freed, and after a trim."""
    output = subprocess.run([sys.executable, "-c", TOP_KEPT_UNTIL_RELEASED], env=env, capture_output=True,
                            text=True, check=True).stdout
    at_free, after_trim = output.split()
    return float(at_free), float(after_trim)


def test_freed_memory_at_an_arenas_top_is_kept_for_the_next_allocation_until_released():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    at_free, after_trim = returned_mb(env)
    assert at_free < 0.5  # kept: the next allocations do not fault its pages in again
    assert after_trim > 1.5  # and given back by the trim after a stage
    # glibc's 128 KB, where it stays once the mmap threshold is fixed, unless raised:
    at_free, _ = returned_mb({**env, "MALLOC_TRIM_THRESHOLD_": str(128 << 10)})
    assert at_free > 1.5


def test_an_operators_trim_threshold_wins(monkeypatch):
    from dedup_assets.memory import raise_trim_threshold

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert raise_trim_threshold() is None
