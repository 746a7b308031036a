"""`streamrec serve`: the lookup over HTTP, on FastAPI and uvicorn.

    GET /recommendations/{user_id}?n=10&exclude=ITEM&exclude=ITEM   streamrec.lookup, as JSON
        &category=C (repeat)   only items in one of these categories (serve.item_categories)
        &diversity=0..1        MMR over the live model's item factors
        &explain=true          each item's score split over the user's items (their state)
    POST /recommendations            an anonymous session folded in against the live model
    GET /segments/{user_id}          the user's segment (and probabilities) under the version
    GET /similar/{item_id}?n=&exclude=   the items most like an item (published per version)
    GET /popular?n=&exclude=         the popular list of the live version
    POST /events                     events (a JSON array) to the events topic, acknowledged
    GET /health                      200 when Redis answers and has the live lists, else 503
    GET /livez, /readyz              liveness (the process answers) and readiness (/health ok)
    GET /metrics                     Prometheus text: requests, latency histogram, list sources
    GET /openapi.json                the OpenAPI description generated from the routes below

A user id is one URL-encoded path segment (``/`` is ``%2F``): the id is taken from the raw
request path, split on ``/`` before percent-decoding, so an encoded ``/`` stays inside the id
and no id reaches another key. With ``serve.api_key`` set (from the environment only), every
route but the probes and the description needs it in ``X-API-Key`` or ``Authorization:
Bearer``, compared in constant time. Every error is a JSON body ``{"error": ...}`` with its
4xx/5xx status, and every response is counted in /metrics. uvicorn runs ``serve.workers``
processes (one per core by default) on one socket; each has its own asyncio Redis client, and
no request waits on Redis longer than ``serve.redis_timeout_s``.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures' annotations,
# which refer to this config's limits, when the routes are declared.
import asyncio
import gc
import hmac
import logging
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import orjson
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.security import APIKeyHeader
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from pydantic import BaseModel, Field, StringConstraints
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamrec.console import console_router
from streamrec.errors import ModelStoreError, ServiceUnavailable, StackError
from streamrec.lookup import (
    AsyncLookupClient,
    BadLookup,
    ItemFilter,
    LookupClient,
    Recommendations,
    max_item_id_length,
    max_user_id_length,
)
from streamrec.model import store
from streamrec.model.user_state import decode_state
from streamrec.personal import (
    LiveModel,
    LiveModels,
    SessionItem,
    diversified,
    explanations,
    rank_session,
    read_item_categories,
    session_history,
)
from streamrec.producer.publisher import EventPublisher
from streamrec.schemas.config import ENV_CONFIG_PATH, Config, ServeConfig
from streamrec.schemas.config_loader import ENV_OVERRIDE_PREFIX, dump_config, load_config
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


class Item(BaseModel):
    item_id: str
    score: float


class Share(BaseModel):
    item_id: str
    share: float


class ExplainedItem(Item):
    """An item with ``explain=true``: the model's score of it for the user's history (their
    items' shares sum to it) and the items that contributed most; null and empty for an item
    the model does not know."""

    model_score: float | None = None
    because: list[Share] = []


class RecommendationsBody(BaseModel):
    user_id: str | None
    items: list[ExplainedItem]
    source: Literal["stream", "batch", "segment", "popular", "session"] | None
    model_version: str | None
    generated_ms: int | None
    watermark_ms: int | None
    segment: int | None
    unknown_items: list[str] | None = None


class SegmentBody(BaseModel):
    user_id: str
    model_version: str | None
    segment: int | None
    probabilities: list[float] | None


class ItemListBody(BaseModel):
    item_id: str | None = None
    items: list[Item]
    source: Literal["similar", "popular"] | None
    model_version: str | None
    generated_ms: int | None
    watermark_ms: int | None


class HealthBody(BaseModel):
    status: Literal["ok", "no_model", "degraded", "unavailable"]
    redis: str
    model_version: str | None = None
    reason: str | None = None


class ErrorBody(BaseModel):
    error: str


class InvalidEvent(BaseModel):
    index: int
    reason: str


class EventsRejected(BaseModel):
    error: str
    invalid: list[InvalidEvent]


class EventsAccepted(BaseModel):
    accepted: int
    topic: str


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


def _json(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    body = orjson.dumps(payload)
    return Response(body, status_code=status, media_type=_JSON, headers=headers)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return _json(status, {"error": message}, headers)


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


def create_app(cfg: Config) -> FastAPI:
    """The lookup service for ``cfg``: its routes, errors, probes and metrics. The Redis client
    opens when the app starts (in each worker) and closes when it stops."""
    serve_cfg, key = cfg.serve, cfg.serve.api_key.encode("utf-8")
    metrics = Metrics()
    publisher: list[EventPublisher] = []  # POST /events' producer, once opened
    publisher_lock = threading.Lock()
    categories = (
        read_item_categories(serve_cfg.item_categories) if serve_cfg.item_categories else None
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.lookup = await AsyncLookupClient.open(
            cfg.redis, serve_cfg.redis_timeout_s, ping=False
        )
        app.state.models = LiveModels(cfg.paths.model_store, cfg.feedback)
        # What is loaded now lives as long as the process: keep it out of the collector's
        # full passes, which would otherwise stall requests for tens of milliseconds.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await app.state.lookup.close()
            for opened in publisher:
                await asyncio.to_thread(opened.close)

    app = FastAPI(
        title="streamrec lookup",
        version="1",
        description="Recommendations from Redis: the user's list, else their segment's, else "
        "the popular list; every answer from one model version.",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI would fetch its assets from a CDN
        redoc_url=None,
    )
    # Imported here: streamrec.serve_fast builds on this module's parsing and responses.
    from streamrec.serve_fast import RecommendationsFastPath

    app.add_middleware(RecommendationsFastPath, metrics=metrics, cfg=serve_cfg, key=key)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    api_key_header = APIKeyHeader(name="X-API-Key", scheme_name="apiKey", auto_error=False)

    async def require_key(request: Request, _: str | None = Depends(api_key_header)) -> None:
        if not authorized(key, request.headers):
            raise HttpError(401, "a valid API key is required (X-API-Key header)")

    secured = [Depends(require_key)] if key else []
    errors: dict[int | str, dict[str, Any]] = {
        400: {"model": ErrorBody, "description": "a bad user id, n or query parameter"},
        503: {"model": ErrorBody, "description": "Redis does not answer"},
    }
    if key:
        errors[401] = {"model": ErrorBody, "description": "no valid API key"}

    # The list routes' query parameters, described in the OpenAPI document; their values are
    # read from the raw query (parse_target, parse_n), as the errors say.
    Count = Annotated[
        int | None,
        Query(ge=1, le=serve_cfg.max_n, description=f"default {serve_cfg.default_n}"),
    ]
    Excluded = Annotated[list[str] | None, Query(description="an item id to leave out (repeat)")]

    def lookup(request: Request) -> AsyncLookupClient:
        client: AsyncLookupClient = request.app.state.lookup
        return client

    def target_of(request: Request, allowed: set[str]) -> Target:
        target = parse_target(raw_target(request.scope))
        unknown = sorted(set(target.params) - allowed)
        if unknown:
            raise HttpError(400, f"unknown query parameter {unknown[0][:40]!r}")
        return target

    Categories = Annotated[
        list[str] | None,
        Query(description="keep only items in this category (repeat: any of them)"),
    ]
    Diversity = Annotated[
        float | None,
        Query(
            ge=0,
            le=1,
            description="0 (default): the list's order; up to 1: MMR over the model's item "
            "factors picks each next item less like the ones before",
        ),
    ]
    Explain = Annotated[
        bool | None, Query(description="each item's top contributing items of the user")
    ]

    async def live_model(request: Request, version: str) -> LiveModel:
        models: LiveModels = request.app.state.models
        return await models.get(version)

    async def personalised(
        request: Request,
        rec: Recommendations,
        n: int,
        diversity: float,
        history_of: Any,
    ) -> dict[str, Any]:
        """``rec`` as JSON, diversified to ``n`` and explained when asked (``history_of``:
        the live model -> the history to explain, or None for no explanations)."""
        if rec.model_version is None or not rec.items or (not diversity and history_of is None):
            return rec.to_json()
        live = await live_model(request, rec.model_version)
        if diversity:
            rec = replace(rec, items=tuple(diversified(live, rec.items, n, diversity)))
        body = rec.to_json()
        if history_of is None:
            return body
        history = await history_of(live)
        found = explanations(live, history, [i for i, _ in rec.items], serve_cfg.explain_top)
        return with_explanations(body, found)

    @app.get(
        "/recommendations/{user_id:anything}",
        summary="a user's top n",
        response_model=RecommendationsBody,
        responses=errors,
        dependencies=secured,
    )
    async def recommendations(
        request: Request,
        user_id: str,
        n: Count = None,
        exclude: Excluded = None,
        category: Categories = None,
        diversity: Diversity = None,
        explain: Explain = None,
    ) -> Response:
        """The user's list, else their segment's, else the popular list, from one version.
        ``user_id`` is URL-encoded whole (``/`` as ``%2F``). Filters leave items out of the
        stored lists (a list left empty falls through to the next); ``diversity`` reorders
        the list with MMR; ``explain`` names the user's items behind each item's score."""
        target = target_of(request, {"n", "exclude", "category", "diversity", "explain"})
        assert target.subject is not None
        params = target.params
        count, mix = parse_n(params, serve_cfg), parse_diversity(params)
        blocked = item_filter(params.get("exclude", []), params.get("category"), categories)
        rec = await lookup(request).lookup(
            target.subject, serve_cfg.max_n if mix else count, blocked
        )
        metrics.count_source(rec.source)
        if not mix and not parse_flag(params, "explain"):
            return _json(200, rec.to_json())
        user = target.subject

        async def user_history(live: LiveModel) -> Any:
            return decode_state(await lookup(request).user_state(user)).interactions(live.index)

        history_of = user_history if parse_flag(params, "explain") else None
        return _json(200, await personalised(request, rec, count, mix, history_of))

    ItemId = Annotated[str, StringConstraints(min_length=1, max_length=max_item_id_length())]

    class SessionEvent(BaseModel):
        """An item the session interacted with, weighed by the live version's feedback
        transform (``event_type`` one of its weights' types; ``value`` as in an event)."""

        item_id: ItemId
        event_type: str
        value: float | None = None

    class SessionRequest(BaseModel):
        """An anonymous session: the items it has (an id counts 1, an event its weight)."""

        items: list[ItemId | SessionEvent] = Field(max_length=serve_cfg.max_session_items)
        n: int | None = Field(None, ge=1, le=serve_cfg.max_n)
        exclude: list[ItemId] = []
        category: list[str] = []
        diversity: float = Field(0.0, ge=0, le=1)
        explain: bool = False

    @app.post(
        "/recommendations",
        summary="an anonymous session's top n, folded in against the live model",
        response_model=RecommendationsBody,
        responses=errors,
        dependencies=secured,
    )
    async def session_recommendations(request: Request, session: SessionRequest) -> Response:
        """The session's items folded into the live version exactly as the stream folds a user
        in, scored over the whole catalogue, its own items left out; nothing is stored. With
        no item the model knows, the popular list. ``unknown_items`` lists the items the
        model does not know."""
        version = await lookup(request).model_version()
        n = session.n or serve_cfg.default_n
        blocked = item_filter(session.exclude, session.category, categories)
        if version is None:
            return _json(200, {**Recommendations("", (), None, None).to_json(), "user_id": None})
        live = await live_model(request, version)
        items = [
            SessionItem(i) if isinstance(i, str) else SessionItem(i.item_id, i.event_type, i.value)
            for i in session.items
        ]
        check_event_types(items, live.feedback.weights)
        history, unknown = session_history(live, items)
        ranked = rank_session(live, history, n, blocked, categories or {}, session.diversity)
        if ranked is None:
            pool = serve_cfg.max_n if session.diversity else n
            popular = await lookup(request).popular(pool, blocked)
            rec = Recommendations(
                "",
                popular.items,
                popular.source,
                popular.model_version,
                popular.generated_ms,
                popular.watermark_ms,
            )
        else:
            ids, now_ms = live.model.item_ids, int(time.time() * 1000)
            scored = tuple((ids[p], score) for p, score in ranked)
            rec = Recommendations("", scored, "session", version, now_ms)
        metrics.count_source(rec.source)

        async def given(_: LiveModel) -> Any:
            return history

        history_of = given if session.explain else None
        mix = session.diversity if ranked is None else 0.0
        body = await personalised(request, rec, n, mix, history_of)
        return _json(200, {**body, "user_id": None, "unknown_items": unknown})

    @app.get(
        "/segments/{user_id:anything}",
        summary="a user's segment",
        response_model=SegmentBody,
        responses=errors,
        dependencies=secured,
    )
    async def segments(request: Request, user_id: str) -> Response:
        target = target_of(request, set())
        assert target.subject is not None
        return _json(200, (await lookup(request).segment(target.subject)).to_json())

    @app.get(
        "/similar/{item_id:anything}",
        summary="the items most like an item",
        response_model=ItemListBody,
        responses=errors,
        dependencies=secured,
    )
    async def similar(
        request: Request,
        item_id: str,
        n: Count = None,
        exclude: Excluded = None,
    ) -> Response:
        """The live version's nearest items to ``item_id`` by the cosine of their factors
        (published by the batch job); empty for an item the version does not know.
        ``item_id`` is URL-encoded whole (``/`` as ``%2F``)."""
        target = target_of(request, {"n", "exclude"})
        assert target.subject is not None
        answer = await lookup(request).similar(
            target.subject, parse_n(target.params, serve_cfg), target.params.get("exclude", ())
        )
        return _json(200, {"item_id": target.subject, **answer.to_json()})

    @app.get(
        POPULAR,
        summary="the live version's popular list",
        response_model=ItemListBody,
        responses=errors,
        dependencies=secured,
    )
    async def popular(
        request: Request,
        n: Count = None,
        exclude: Excluded = None,
    ) -> Response:
        """What a user nobody knows gets: the most popular items of the training window."""
        target = target_of(request, {"n", "exclude"})
        answer = await lookup(request).popular(
            parse_n(target.params, serve_cfg), target.params.get("exclude", ())
        )
        return _json(200, answer.to_json())

    def events_publisher() -> EventPublisher:
        """The worker's producer, opened on its first POST /events (in a worker thread)."""
        with publisher_lock:
            if not publisher:
                publisher.append(EventPublisher(cfg.kafka, client_id="streamrec-serve").open())
            return publisher[0]

    @app.post(
        EVENTS,
        summary="feedback over HTTP: events sent to the events topic",
        status_code=202,
        response_model=EventsAccepted,
        responses={
            400: {"model": EventsRejected, "description": "an event breaks the contract"},
            413: {"model": ErrorBody, "description": "a body or batch too large"},
            503: {"model": ErrorBody, "description": "Kafka did not acknowledge them"},
        },
        dependencies=secured,
    )
    async def post_events(request: Request) -> Response:
        """A JSON array of events (or one event), validated by the event contract
        (schemas/event.schema.json) as the producer validates them, then sent keyed by user and
        acknowledged by the broker before the answer: a 202 means the stream will see them.
        One bad event refuses the whole request, naming each bad one."""
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > serve_cfg.max_body_bytes:
                raise HttpError(413, f"a body has at most {serve_cfg.max_body_bytes} bytes")
        events = events_of(bytes(body), serve_cfg.max_events)
        sent = await asyncio.to_thread(
            lambda: events_publisher().send_acknowledged(events, serve_cfg.kafka_timeout_s)
        )
        return _json(202, {"accepted": sent, "topic": cfg.kafka.events_topic})

    @app.get(
        HEALTH,
        summary="Redis answers and has the live version's lists",
        response_model=HealthBody,
        responses={503: {"model": HealthBody, "description": "unavailable or degraded"}},
    )
    async def health(request: Request) -> Response:
        status, body = await health_of_async(lookup(request), cfg.paths.model_store)
        return _json(status, body)

    @app.get(LIVEZ, summary="liveness: the process answers", response_model=HealthBody)
    async def livez() -> Response:
        return _json(200, {"status": "ok", "redis": "not asked"})

    @app.get(
        READYZ,
        summary="readiness: /health is ok or no_model",
        response_model=HealthBody,
        responses={503: {"model": HealthBody, "description": "not ready"}},
    )
    async def readyz(request: Request) -> Response:
        status, body = await health_of_async(lookup(request), cfg.paths.model_store)
        return _json(status, body)

    @app.get(
        METRICS,
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
        dependencies=secured,
    )
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    app.include_router(console_router(cfg, secured, errors))  # the operator page: /console

    @app.exception_handler(HttpError)
    async def http_error(request: Request, exc: HttpError) -> Response:
        if isinstance(exc, EventsRefused):
            return _json(exc.status, {"error": str(exc), "invalid": exc.invalid})
        return _error(exc.status, str(exc))

    @app.exception_handler(BadLookup)
    async def bad_lookup(request: Request, exc: BadLookup) -> Response:
        return _error(400, str(exc))

    @app.exception_handler(ModelStoreError)
    async def no_model(request: Request, exc: ModelStoreError) -> Response:
        return _error(503, f"the live model cannot be loaded from paths.model_store: {exc}")

    @app.exception_handler(ServiceUnavailable)
    async def redis_down(request: Request, exc: ServiceUnavailable) -> Response:
        return _error(503, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        if field == "n":
            got = str(first.get("input", ""))[:20]
            return _error(400, f"n must be an integer from 1 to {serve_cfg.max_n}, got {got!r}")
        return _error(400, f"{field}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_exception(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            path = request.scope.get("path", "")[:100]
            return _error(404, f"no route {path!r}; see /openapi.json")
        return _error(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        log.exception("serve: %s failed", request.scope.get("path", "?"))
        return _error(500, f"internal error ({exc.__class__.__name__}); see the server log")

    return app


def worker_app() -> FastAPI:
    """uvicorn's factory in each worker process: the config the parent handed over."""
    return create_app(load_config())


def serve(cfg: Config, host: str | None = None, port: int | None = None) -> int:
    """Serve until interrupted; prints ``listening on http://HOST:PORT`` once the socket is
    bound and Redis has answered."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from streamrec.serve_fast import CoalescingHttpToolsProtocol

    LookupClient.open(cfg.redis).close()  # Redis answers, or say how to start it, now
    workers = cfg.serve.workers or os.cpu_count() or 1
    options: dict[str, Any] = dict(
        host=host or cfg.serve.host,
        port=cfg.serve.port if port is None else port,
        workers=workers,
        loop="uvloop",
        http=CoalescingHttpToolsProtocol,
        lifespan="on",
        timeout_keep_alive=cfg.serve.idle_timeout_s,
        limit_concurrency=cfg.serve.max_connections,
        backlog=4096,
        access_log=False,
        server_header=False,
        log_config=None,
    )
    scratch = Path(tempfile.mkdtemp(prefix="streamrec-serve-"))
    try:
        if workers > 1:
            # Each worker loads the same config: written out, secrets through the environment.
            text, secrets = dump_config(cfg)
            (scratch / "config.yaml").write_text(text, "utf-8")
            (scratch / "metrics").mkdir()
            os.environ.update(secrets)
            os.environ[ENV_CONFIG_PATH] = str(scratch / "config.yaml")
            os.environ[_METRICS_DIR] = str(scratch / "metrics")
            config = uvicorn.Config("streamrec.serve:worker_app", factory=True, **options)
        else:
            config = uvicorn.Config(create_app(cfg), **options)
        sock = config.bind_socket()
        # Listening now: connections made before the workers are up wait in the backlog.
        sock.listen(config.backlog)
        bound_host, bound_port = sock.getsockname()[:2]
        log.info(
            "serving lookups of prefix %s on %s:%s, %d worker(s), auth %s",
            cfg.redis.key_prefix,
            bound_host,
            bound_port,
            workers,
            "on" if cfg.serve.api_key else "off",
        )
        print(f"listening on http://{bound_host!s}:{bound_port}", flush=True)
        if workers > 1:
            Multiprocess(config, sockets=[sock]).run()
        else:
            uvicorn.Server(config).run(sockets=[sock])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def health_of(lookup: LookupClient, model_store: str) -> tuple[int, dict[str, Any]]:
    """/health: 200 "ok" when Redis answers and the live version's lists are there, 200
    "no_model" before the first publish; 503 "unavailable" when Redis does not answer, and 503
    "degraded" when the lists are gone (Redis restarted empty, the lists expired): lookups then
    answer with empty lists until the next batch run publishes again."""
    try:
        version = lookup.model_version()
        present = version is not None and lookup.has_lists(version)
    except ServiceUnavailable as exc:
        return 503, {"status": "unavailable", "redis": str(exc)}
    return health_answer(version, present, model_store)


async def health_of_async(
    lookup: AsyncLookupClient, model_store: str
) -> tuple[int, dict[str, Any]]:
    """``health_of`` on the asyncio client."""
    try:
        version = await lookup.model_version()
        present = version is not None and await lookup.has_lists(version)
    except ServiceUnavailable as exc:
        return 503, {"status": "unavailable", "redis": str(exc)}
    return health_answer(version, present, model_store)


def health_answer(
    version: str | None, present: bool, model_store: str
) -> tuple[int, dict[str, Any]]:
    """/health's status and body from what Redis said."""
    if version is not None and present:
        return 200, {"status": "ok", "redis": "ok", "model_version": version}
    stored = _store_version(model_store)
    if version is None and stored is None:
        return 200, {"status": "no_model", "redis": "ok", "model_version": None}
    missing = version or stored
    return 503, {
        "status": "degraded",
        "redis": "ok",
        "model_version": version,
        "reason": f"the lists of model {missing} are not in Redis (restarted without "
        "persistence, or expired): run `streamrec state rebuild` and `streamrec batch run`",
    }


def _store_version(model_store: str) -> str | None:
    """The model store's current version, when this process can read the store (it may run
    where the store is not mounted: then only Redis is asked)."""
    if not model_store:
        return None
    try:
        return store.current_version(model_store)
    except Exception:  # any storage error: the store is not this server's to read
        return None


class ServerProcess:
    """A real `streamrec serve` process on a free port, for tests and the benchmark
    (``threaded``: the baseline server, bench/threaded_server.py). Its config goes through a
    temporary YAML file; secrets only through the child's environment."""

    def __init__(
        self,
        cfg: Config,
        host: str = "127.0.0.1",
        timeout_s: float = 30.0,
        threaded: bool = False,
    ) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="streamrec-serve-"))
        text, secrets = dump_config(cfg)
        config_file = self.folder / "config.yaml"
        config_file.write_text(text, "utf-8")
        self.log_file = self.folder / "serve.log"
        if threaded:
            command = ["-m", "streamrec.bench.threaded_server", "--config", str(config_file)]
        else:
            command = ["-m", "streamrec.cli", "--config", str(config_file), "serve"]
        # The child's environment: this one's, less what would override the config file.
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_OVERRIDE_PREFIX)}
        with self.log_file.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, *command, "--host", host, "--port", "0"],
                stdout=subprocess.PIPE,
                stderr=err,
                env={**env, **secrets},
            )
        self.url = self._wait_for_address(timeout_s)

    def _wait_for_address(self, timeout_s: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            line = self.proc.stdout.readline().decode() if ready else ""
            if line.startswith("listening on "):
                return line.split()[-1]
        self.stop()
        raise StackError(
            f"`streamrec serve` did not start within {timeout_s:.0f}s: "
            f"{self.log_file.read_text(errors='replace')[-2000:]}"
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
