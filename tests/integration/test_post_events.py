"""POST /events on a real server: events an app sends over HTTP are acknowledged by the broker,
reach the stream and land in the event store once each; a request with a bad event names it
and sends nothing."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from pyspark.sql import SparkSession

from streamrec.bench.server_process import ServerProcess
from streamrec.schemas import events as E
from streamrec.schemas.config import Config
from streamrec.streaming.job import run_stream

pytestmark = pytest.mark.integration

T = 1_700_000_000_000


def _post(url: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _event(n: int) -> dict[str, Any]:
    return {
        E.EVENT_ID: f"h{n}",
        E.USER_ID: f"u{n % 3}",
        E.ITEM_ID: f"i{n % 5}",
        E.EVENT_TYPE: "play",
        E.EVENT_TIME: T + n,
        E.VALUE: 42.0,
    }


def test_events_posted_over_http_reach_the_stream_and_the_event_store(
    spark: SparkSession, isolated_cfg: Config
) -> None:
    cfg = isolated_cfg
    with ServerProcess(cfg) as server:
        url = f"{server.url}/events"
        status, body = _post(url, json.dumps([_event(n) for n in range(20)]).encode())
        assert (status, body) == (202, {"accepted": 20, "topic": cfg.kafka.events_topic})
        assert _post(url, json.dumps(_event(20)).encode())[0] == 202  # one event alone
        bad = {**_event(21), E.VALUE: -5}
        status, body = _post(url, json.dumps([_event(22), bad]).encode())
        assert status == 400 and body["invalid"][0]["index"] == 1
        assert "value" in body["invalid"][0]["reason"]
        assert _post(url, b"{not json")[0] == 400

    run_stream(cfg, available_now=True, spark=spark)
    stored = sorted(r[E.EVENT_ID] for r in spark.read.parquet(cfg.paths.event_store).collect())
    # every accepted event once; nothing of the refused request (h22 came with a bad one)
    assert stored == sorted(f"h{n}" for n in range(21))
