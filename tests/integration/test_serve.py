"""`streamrec serve` as a real process (a subprocess on a free port) against real Redis: the
routes, odd ids end to end, auth on and off, health, metrics and the OpenAPI description."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis

from streamrec.schemas.config import Config, with_overrides
from streamrec.serve import ServerProcess
from tests.integration.test_lookup import ODD_IDS, OwnRedisServer, publish

pytestmark = pytest.mark.integration

API_KEY = "test-api-key-Ω-very-secret"


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, body, head = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        status, body, head = exc.code, exc.read(), dict(exc.headers)
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
    route = 'route="/recommendations/{user_id}"'
    assert f'streamrec_http_requests_total{{{route},code="200"}} 4' in text
    assert f'streamrec_http_requests_total{{{route},code="400"}} 1' in text
    assert f"streamrec_http_request_duration_seconds_count{{{route}}} 5" in text
    assert f'streamrec_http_request_duration_seconds_bucket{{{route},le="+Inf"}} 5' in text
    assert 'streamrec_lookup_source_total{source="popular"} 3' in text
    assert 'streamrec_lookup_source_total{source="segment"} 1' in text
    status, doc, _ = get(f"{server}/openapi.json")
    assert status == 200 and doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) == {
        "/recommendations/{user_id}",
        "/segments/{user_id}",
        "/health",
        "/metrics",
        "/openapi.json",
    }


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
