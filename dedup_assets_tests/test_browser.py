"""What a person sees, in a real browser: the Dagster webserver started on loopback from
workspace.yaml over a finished `dedup run`, and the HTML gallery opened from disk.
Debian's Chromium, driven by Playwright; screenshots are kept as test artifacts."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from dedup_assets.settings import PROJECT_ROOT
from dedup_assets_tests.processes import BIN, free_port, start, stop

CHROMIUM = os.environ.get("DEDUP_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("DEDUP_TEST_ARTIFACTS", PROJECT_ROOT / "test-artifacts"))
# No first-run work and no background connections: this machine's network is closed.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CASCADE = ["blob_inventory", "wavelet_hashes", "color_candidates", "embeddings", "verified_pairs", "clusters"]


@pytest.fixture
def finished_run(tmp_path, image_folder) -> dict:
    """`dedup run` over two duplicate groups: its environment, for the webserver too."""
    env = dict(os.environ)
    # The webserver reads DAGSTER_HOME before loading the code: set it, so the UI shows
    # this run's instance (materialized partitions, checks).
    env.update({"DEDUP_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path / "home" / "dagster"),
                "DEDUP_SOURCE": str(image_folder)})
    done = subprocess.run([f"{BIN}/dedup", "run", "--no-progress"], env=env, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return env


@pytest.fixture
def webserver(finished_run, tmp_path):
    port = free_port()
    log = open(tmp_path / "webserver.log", "wb")
    server = start([f"{BIN}/dagster-webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                   finished_run, log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"{url}/server_info", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"webserver did not start: {(tmp_path / 'webserver.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield url
    stop(server)
    log.close()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: `make test` installs Debian's chromium"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield chromium.new_page(viewport={"width": 1600, "height": 1000})
        chromium.close()


def dismiss_welcome(page) -> None:
    # A fresh instance greets its first visitor with a newsletter dialog.
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.click(timeout=5000)
    except Exception:
        pass


def test_the_asset_graph_shows_the_cascade_and_the_gallery_marks_kept_images(webserver, finished_run, browser):
    from playwright.sync_api import expect

    page = browser
    page.goto(f"{webserver}/locations/dedup_assets/asset-groups/cascade")
    dismiss_welcome(page)
    for name in CASCADE:
        expect(page.get_by_text(name, exact=True).first).to_be_visible(timeout=60_000)
    # The run's batch shows as materialized (one partition of the cascade's assets).
    expect(page.get_by_text("1 partition", exact=True).first).to_be_visible()
    # Lineage continues into the review group.
    expect(page.get_by_text("keep_drop_manifest", exact=True).first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "asset_graph.png"))

    gallery = Path(finished_run["DEDUP_HOME"]) / "review" / "index.html"
    page.goto(gallery.as_uri())
    expect(page.locator("#summary")).to_contain_text("2 duplicate cluster(s)")
    page.get_by_role("link", name="clusters 1–2").click()
    cluster = page.locator("section.cluster").first
    expect(cluster).to_be_visible()
    kept = cluster.locator("figure.member.kept")
    expect(kept).to_have_count(1)
    expect(kept.locator(".badge")).to_have_text("KEEP")
    expect(cluster.locator("figure.member.dropped .badge").first).to_have_text("DROP")
    # The thumbnails load from disk, relative to the page.
    widths = cluster.locator("img").evaluate_all("images => images.map(i => i.complete ? i.naturalWidth : 0)")
    assert widths and min(widths) > 0
    expect(cluster.locator("table")).to_contain_text("decided by")
    page.screenshot(path=str(ARTIFACTS / "gallery.png"))
