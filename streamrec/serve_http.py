"""What every route of `streamrec serve` shares: the route names, the raw request target
parsed (ids from the raw path, so an encoded ``/`` stays inside an id), query values checked,
the API key compared in constant time, JSON answers and errors, the request metrics, and
/health's answer."""

# No `from __future__ import annotations`: FastAPI reads the route signatures' annotations,
# which refer to this config's limits, when the routes are declared.
import hmac
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import orjson
from fastapi import Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.convertors import Convertor, register_url_convertor
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamrec.lookup import AsyncLookupClient
from streamrec.lookup_answers import ItemFilter, max_item_id_length, max_user_id_length
from streamrec.personal import (
    SessionItem,
)
from streamrec.schemas.config import ServeConfig
from streamrec.schemas.events import validate_event

log = logging.getLogger(__name__)

RECOMMENDATIONS, SEGMENTS = "/recommendations/{user_id}", "/segments/{user_id}"
SIMILAR, POPULAR, EVENTS = "/similar/{item_id}", "/popular", "/events"
HEALTH, METRICS, OPENAPI, OTHER = "/health", "/metrics", "/openapi.json", "other"
LIVEZ, READYZ = "/livez", "/readyz"
_BY_HEAD = {"recommendations": RECOMMENDATIONS, "segments": SEGMENTS, "similar": SIMILAR}
_FIXED = {HEALTH: HEALTH, METRICS: METRICS, OPENAPI: OPENAPI, POPULAR: POPULAR}
_JSON = "application/json; charset=utf-8"
# Set in a worker's environment when several workers share /metrics through files.
_METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Target:
    route: str
    subject: str | None  # the user id or item id of the path, decoded; None on fixed routes
    params: dict[str, list[str]]


def parse_target(target: str) -> Target:
    """Route, id (user or item) and query of a request target. Pure. The path is split on
    ``/`` before percent-decoding, so an encoded ``/`` stays inside the id."""
    parts = urlsplit(target)
    try:
        params = parse_qs(parts.query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise HttpError(400, "the query string is not UTF-8") from None
    if parts.path in _FIXED:
        return Target(_FIXED[parts.path], None, params)
    segments = parts.path.split("/")
    if len(segments) != 3 or segments[0] != "" or segments[1] not in _BY_HEAD:
        raise HttpError(404, f"no route {parts.path[:100]!r}; see /openapi.json")
    route = _BY_HEAD[segments[1]]
    if route == SIMILAR:
        what, limit = "item id", max_item_id_length()
    else:
        what, limit = "user id", max_user_id_length()
    try:
        subject = unquote(segments[2], encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise HttpError(400, f"the {what} is not URL-encoded UTF-8") from None
    if not 1 <= len(subject) <= limit:
        raise HttpError(400, f"an {what} has 1 to {limit} characters")
    return Target(route, subject, params)


def parse_n(params: Mapping[str, list[str]], cfg: ServeConfig) -> int:
    values = params.get("n")
    if not values:
        return cfg.default_n
    try:
        n = int(values[-1])
    except ValueError:
        raise HttpError(400, f"n must be an integer, got {values[-1][:20]!r}") from None
    if not 1 <= n <= cfg.max_n:
        raise HttpError(400, f"n must be from 1 to {cfg.max_n}, got {n}")
    return n


def parse_diversity(params: Mapping[str, list[str]]) -> float:
    """``diversity``: 0 (the list's order) to 1 (each next item as unlike the chosen as can be)."""
    values = params.get("diversity")
    if not values:
        return 0.0
    try:
        diversity = float(values[-1])
    except ValueError:
        diversity = -1.0
    if not 0.0 <= diversity <= 1.0:
        raise HttpError(400, f"diversity must be a number from 0 to 1, got {values[-1][:20]!r}")
    return diversity


def parse_flag(params: Mapping[str, list[str]], name: str) -> bool:
    values = params.get(name)
    if not values:
        return False
    if values[-1] not in ("true", "false", "1", "0"):
        raise HttpError(400, f"{name} must be true or false, got {values[-1][:20]!r}")
    return values[-1] in ("true", "1")


def item_filter(
    excluded: Sequence[str],
    allowed: Sequence[str] | None,
    categories: Mapping[str, frozenset[str]] | None,
) -> ItemFilter:
    """What a lookup leaves out; a category filter needs ``serve.item_categories``."""
    if allowed and categories is None:
        raise HttpError(400, "category filters need item metadata: set serve.item_categories")
    return ItemFilter(excluded, allowed or None, categories)


def with_explanations(body: dict[str, Any], found: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """An answer's items with their explanations (``model_score`` null for the others)."""
    empty: dict[str, Any] = {"model_score": None, "because": []}
    items = [{**item, **found.get(item["item_id"], empty)} for item in body["items"]]
    return {**body, "items": items}


def check_event_types(items: Sequence[SessionItem], weights: Mapping[str, float]) -> None:
    """Every session event's type is one the live version weighs."""
    for number, item in enumerate(items):
        if item.event_type is not None and item.event_type not in weights:
            raise HttpError(
                400,
                f"items.{number}.event_type must be one of {', '.join(sorted(weights))}, "
                f"got {item.event_type[:40]!r}",
            )


class Headers(Protocol):
    """What the key check needs of request headers."""

    def get(self, name: str, /) -> str | None: ...


def authorized(key: bytes, headers: Headers) -> bool:
    """Whether ``headers`` carry ``key`` in X-API-Key or Authorization: Bearer (always, when
    no key is set). Header values arrive decoded as latin-1: encoding back gives the bytes
    sent, so a key with non-ASCII characters matches when the client sent it as UTF-8."""
    if not key:
        return True
    given = headers.get("X-API-Key") or ""
    bearer = headers.get("Authorization") or ""
    if not given and bearer.startswith("Bearer "):
        given = bearer[len("Bearer ") :]
    return hmac.compare_digest(given.encode("latin-1", "replace"), key)


def raw_target(scope: Scope) -> str:
    """The request target as sent: the raw path (still percent-encoded) and the query."""
    path = scope.get("raw_path") or scope["path"].encode("utf-8")
    query = scope.get("query_string") or b""
    text = path.decode("latin-1")
    return f"{text}?{query.decode('latin-1')}" if query else text


def events_of(body: bytes, max_events: int) -> list[dict[str, Any]]:
    """The events of a POST /events body: a JSON array of event objects, or one object. Every
    one must keep the event contract; otherwise an HttpError naming each bad one (by index
    and reason) and nothing is sent. Pure."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, f"the body is not JSON ({exc})") from None
    events = data if isinstance(data, list) else [data]
    if not events:
        raise HttpError(400, "no events in the body")
    if len(events) > max_events:
        raise HttpError(413, f"at most {max_events} events a request, got {len(events)}")
    invalid = [
        {"index": i, "reason": reason}
        for i, event in enumerate(events)
        if (reason := validate_event(event)) is not None
    ]
    if invalid:
        raise EventsRefused(invalid, len(events))
    return events


class EventsRefused(HttpError):
    """Some events of a request break the contract: none of the request's events is sent."""

    def __init__(self, invalid: list[dict[str, Any]], total: int) -> None:
        super().__init__(400, f"{len(invalid)} of {total} events break the contract; none was sent")
        self.invalid = invalid


class Metrics:
    """Request counts, a latency histogram per route and the source of every answered list,
    in prometheus_client's registry (shared through files when several workers run)."""

    BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "streamrec_http_requests",
            "HTTP requests by route and status.",
            ["route", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "streamrec_http_request_duration_seconds",
            "Time from request to response written, by route.",
            ["route"],
            buckets=self.BUCKETS,
            registry=self.registry,
        )
        self.sources = Counter(
            "streamrec_lookup_source",
            "Answered lookups by list source.",
            ["source"],
            registry=self.registry,
        )

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def count_source(self, source: str | None) -> None:
        self.sources.labels(source or "none").inc()

    def render(self) -> bytes:
        if os.environ.get(_METRICS_DIR):
            merged = CollectorRegistry()
            MultiProcessCollector(merged)
            return generate_latest(merged)
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every response by route template (``other`` when no route matched) and status,
    and times it, errors included."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            route = scope.get("route")
            name = getattr(route, "path_format", OTHER) if route is not None else OTHER
            self.metrics.observe(name, status, time.perf_counter() - started)


def json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    body = orjson.dumps(payload)
    return Response(body, status_code=status, media_type=_JSON, headers=headers)


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return json_response(status, {"error": message}, headers)


class AnythingConvertor(Convertor[str]):
    """A path parameter that matches any characters, newlines and ``/`` included: the route
    matches whatever follows its head, and the handler takes the id from the raw path
    (``parse_target``), which is what decides between an id and another path."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anything", AnythingConvertor())


def lookup_client(request: Request) -> AsyncLookupClient:
    """The worker's Redis lookups (opened by the app's lifespan)."""
    client: AsyncLookupClient = request.app.state.lookup
    return client


def target_of(request: Request, allowed: set[str]) -> Target:
    """The request's route, id and query, with only the ``allowed`` query parameters."""
    target = parse_target(raw_target(request.scope))
    unknown = sorted(set(target.params) - allowed)
    if unknown:
        raise HttpError(400, f"unknown query parameter {unknown[0][:40]!r}")
    return target
