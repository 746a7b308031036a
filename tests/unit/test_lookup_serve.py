"""The pure parts of `streamrec serve` (streamrec/serve.py): request targets, n, the API key,
the Prometheus text, the generated OpenAPI description. The server process:
tests/integration/test_serve.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamrec.errors import ServiceUnavailable
from streamrec.schemas.config import Config, ServeConfig
from streamrec.schemas.config_loader import with_overrides
from streamrec.serve import create_app
from streamrec.serve_fast import RecommendationsFastPath
from streamrec.serve_http import (
    EVENTS,
    HEALTH,
    LIVEZ,
    METRICS,
    OPENAPI,
    POPULAR,
    READYZ,
    RECOMMENDATIONS,
    SEGMENTS,
    SIMILAR,
    EventsRefused,
    HttpError,
    Metrics,
    authorized,
    events_of,
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
        ("/similar/song%2F7", SIMILAR, "song/7"),
        ("/popular?n=3", POPULAR, None),
    ],
)
def test_targets_route_and_decode_the_id_whole(target: str, route: str, user: str | None) -> None:
    request = parse_target(target)
    assert (request.route, request.subject) == (route, user)


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


def _wire(text: str) -> str:
    """A header value as the server reads it: the UTF-8 bytes sent, decoded as latin-1."""
    return text.encode("utf-8").decode("latin-1")


def test_api_key_accepted_in_either_header_only_when_equal() -> None:
    key = "s3cret-ключ".encode()
    assert authorized(key, {"X-API-Key": _wire("s3cret-ключ")})
    assert authorized(key, {"Authorization": "Bearer " + _wire("s3cret-ключ")})
    for headers in (
        {},
        {"X-API-Key": "s3cret"},
        {"X-API-Key": _wire("s3cret-ключx")},
        {"X-API-Key": "s3cret-ключ"},  # not what a client can send: headers are bytes
        {"Authorization": _wire("s3cret-ключ")},
        {"Authorization": "Basic " + _wire("s3cret-ключ")},
    ):
        assert not authorized(key, headers)
    assert authorized(b"", {})


def test_metrics_are_prometheus_exposition() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    metrics = Metrics()
    for seconds in (0.0002, 0.0007, 0.003, 2.0):
        metrics.observe(RECOMMENDATIONS, 200, seconds)
    metrics.observe(HEALTH, 503, 0.001)
    metrics.count_source("batch")
    metrics.count_source(None)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }
    route = ("route", RECOMMENDATIONS)
    assert samples[("streamrec_http_requests_total", (("code", "200"), route))] == 4
    assert samples[("streamrec_http_requests_total", (("code", "503"), ("route", HEALTH)))] == 1
    bucket = "streamrec_http_request_duration_seconds_bucket"
    assert samples[(bucket, (("le", "0.0005"), route))] == 1
    assert samples[(bucket, (("le", "0.005"), route))] == 3
    assert samples[(bucket, (("le", "1.0"), route))] == 3
    assert samples[(bucket, (("le", "+Inf"), route))] == 4
    assert samples[("streamrec_http_request_duration_seconds_count", (route,))] == 4
    assert samples[("streamrec_lookup_source_total", (("source", "none"),))] == 1


@pytest.mark.parametrize("key", ["", "k"])
def test_openapi_is_generated_for_every_route(key: str) -> None:
    cfg = with_overrides(Config(), serve=dict(api_key=key, max_n=40))
    doc = create_app(cfg).openapi()
    assert doc["openapi"].startswith("3.1")
    # The operator page's routes are tested with it (tests/integration/test_console_api.py).
    assert {p for p in doc["paths"] if not p.startswith("/console")} == {
        EVENTS,
        "/recommendations",
        RECOMMENDATIONS,
        SEGMENTS,
        SIMILAR,
        POPULAR,
        HEALTH,
        LIVEZ,
        READYZ,
        METRICS,
    }
    params = {p["name"]: p for p in doc["paths"][RECOMMENDATIONS]["get"]["parameters"]}
    assert set(params) == {"user_id", "n", "exclude", "category", "diversity", "explain"}
    assert params["n"]["schema"]["anyOf"][0]["maximum"] == 40
    assert ("securitySchemes" in doc.get("components", {})) == bool(key)
    assert ("401" in doc["paths"][RECOMMENDATIONS]["get"]["responses"]) == bool(key)
    assert "security" not in doc["paths"][HEALTH]["get"]
    assert "ErrorBody" in doc["components"]["schemas"]


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
    from streamrec.serve_ops import health_of

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


def _event(n: int) -> dict[str, object]:
    return {
        "event_id": f"e{n}",
        "user_id": "u1",
        "item_id": "i1",
        "event_type": "play",
        "event_time": 1_700_000_000_000 + n,
        "value": 30.0,
    }


def test_events_body_is_an_array_or_one_event_each_keeping_the_contract() -> None:
    import json

    assert events_of(json.dumps([_event(1), _event(2)]).encode(), 10) == [_event(1), _event(2)]
    assert events_of(json.dumps(_event(3)).encode(), 10) == [_event(3)]
    bad = {**_event(4), "event_time": "yesterday"}
    with pytest.raises(EventsRefused) as refused:
        events_of(json.dumps([_event(1), bad, {"x": 1}]).encode(), 10)
    assert refused.value.status == 400 and "2 of 3" in str(refused.value)
    assert [i["index"] for i in refused.value.invalid] == [1, 2]
    assert "event_time" in refused.value.invalid[0]["reason"]
    for body, status in ((b"[", 400), (b"[]", 400), (json.dumps([_event(1)] * 11).encode(), 413)):
        with pytest.raises(HttpError) as error:
            events_of(body, 10)
        assert error.value.status == status


def test_fast_path_takes_exactly_the_routes_query_parameters() -> None:
    doc = create_app(Config()).openapi()
    declared = {
        p["name"] for p in doc["paths"][RECOMMENDATIONS]["get"]["parameters"] if p["in"] == "query"
    }
    # A parameter added to the route needs a decision in the fast path too: requests without
    # it get the parameter's default from the route and the fast path's old rule from it. The
    # model-side options (their defaults change nothing) always go to the declared route.
    model_side = {"category", "diversity", "explain"}
    assert declared == RecommendationsFastPath.QUERY | model_side
    assert not RecommendationsFastPath.QUERY & model_side
