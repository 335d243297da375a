"""A real ``dagster dev`` (webserver and daemon, started by ``scripts/dev``) for tests, and its
GraphQL API: what the UI itself calls."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from quant_dev.processes import Child, tail

ROOT = Path(__file__).resolve().parents[1]
RUNS = """query($filter: RunsFilter!) { runsOrError(filter: $filter) {
  ... on Runs { results { runId status tags { key value } } } } }"""


class Dev:
    def __init__(self, port: int, log: Path) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.url = f"{self.base}/graphql"
        self.log = log

    def query(self, text: str, **variables) -> dict:
        body = json.dumps({"query": text, "variables": variables}).encode()
        request = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())["data"]

    def runs(self, job: str | None = None, **tags: str) -> list[dict]:
        run_filter: dict = {"tags": [{"key": k, "value": v} for k, v in tags.items()]}
        if job is not None:
            run_filter["pipelineName"] = job
        return self.query(RUNS, filter=run_filter)["runsOrError"]["results"]

    def wait(self, what: str, check, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                found = check()
            except OSError:  # the webserver is still starting
                found = None
            if found:
                return found
            time.sleep(1)
        raise AssertionError(f"{what}: not within {timeout:.0f} s\n{tail(self.log, 60)}")


@contextlib.contextmanager
def dagster_dev(env: dict[str, str], port: int, log: Path) -> Iterator[Dev]:
    """``scripts/dev`` with ``env`` (DAGSTER_PORT=port), stopped whole on exit."""
    env = {**env, "DAGSTER_PORT": str(port)}
    env.pop("DAGSTER_HOME", None)  # scripts/dev keeps the instance in QUANT_HOME/dagster
    log.unlink(missing_ok=True)
    # Its own process group, stopped whole: dagster dev's code servers can outlive it until
    # their heartbeat times out.
    command = [str(ROOT / "scripts" / "dev")]
    child = Child("scripts/dev", command, None, environ=env, log=log, cwd=ROOT, group=True)
    try:
        yield Dev(port, log)
    finally:
        child.stop(90)


@contextlib.contextmanager
def dagster_webserver(instance: Path, port: int, log: Path) -> Iterator[Dev]:
    """Only ``dagster-webserver`` (no daemon, no code server: ``--empty-workspace``) on the
    instance folder ``instance``: enough for the pages of runs executed elsewhere, such as a
    terminal ``quant live``'s (their plans are in the instance). Not waited for: it starts
    while the caller goes on (``Dev.wait`` until it answers); stopped whole on exit."""
    command = [str(Path(sys.executable).with_name("dagster-webserver"))]
    command += ["-h", "127.0.0.1", "-p", str(port), "--empty-workspace"]
    env = {**os.environ, "DAGSTER_HOME": str(instance)}
    child = Child("dagster-webserver", command, None, environ=env, log=log, cwd=ROOT, group=True)
    try:
        yield Dev(port, log)
    finally:
        child.stop(30)


def terminate_in_browser(dev: Dev, browser, run_id: str, *texts: str, when=None) -> None:
    """What a user does: the run page's Terminate button, then the dialog's "Terminate 1 run";
    then the page shows the run Canceled, and ``texts``, and no stack trace. ``when``: called
    once the button shows, the click waits for it (the page renders meanwhile)."""
    from playwright.sync_api import expect as see

    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        page.set_default_timeout(60_000)  # a loaded machine renders the UI slowly
        page.goto(f"{dev.base}/runs/{run_id}")
        terminate = page.get_by_role("button", name=re.compile(r"\bTerminate$"))
        see(terminate).to_be_enabled()
        if when is not None:
            when()
        terminate.click()
        dialog = page.get_by_role("dialog").filter(has_text="Terminate runs")
        dialog.get_by_role("button", name="Terminate 1 run").click()
        see(page.get_by_text("Canceled", exact=True).first).to_be_visible(timeout=180_000)
        for text in texts:
            see(page.get_by_text(text).first).to_be_visible()
        see(page.get_by_text("Stack Trace")).to_have_count(0)
    except BaseException:
        page.screenshot(path=dev.log.with_suffix(".png"))
        raise
    finally:
        page.close()
