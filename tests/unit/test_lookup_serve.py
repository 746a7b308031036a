"""The pure parts of `streamrec serve` (streamrec/serve.py): request targets, n, the API key,
the Prometheus text, the OpenAPI description. The server process: tests/integration."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streamrec.errors import ServiceUnavailable
from streamrec.schemas.config import ServeConfig
from streamrec.serve import (
    HEALTH,
    METRICS,
    OPENAPI,
    RECOMMENDATIONS,
    SEGMENTS,
    App,
    HttpError,
    Metrics,
    openapi,
    parse_n,
    parse_target,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("target", "route", "user"),
    [
        ("/recommendations/u1", RECOMMENDATIONS, "u1"),
        ("/recommendations/a%2Fb?n=3", RECOMMENDATIONS, "a/b"),
        ("/recommendations/x%20y%3Az%7B1%7D", RECOMMENDATIONS, "x y:z{1}"),
        ("/recommendations/%F0%9F%8E%AC", RECOMMENDATIONS, "🎬"),
        ("/recommendations/a+b", RECOMMENDATIONS, "a+b"),  # '+' is a plus in a path
        ("/recommendations/%3Fq%23h%25", RECOMMENDATIONS, "?q#h%"),
        ("/recommendations/..%2F..%2Fmodel%3Acurrent", RECOMMENDATIONS, "../../model:current"),
        ("/segments/u%0A1", SEGMENTS, "u\n1"),
        ("/health", HEALTH, None),
        ("/metrics", METRICS, None),
        ("/openapi.json", OPENAPI, None),
    ],
)
def test_targets_route_and_decode_the_id_whole(target: str, route: str, user: str | None) -> None:
    request = parse_target(target)
    assert (request.route, request.user_id) == (route, user)


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/recommendations/a/b", 404),  # an unencoded '/' is another path, not part of the id
        ("/recommendations/", 400),
        ("/recommendations/" + "x" * 257, 400),
        ("/recommendations/%FF", 400),  # not UTF-8
        ("/recommendations", 404),
        ("/nothing/u1", 404),
        ("/health/x", 404),
    ],
)
def test_bad_targets(target: str, status: int) -> None:
    with pytest.raises(HttpError) as info:
        parse_target(target)
    assert info.value.status == status


def test_query_keeps_repeated_excludes() -> None:
    request = parse_target("/recommendations/u?exclude=a%2Cb&exclude=c+d&n=2")
    assert request.params == {"exclude": ["a,b", "c d"], "n": ["2"]}


def test_n_default_and_bounds() -> None:
    cfg = ServeConfig(default_n=7, max_n=50)
    assert parse_n({}, cfg) == 7 and parse_n({"n": ["50"]}, cfg) == 50
    for bad in ("0", "51", "x", "-1", ""):
        with pytest.raises(HttpError, match="n must"):
            parse_n({"n": [bad]}, cfg)


def _app(key: str) -> App:
    return App(None, ServeConfig(api_key=key))  # type: ignore[arg-type]  # no lookup needed


def _wire(text: str) -> str:
    """A header value as the server reads it: the UTF-8 bytes sent, decoded as latin-1."""
    return text.encode("utf-8").decode("latin-1")


def test_api_key_accepted_in_either_header_only_when_equal() -> None:
    app = _app("s3cret-ключ")
    assert app.authorized({"X-API-Key": _wire("s3cret-ключ")})
    assert app.authorized({"Authorization": "Bearer " + _wire("s3cret-ключ")})
    for headers in (
        {},
        {"X-API-Key": "s3cret"},
        {"X-API-Key": _wire("s3cret-ключx")},
        {"X-API-Key": "s3cret-ключ"},  # not what a client can send: headers are bytes
        {"Authorization": _wire("s3cret-ключ")},
        {"Authorization": "Basic " + _wire("s3cret-ключ")},
    ):
        assert not app.authorized(headers)
    assert _app("").authorized({})


def test_unauthorized_and_unknown_routes_answer_json_without_touching_redis() -> None:
    app = _app("k")
    route, (status, body, content_type) = app.handle("/recommendations/u", {})
    assert (route, status, content_type) == (
        RECOMMENDATIONS,
        401,
        "application/json; charset=utf-8",
    )
    assert b"API key" in body
    assert app.handle("/nope", {"X-API-Key": "k"})[1][0] == 404
    assert app.handle("/openapi.json", {})[1][0] == 200  # open without the key


def test_metrics_text_is_prometheus_exposition() -> None:
    metrics = Metrics()
    for seconds in (0.0002, 0.0007, 0.003, 2.0):
        metrics.observe(RECOMMENDATIONS, 200, seconds)
    metrics.observe(HEALTH, 503, 0.001)
    metrics.count_source("batch")
    metrics.count_source(None)
    text = metrics.render()
    route = 'route="/recommendations/{user_id}"'
    assert f'streamrec_http_requests_total{{{route},code="200"}} 4' in text
    assert 'streamrec_http_requests_total{route="/health",code="503"} 1' in text
    assert f'streamrec_http_request_duration_seconds_bucket{{{route},le="0.0005"}} 1' in text
    assert f'streamrec_http_request_duration_seconds_bucket{{{route},le="0.005"}} 3' in text
    assert f'streamrec_http_request_duration_seconds_bucket{{{route},le="1.0"}} 3' in text
    assert f'streamrec_http_request_duration_seconds_bucket{{{route},le="+Inf"}} 4' in text
    assert f"streamrec_http_request_duration_seconds_count{{{route}}} 4" in text
    assert 'streamrec_lookup_source_total{source="none"} 1' in text
    sample = re.compile(r'^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? [0-9.e+-]+$')
    for line in text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or sample.match(line)


@pytest.mark.parametrize("key", ["", "k"])
def test_openapi_describes_every_route(key: str) -> None:
    doc = openapi(ServeConfig(api_key=key, max_n=40))
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {RECOMMENDATIONS, SEGMENTS, HEALTH, METRICS, OPENAPI}
    params = {p["name"]: p for p in doc["paths"][RECOMMENDATIONS]["get"]["parameters"]}
    assert params["user_id"]["schema"]["maxLength"] == 256
    assert params["n"]["schema"]["maximum"] == 40
    assert ("components" in doc) == bool(key)
    assert ("401" in doc["paths"][RECOMMENDATIONS]["get"]["responses"]) == bool(key)
    assert "security" not in doc["paths"][HEALTH]["get"]


class _FakeLookup:
    """What /health asks of a lookup client: the pointer, and whether a version's lists exist."""

    def __init__(self, version: str | None, lists: bool, down: bool = False) -> None:
        self.version, self.lists, self.down = version, lists, down

    def model_version(self) -> str | None:
        if self.down:
            raise ServiceUnavailable("Redis at 127.0.0.1:1 does not answer")
        return self.version

    def has_lists(self, version: str) -> bool:
        return self.lists


@pytest.mark.parametrize(
    ("version", "lists", "down", "stored", "status", "word"),
    [
        ("v2", True, False, "v2", 200, "ok"),
        (None, False, False, None, 200, "no_model"),
        ("v2", False, False, None, 503, "degraded"),  # the lists expired or were lost
        (None, False, False, "v2", 503, "degraded"),  # Redis restarted empty
        (None, False, True, "v2", 503, "unavailable"),
    ],
)
def test_health_tells_ok_no_model_degraded_and_unavailable_apart(
    tmp_path: Path,
    version: str | None,
    lists: bool,
    down: bool,
    stored: str | None,
    status: int,
    word: str,
) -> None:
    from streamrec.serve import health_of

    if stored:
        (tmp_path / "current").write_text(stored)
    fake = _FakeLookup(version, lists, down)
    code, body = health_of(fake, str(tmp_path))  # type: ignore[arg-type]
    assert (code, body["status"]) == (status, word)
    if word == "degraded":
        assert "streamrec batch run" in body["reason"]


def test_retry_policy_spans_the_window_and_an_impatient_client_retries_once() -> None:
    from streamrec.redis_lists import RETRY_CAP_S, retry_policy

    assert retry_policy(0.0).get_retries() == 1
    assert retry_policy(60.0).get_retries() * RETRY_CAP_S >= 60.0
