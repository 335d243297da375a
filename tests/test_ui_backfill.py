"""A month of stock_bars_1m backfilled from the Dagster UI, clicked in a real browser.

``dagster dev`` (webserver and daemon, ``scripts/dev``) against the local Alpaca server and the
test services' ClickHouse endpoint; headless Chromium (Debian's, driven by Playwright) opens the
asset, picks 2024-07-01...2024-07-31 in the launch dialog and clicks "Launch backfill". The
daemon runs it (the backfill policy makes the 22 sessions one run). Done twice: the re-run
leaves the same rows, checksums and lake files, and no second copy of any bar.

Once the first backfill's run has succeeded, a check's page shows its description and the
partition it judged; then the second backfill is launched, and while the daemon picks it up the
browser opens one partition of the first: it shows that session's own row count (the
warehouse's, not the run's total), its time range and its chart, drawn inline. With
QUANT_SCREENSHOTS=1 the pages are saved to docs/img/ (the README shows them)."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
from datetime import date
from pathlib import Path

import pytest

from quant_assets.quality_checks import DESCRIPTIONS
from quant_dev.alpaca_sim import process
from quant_dev.processes import free_port
from quant_resources.lake import LakeResource
from tests.dagster_dev import Dev, dagster_dev
from tests.live_helpers import drop, fresh_warehouse
from tests.test_historical_alpaca import KEYS, fingerprint

# dagster dev, two month backfills and the browser: minutes on a loaded machine.
pytestmark = [pytest.mark.xdist_group("dagster_dev"), pytest.mark.timeout(900)]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium as root, on a machine without the internet: no sandbox, no background traffic.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BACKFILLS = """query { partitionBackfillsOrError {
  ... on PartitionBackfills { results { id status numPartitions } } } }"""
# Two symbols are enough to prove a month's backfill one run, repeatable (five took 150 s).
SYMBOLS = "SPY,QQQ"
DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
RUN_DONE = {"SUCCESS", "FAILURE", "CANCELED"}


@contextlib.contextmanager
def chromium():
    """One headless Chromium for every page step of a test (a launch costs seconds)."""
    from playwright.sync_api import expect as see
    from playwright.sync_api import sync_playwright

    see.set_options(timeout=60_000)  # a loaded machine renders the UI slowly
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def launch_backfill_in_browser(browser, dev: Dev, asset: str, partitions: str, expect: int) -> None:
    from playwright.sync_api import expect as see

    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        page.set_default_timeout(60_000)
        page.goto(f"{dev.base}/assets/{asset}")
        materialize = page.get_by_role("button", name="Materialize…")
        see(materialize).to_be_enabled()
        materialize.click()
        # The schema was migrated outside this instance: the UI asks before going on.
        confirm = page.get_by_role("button", name="Confirm")
        dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
        see(confirm.or_(dialog)).to_be_visible()
        if confirm.is_visible():
            confirm.click()
        dialog.get_by_text("Show all partitions").click()
        selection = dialog.get_by_placeholder("ex: ", exact=False)
        selection.fill(partitions)
        selection.press("Enter")
        see(dialog.get_by_text(f"{expect} partitions", exact=True)).to_be_visible()
        dialog.get_by_role("button", name="Launch backfill").click()
        see(dialog).to_be_hidden()
    finally:
        page.close()


DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"


def small_screenshot(target, path: Path, scale: float = 0.75) -> None:
    """A page or an element (a Locator) as a WebP at ``scale`` and modest quality, through
    Chromium's own capture (Playwright saves PNG or JPEG only): the README's pictures stay
    small, several times smaller than a PNG."""
    page = getattr(target, "page", target)
    if page is target:
        box = {"x": 0, "y": 0, **page.viewport_size}
    else:
        target.scroll_into_view_if_needed()
        box = target.bounding_box()  # in the viewport; the capture's clip is in the document
        left, top = page.evaluate("[window.scrollX, window.scrollY]")
        box = {**box, "x": box["x"] + left, "y": box["y"] + top}
    options = {"format": "webp", "quality": 60, "clip": {**box, "scale": scale}}
    session = page.context.new_cdp_session(page)
    try:
        shot = session.send("Page.captureScreenshot", {**options, "captureBeyondViewport": True})
    finally:
        session.detach()
    path.write_bytes(base64.b64decode(shot["data"]))


def ui_page(browser, dev: Dev, path: str):
    """A new page of the shared Chromium on ``path`` of the UI (close it when done)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.set_default_timeout(60_000)
    page.goto(f"{dev.base}{path}")
    return page


def see_check(browser, dev: Dev, shots: Path) -> None:
    """A check of stock_bars_1m shows its description and the partition it judged (read
    between the runs: while one runs, its evaluation shows as in progress)."""
    from playwright.sync_api import expect as see

    path = "/assets/stock_bars_1m?view=checks&checkDetail=regular_minutes_complete"
    page = ui_page(browser, dev, path)
    try:
        description = DESCRIPTIONS["regular_minutes_complete"]
        see(page.get_by_text(description).first).to_be_visible()
        see(page.get_by_text("Partition", exact=True)).to_be_visible()
        see(page.get_by_text(re.compile(r"^2024-07-\d\d$")).first).to_be_visible()
        see(page.get_by_text(re.compile(r"^Loading"))).to_have_count(0)
        small_screenshot(page, shots / "check.webp")
    finally:
        page.close()


def see_partition_and_graph(browser, dev: Dev, warehouse, day: str, shots: Path) -> None:
    """The partition ``day`` of stock_bars_1m shows its own counts and chart, and the asset
    graph its group; screenshots go to ``shots``."""
    from playwright.sync_api import expect as see

    rows = warehouse.scalar(
        "SELECT count() FROM bars_1m FINAL WHERE session_date = {d:Date}",
        {"d": date.fromisoformat(day)},
    )
    page = ui_page(browser, dev, f"/assets/stock_bars_1m?view=partitions&partition={day}")
    try:
        metadata = page.locator("table").filter(has_text="first_ts")

        def value(label: str):
            return metadata.locator("tr").filter(has=page.get_by_text(label, exact=True))

        see(value("rows")).to_contain_text(f"{rows}")
        see(value("first_ts")).to_contain_text(f"{day}T")
        see(value("preview")).to_contain_text("ts UTC")
        chart = page.get_by_role("img", name=f"SPY {day}")
        see(chart).to_be_visible()
        see(value("chart")).to_contain_text(f"SPY · {day}")
        # The data: URI was drawn (a broken image has no natural size).
        assert chart.evaluate("img => img.complete && img.naturalWidth") == 300
        small_screenshot(metadata, shots / "partition-chart.webp")

        page.goto(f"{dev.base}/locations/quant/asset-groups/historical/lineage")
        see(page.get_by_text("option_bars_1m").first).to_be_visible()
        see(page.get_by_text(re.compile(r"^Loading"))).to_have_count(0)
        small_screenshot(page, shots / "asset-graph.webp")
    finally:
        page.close()


def new_backfill(dev: Dev, known: set[str]) -> str | None:
    """The id of a backfill not in ``known`` (the one just launched), once the UI lists it."""
    results = dev.query(BACKFILLS)["partitionBackfillsOrError"]["results"]
    return next((b["id"] for b in results if b["id"] not in known), None)


def backfill_ran(dev: Dev, backfill: str) -> list[dict] | None:
    """The runs of ``backfill`` once every one of them has ended."""
    runs = dev.runs(**{"dagster/backfill": backfill})
    return runs if runs and all(r["status"] in RUN_DONE for r in runs) else None


def backfill_done(dev: Dev, backfill: str) -> dict | None:
    results = dev.query(BACKFILLS)["partitionBackfillsOrError"]["results"]
    found = next(b for b in results if b["id"] == backfill)
    return found if found["status"] in DONE else None


def test_month_backfill_launched_from_the_ui_is_repeatable(tmp_path, clickhouse_url):
    assert os.path.exists(CHROMIUM), "make test installs Debian's chromium (scripts/test-services)"
    warehouse = fresh_warehouse(clickhouse_url)
    lake = LakeResource(url=f"file://{tmp_path / 'lake'}")
    env = {
        **os.environ,
        **KEYS,
        "QUANT_EQUITY_SOURCE": "alpaca",
        "QUANT_EQUITY_SYMBOLS": SYMBOLS,
        "QUANT_HOME": str(tmp_path / "home"),
        "CLICKHOUSE_URL": warehouse.resolved_url,
        "LAKE_URL": lake.url,
    }
    env.pop("NATS_URL", None)
    try:
        with process.running("--page-limit", "10000") as sim:
            env["ALPACA_DATA_URL"] = sim.url
            log = tmp_path / "dagster-dev.log"
            with dagster_dev(env, free_port(), log) as dev, chromium() as browser:
                dev.wait("the webserver answers", lambda: dev.query("{ version }"), 180)
                # What the community sign-up prompt's Skip button does, once per instance.
                dev.query("mutation { setNuxSeen }")
                prints, backfills = [], []
                shots = DOCS_IMG if os.environ.get("QUANT_SCREENSHOTS") else tmp_path
                for attempt in range(2):
                    if attempt == 1:
                        see_check(browser, dev, shots)
                    launch_backfill_in_browser(
                        browser, dev, "stock_bars_1m", "[2024-07-01...2024-07-31]", expect=22
                    )
                    backfill = dev.wait(
                        f"backfill {attempt + 1} is listed",
                        lambda: new_backfill(dev, set(backfills)),
                        60,
                    )
                    backfills.append(backfill)
                    if attempt == 1:
                        # The first backfill's partition is read while the daemon picks up
                        # the second (it looks every 30 s) and its run starts.
                        see_partition_and_graph(browser, dev, warehouse, "2024-07-02", shots)
                    runs = dev.wait(
                        f"the run of backfill {attempt + 1} ends",
                        lambda b=backfill: backfill_ran(dev, b),
                        420,
                    )
                    # One run: the backfill policy batches up to 25 sessions.
                    assert [r["status"] for r in runs] == ["SUCCESS"], runs
                    prints.append(fingerprint(warehouse, lake))
                for attempt, backfill in enumerate(backfills):
                    done = dev.wait(
                        f"backfill {attempt + 1} completes",
                        lambda b=backfill: backfill_done(dev, b),
                        120,
                    )
                    runs = dev.runs(**{"dagster/backfill": backfill})
                    assert done["status"] in {"COMPLETED", "COMPLETED_SUCCESS"}, (done, runs)
                    assert done["numPartitions"] == 22
                    assert [r["status"] for r in runs] == ["SUCCESS"], runs  # still one run
    finally:
        drop(warehouse)
    (rows, physical, files), again = prints
    assert again == prints[0]
    assert rows[0] == physical  # the re-run replaced the slice: no second copy remains
    assert len(files) == 22 and sum(files.values()) == rows[0]
    assert rows[0] > 22 * 2 * 390  # two symbols, every regular minute at least
