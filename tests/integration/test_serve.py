"""`streamrec serve` as a real process (a subprocess on a free port) against real Redis: the
routes, odd ids end to end, auth on and off, health and probes, metrics, JSON errors, idle
connections, the connection limit and the OpenAPI description."""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from streamrec.bench.server_process import ServerProcess
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import with_overrides
from tests.integration.test_lookup import ODD_IDS, OwnRedisServer, publish

pytestmark = pytest.mark.integration

API_KEY = "test-api-key-Ω-very-secret"


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any, Message]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, body, head = response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        status, body, head = exc.code, exc.read(), exc.headers
    text = body.decode("utf-8")
    return status, json.loads(text) if "json" in head["Content-Type"] else text, head


@pytest.fixture
def data(isolated_cfg: Config, redis_client: redis.Redis) -> Config:
    users = {uid: [f"item {n}/ü", "shared"] for n, uid in enumerate(ODD_IDS)}
    publish(
        redis_client,
        isolated_cfg,
        "v1",
        users=users,
        segment_of={"seg-only": 2, ODD_IDS[0]: 5},
        segment_lists={2: ["s2"]},
        popular=["p1", "p2"],
    )
    return isolated_cfg


@pytest.fixture
def server(data: Config) -> Iterator[str]:
    with ServerProcess(data) as process:
        yield process.url


def test_recommendations_for_ids_of_any_shape(server: str) -> None:
    for n, uid in enumerate(ODD_IDS):
        status, body, head = get(f"{server}/recommendations/{quote(uid, safe='')}?n=1")
        assert status == 200, (uid, body)
        assert head["Content-Type"] == "application/json; charset=utf-8"
        assert body["user_id"] == uid and body["source"] == "batch"
        assert body["items"] == [{"item_id": f"item {n}/ü", "score": 1.0}]
        assert body["model_version"] == "v1"
    status, body, _ = get(f"{server}/recommendations/{quote('z' * 257)}")
    assert status == 400 and "1 to 256" in body["error"]
    # Keys of other kinds are just ids that have no list: the popular list answers.
    for uid in ("../model:current", "m:v1:popular", "s:2", "{u:seg-only}", "seg-only}"):
        status, body, _ = get(f"{server}/recommendations/{quote(uid, safe='')}")
        assert (status, body["source"], body["segment"]) == (200, "popular", None), uid


def test_fallbacks_exclude_and_n(server: str) -> None:
    status, body, _ = get(f"{server}/recommendations/seg-only")
    assert (status, body["source"], body["segment"], body["items"][0]["item_id"]) == (
        200,
        "segment",
        2,
        "s2",
    )
    uid = quote(ODD_IDS[1], safe="")
    status, body, _ = get(f"{server}/recommendations/{uid}?exclude={quote('item 1/ü')}")
    assert [i["item_id"] for i in body["items"]] == ["shared"]
    excluded = f"exclude={quote('item 1/ü')}&exclude=shared&n=1"
    status, body, _ = get(f"{server}/recommendations/{uid}?{excluded}")
    assert (body["source"], [i["item_id"] for i in body["items"]]) == ("popular", ["p1"])
    for query, message in (("n=0", "n must"), ("n=x", "n must"), ("m=1", "unknown query")):
        status, body, _ = get(f"{server}/recommendations/u?{query}")
        assert status == 400 and message in body["error"]
    assert get(f"{server}/recommendations/a/b")[0] == 404
    assert get(f"{server}/elsewhere")[0] == 404


def test_fast_path_answers_as_the_declared_route(server: str) -> None:
    # ``n=2`` is the fast path's (RecommendationsFastPath); ``n=%2B2`` (+2) it leaves to the
    # declared FastAPI route, which reads it as 2: the answers must be the same, byte for byte.
    for uid in (*ODD_IDS, "seg-only", "never-seen"):
        path = f"{server}/recommendations/{quote(uid, safe='')}?exclude=shared&n="
        fast, routed = get(path + "2"), get(path + "%2B2")
        assert fast[:2] == routed[:2] and fast[1]["user_id"] == uid
        assert [(k, v) for k, v in fast[2].items() if k != "date"] == [
            (k, v) for k, v in routed[2].items() if k != "date"
        ]


def test_segments(server: str) -> None:
    status, body, _ = get(f"{server}/segments/{quote(ODD_IDS[0], safe='')}")
    assert (status, body) == (
        200,
        {"user_id": ODD_IDS[0], "model_version": "v1", "segment": 5, "probabilities": None},
    )
    assert get(f"{server}/segments/nobody")[1]["segment"] is None


def test_health_metrics_and_openapi(server: str) -> None:
    assert get(f"{server}/health")[:2] == (
        200,
        {"status": "ok", "redis": "ok", "model_version": "v1"},
    )
    for _ in range(3):
        get(f"{server}/recommendations/never-seen")
    get(f"{server}/recommendations/seg-only")
    get(f"{server}/recommendations/u?n=0")
    status, text, head = get(f"{server}/metrics")
    assert status == 200 and head["Content-Type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    route = ("route", "/recommendations/{user_id}")
    assert samples[("streamrec_http_requests_total", (("code", "200"), route))] == 4
    assert samples[("streamrec_http_requests_total", (("code", "400"), route))] == 1
    assert samples[("streamrec_http_request_duration_seconds_count", (route,))] == 5
    assert samples[("streamrec_http_request_duration_seconds_bucket", (("le", "+Inf"), route))] == 5
    assert samples[("streamrec_lookup_source_total", (("source", "popular"),))] == 3
    assert samples[("streamrec_lookup_source_total", (("source", "segment"),))] == 1
    status, doc, _ = get(f"{server}/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.1")
    # The operator page's routes are tested with it (tests/integration/test_console_api.py).
    assert {p for p in doc["paths"] if not p.startswith("/console/")} == {
        "/recommendations",
        "/recommendations/{user_id}",
        "/segments/{user_id}",
        "/similar/{item_id}",
        "/popular",
        "/events",
        "/health",
        "/livez",
        "/readyz",
        "/metrics",
    }


def test_every_error_is_json_and_counted(server: str) -> None:
    for method, path, status in (
        ("POST", "/recommendations/u", 405),
        ("DELETE", "/health", 405),
        ("GET", "/nowhere", 404),
        ("GET", "/recommendations/a/b", 404),
        ("GET", "/recommendations/%FF", 400),
        ("GET", "/recommendations/u?n=1000", 400),
    ):
        request = urllib.request.Request(f"{server}{path}", method=method)
        try:
            urllib.request.urlopen(request, timeout=10)
            raise AssertionError(f"{method} {path} answered 2xx")
        except urllib.error.HTTPError as exc:
            assert exc.code == status, (method, path)
            assert exc.headers["Content-Type"] == "application/json; charset=utf-8"
            assert json.loads(exc.read())["error"], (method, path)
            if status == 405:
                assert "GET" in exc.headers["Allow"]
    assert get(f"{server}/livez")[:2] == (200, {"status": "ok", "redis": "not asked"})
    assert get(f"{server}/readyz")[0] == 200
    text = get(f"{server}/metrics")[1]
    counted = {
        (s.labels["route"], s.labels["code"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "streamrec_http_requests_total"
    }
    assert counted[("other", "404")] == 1
    assert counted[("/recommendations/{user_id}", "405")] == 1
    assert counted[("/recommendations/{user_id}", "404")] == 1


def test_idle_connections_are_closed_and_the_connection_limit_holds(data: Config) -> None:
    cfg = with_overrides(data, serve=dict(idle_timeout_s=1, max_connections=8, workers=1))
    with ServerProcess(cfg) as process:
        host, port = process.url.removeprefix("http://").split(":")
        idle = http.client.HTTPConnection(host, int(port), timeout=10)
        idle.request("GET", "/livez")
        answer = idle.getresponse()
        assert answer.status == 200 and answer.read()
        time.sleep(2.5)
        assert idle.sock is not None
        assert idle.sock.recv(1) == b""  # closed by the server after 1 s of keep-alive idling
        idle.close()
        held = [socket.create_connection((host, int(port)), timeout=10) for _ in range(12)]
        try:
            assert get(f"{process.url}/livez")[0] == 503  # beyond serve.max_connections
        finally:
            for conn in held:
                conn.close()
        deadline = time.monotonic() + 10
        while get(f"{process.url}/livez")[0] != 200:  # recovers once they are gone
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_health_without_a_model(isolated_cfg: Config) -> None:
    with ServerProcess(isolated_cfg) as process:
        assert get(f"{process.url}/health")[:2] == (
            200,
            {"status": "no_model", "redis": "ok", "model_version": None},
        )
        body = get(f"{process.url}/recommendations/u")[1]
        assert (body["source"], body["items"], body["model_version"]) == (None, [], None)


def test_api_key_on(data: Config) -> None:
    cfg = with_overrides(data, serve=dict(api_key=API_KEY))
    with ServerProcess(cfg) as process:
        url = f"{process.url}/recommendations/seg-only"
        assert get(url)[0] == 401
        wire = API_KEY.encode().decode("latin-1")  # urllib sends header text as latin-1
        assert get(url, {"X-API-Key": wire[:-1]})[0] == 401
        assert get(url, {"X-API-Key": quote(API_KEY)})[0] == 401
        assert get(url, {"X-API-Key": wire})[0] == 200
        assert get(url, {"Authorization": "Bearer " + wire})[0] == 200
        assert get(f"{process.url}/metrics")[0] == 401
        assert get(f"{process.url}/health")[0] == 200  # open: load balancers probe it
        doc = get(f"{process.url}/openapi.json")[1]
        assert doc["components"]["securitySchemes"]["apiKey"]["name"] == "X-API-Key"
        process.stop()
        # The key reached the child through its environment only: neither the config file
        # handed to it nor its log holds it.
        for file in process.folder.iterdir():
            assert "very-secret" not in file.read_text("utf-8", errors="replace"), file


def test_redis_going_away(tmp_path: Path, stack_cfg: Config) -> None:
    with OwnRedisServer(tmp_path) as port:
        cfg = with_overrides(stack_cfg, redis=dict(port=port, key_prefix="gone"))
        process = ServerProcess(cfg)
    try:
        status, body, _ = get(f"{process.url}/health")
        assert status == 503 and body["status"] == "unavailable"
        assert "streamrec stack up" in body["redis"]
        status, body, _ = get(f"{process.url}/recommendations/u")
        assert status == 503 and f"127.0.0.1:{port}" in body["error"]
    finally:
        process.stop()


def test_five_thousand_idle_connections_then_normal_traffic(data: Config) -> None:
    import resource

    from streamrec.bench.loadgen import http_load

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 6000 <= hard or hard == resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 6000), hard))
    cfg = with_overrides(data, serve=dict(idle_timeout_s=60))
    paths = [f"/recommendations/{quote(uid, safe='')}" for uid in ODD_IDS]
    with ServerProcess(cfg) as process:
        host, port = process.url.removeprefix("http://").split(":")
        idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(5000)]
        try:
            during = http_load(process.url, paths, rate=200.0, duration_s=1.0, connections=4)
        finally:
            for conn in idle:
                conn.close()
        after = http_load(process.url, paths, rate=200.0, duration_s=1.0, connections=4)
    # Every request answered 200 beside the idle connections and after they left (how fast
    # is `streamrec bench lookup`'s figure, not a timed assert).
    assert (during["requests"], during["errors"]) == (200, 0)
    assert (after["requests"], after["errors"]) == (200, 0)
