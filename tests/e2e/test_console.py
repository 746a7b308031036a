"""The operator page in a real browser: the stack, the stream, a batch run and `streamrec
serve`, then /console in headless Chromium (Debian's `chromium`, driven by Playwright; no
browser download). Screenshots go to .streamrec/artifacts/ (git-ignored)."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright
from pyspark.sql import SparkSession

from streamrec.batch.job import run_batch
from streamrec.bench.server_process import ServerProcess
from streamrec.console import MAX_ENTRIES
from streamrec.producer.invalid import KINDS, RawRecord, malformed
from streamrec.producer.run import publish_events
from streamrec.producer.synthetic import SyntheticWorld
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import with_overrides
from streamrec.streaming.job import run_stream
from streamrec.streaming.metrics import LISTS, BatchMetrics
from tests.conftest import REPO
from tests.support import read_recent

pytestmark = pytest.mark.e2e

API_KEY = "console-key-Ω"
ARTIFACTS = REPO / ".streamrec" / "artifacts"
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium from the system (scripts/setup installs Debian's `chromium`)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "no `chromium` on PATH: run scripts/setup (it installs Debian's chromium)"
    with sync_playwright() as playwright:
        # --no-sandbox: Chromium refuses to sandbox itself as root (CI containers, this box).
        chromium = playwright.chromium.launch(
            executable_path=path, headless=True, args=["--no-sandbox"]
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[tuple[Page, list[str]]]:
    """A page at 1400x1000 and the console errors it logs (messages and uncaught errors)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"{message.text} at {message.location}")

    tab.on("console", on_console)
    tab.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    yield tab, errors
    context.close()


def screenshot(tab: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    tab.screenshot(path=str(path), full_page=True)
    return path


def _events_with_bad_ones(
    world: SyntheticWorld,
) -> tuple[list[dict], list[object], list[RawRecord]]:  # type: ignore[type-arg]
    """2,000 events of the last 40 minutes or so and, spread among them, one malformed record of
    each of 8 kinds (times near now: the lag charts show what a live stream would)."""
    # The world's usual events (its draws depend on the start time), moved to end near now.
    events = list(world.events(2000))
    shift = int(time.time() * 1000) - 2_400_000 - events[0][E.EVENT_TIME]
    events = [{**e, E.EVENT_TIME: e[E.EVENT_TIME] + shift} for e in events]
    bad = [malformed(kind, events[i * 17], i) for i, kind in enumerate(KINDS[:8])]
    records: list[object] = list(events)
    for i, record in enumerate(bad):
        records.insert(i * 31 + 5, record)
    return events, records, bad


def test_the_page_shows_the_live_stream_models_segments_and_a_users_list(
    isolated_cfg: Config, spark: SparkSession, redis_client: redis.Redis, page
) -> None:  # type: ignore[no-untyped-def]
    tab, errors = page
    cfg = with_overrides(
        isolated_cfg,
        segments=dict(enabled=True),
        streaming=dict(max_offsets_per_trigger=700),
        serve=dict(api_key=API_KEY, workers=1),
    )
    world = SyntheticWorld(users=80, items=60, segments=3, seed=5, new_user_share=0.0)
    events, records, bad = _events_with_bad_ones(world)
    publish_events(cfg, records)  # type: ignore[arg-type]
    run_stream(cfg, available_now=True, spark=spark)
    result = run_batch(cfg, spark=spark)
    assert result.promoted
    # Fresh events for one user: the stream's next micro-batch gives them a stream list.
    active, quiet = sorted({e[E.USER_ID] for e in events})[:2]
    later = max(max(e[E.EVENT_TIME] for e in events) + 1, int(time.time() * 1000))
    fresh = [
        {
            E.EVENT_ID: f"fresh-{n}",
            E.USER_ID: active,
            E.ITEM_ID: world.item_ids[n],
            E.EVENT_TYPE: "play",
            E.EVENT_TIME: later + n,
            E.VALUE: 100.0,
        }
        for n in range(3)
    ]
    publish_events(cfg, fresh)
    run_stream(cfg, available_now=True, spark=spark)
    lists_batches = [
        m for m in read_recent(redis_client, cfg.redis.key_prefix) if m["query"] == LISTS
    ]
    assert len(lists_batches) >= 4

    with ServerProcess(cfg) as server:
        tab.goto(f"{server.url}/console")
        # The server has a key: the page asks for it before fetching anything.
        tab.wait_for_selector("#key-form:not([hidden])")
        tab.fill("#key", API_KEY)
        tab.click("#key-form button")

        # The charts plot every micro-batch of the lists query, one point each.
        caption = tab.wait_for_selector(
            f"#stream-caption[data-batches='{len(lists_batches)}']", timeout=WAIT_MS
        )
        assert caption is not None
        for chart in ("chart-lag", "chart-rate", "chart-duration"):
            assert tab.get_attribute(f"#{chart}", "data-points") == str(len(lists_batches))
        newest_batch = max(int(m["batch"]) for m in lists_batches)
        assert f"–{newest_batch};" in caption.inner_text()
        assert tab.locator("#chart-lag polyline").count() == 3  # p50, p95, p99
        assert "keeping up" in tab.inner_text("#keeping-up")
        # The dead letters' reasons, newest first, from the topic itself.
        tab.wait_for_selector("#dead-letters tbody tr", timeout=WAIT_MS)
        reasons = tab.locator("#dead-letters tbody tr td:nth-child(2)").all_inner_texts()
        assert sorted(reasons) == sorted(E.parse_event(b.value)[1] for b in bad)

        # The live model, its data and its gate; the segments with their plots.
        row = tab.wait_for_selector(f"tr[data-version='{result.version}']", timeout=WAIT_MS)
        assert row is not None and "live" in row.inner_text() and "promoted" in row.inner_text()
        assert f"{result.events} events" in row.inner_text()
        assert tab.inner_text("#live-model") == f"live model {result.version}"
        k = json.loads((Path(cfg.paths.model_store) / result.version / "meta.json").read_text())[
            "segments"
        ]["k"]
        tab.wait_for_function(f"document.querySelectorAll('#segment-table tbody tr').length == {k}")
        tab.wait_for_function("document.querySelectorAll('#plots img').length == 5")
        tab.wait_for_function(
            "[...document.querySelectorAll('#plots img')].every(i => i.naturalWidth > 0)"
        )

        # The lookup box: the active user's fresh list from the stream, under the live version.
        tab.fill("#user-id", active)
        tab.click("#user-form button")
        tab.wait_for_selector("#user-source", timeout=WAIT_MS)
        assert tab.inner_text("#user-source") == L.SOURCE_STREAM
        assert tab.inner_text("#user-model") == result.version
        # Their streaming state counts every event of theirs, the fresh ones too.
        theirs = sum(e[E.USER_ID] == active for e in events) + len(fresh)
        assert f"stream state: {theirs} events" in tab.inner_text("#user-result")
        shot = screenshot(tab, "console.png")
        tab.fill("#user-id", quiet)
        tab.click("#user-form button")
        tab.wait_for_function(
            f"document.querySelector('#user-source').textContent == '{L.SOURCE_BATCH}'"
        )
        # Similar items of an item of their list, by clicking it.
        first = tab.locator("#user-result a.item").first
        item = first.get_attribute("data-item")
        first.click()
        tab.wait_for_function(
            f"document.querySelector('#item-result p')?.textContent.startsWith('like {item}')"
        )
        assert tab.locator("#item-result li").count() > 0
        screenshot(tab, "console-lookup.png")
    assert shot.stat().st_size > 10_000
    assert errors == []


def _seed_metrics(client: redis.Redis, key: str, n: int, now_ms: int) -> None:
    """``n`` lists micro-batches, 20 ms apart, ending now (explicit ids: XADD's own would all
    be one millisecond)."""
    for start in range(0, n, 10_000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(n, start + 10_000)):
            metrics = BatchMetrics(
                LISTS, i, 500, i % 3, 0.2, 800.0, users=40, lag_ms={"p50_ms": 900.0 + i % 50}
            )
            pipe.xadd(key, metrics.fields(), id=f"{now_ms - (n - i) * 20}-0")  # type: ignore[arg-type]
        pipe.execute()


def test_a_hundred_thousand_micro_batches_stay_a_bounded_payload(
    isolated_cfg: Config, redis_client: redis.Redis, page
) -> None:  # type: ignore[no-untyped-def]
    tab, errors = page
    key = L.stream_metrics_key(isolated_cfg.redis.key_prefix)
    now_ms = int(redis_client.time()[0]) * 1000
    _seed_metrics(redis_client, key, 100_000, now_ms)
    assert redis_client.xlen(key) == 100_000
    with ServerProcess(with_overrides(isolated_cfg, serve=dict(workers=1))) as server:
        with urllib.request.urlopen(f"{server.url}/console/api/stream?points=300") as response:
            raw = response.read()
        body = json.loads(raw)
        # The newest MAX_ENTRIES of the window are read and merged into at most 300 points.
        assert (body["total_entries"], body["entries"], body["truncated"]) == (
            100_000,
            MAX_ENTRIES,
            True,
        )
        assert len(body["lists"]["t_ms"]) <= 300 and sum(body["lists"]["batches"]) == MAX_ENTRIES
        assert body["lists"]["batch_last"][-1] == 99_999
        assert len(raw) < 100_000, len(raw)

        tab.goto(f"{server.url}/console")  # no key on this server: no key asked
        tab.wait_for_selector("#chart-lag[data-points]", timeout=WAIT_MS)
        points = int(tab.get_attribute("#chart-lag", "data-points") or 0)
        assert points == len(body["lists"]["t_ms"])
        assert f"{MAX_ENTRIES} of 100000 entries read" in tab.inner_text("#stream-caption")
        assert tab.is_hidden("#key-form")
        screenshot(tab, "console-100k.png")
    assert errors == []
