"""The operational routes of `streamrec serve` (feedback over HTTP, health and readiness probes,
Prometheus metrics) and the handlers that turn every error into a JSON body with its status."""

# No `from __future__ import annotations`: FastAPI reads the route signatures' annotations,
# which refer to this config's limits, when the routes are declared.
import asyncio
import logging
import threading
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from streamrec.errors import ModelStoreError, ServiceUnavailable
from streamrec.lookup import AsyncLookupClient, LookupClient
from streamrec.lookup_answers import BadLookup
from streamrec.model import store
from streamrec.producer.publisher import EventPublisher
from streamrec.schemas.config import Config, ServeConfig
from streamrec.serve_bodies import ErrorBody, EventsAccepted, EventsRejected, HealthBody
from streamrec.serve_http import (
    EVENTS,
    HEALTH,
    LIVEZ,
    METRICS,
    READYZ,
    EventsRefused,
    HttpError,
    Metrics,
    error_response,
    events_of,
    json_response,
    lookup_client,
)

log = logging.getLogger(__name__)


def add_ops_routes(
    app: FastAPI,
    cfg: Config,
    metrics: Metrics,
    secured: list[Any],
    publisher: list[EventPublisher],
) -> None:
    """POST /events, /health, /livez, /readyz and /metrics on ``app``; ``publisher`` holds the
    worker's Kafka producer once POST /events opened it (the app's lifespan closes it)."""
    serve_cfg = cfg.serve
    publisher_lock = threading.Lock()

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
        return json_response(202, {"accepted": sent, "topic": cfg.kafka.events_topic})

    @app.get(
        HEALTH,
        summary="Redis answers and has the live version's lists",
        response_model=HealthBody,
        responses={503: {"model": HealthBody, "description": "unavailable or degraded"}},
    )
    async def health(request: Request) -> Response:
        status, body = await health_of_async(lookup_client(request), cfg.paths.model_store)
        return json_response(status, body)

    @app.get(LIVEZ, summary="liveness: the process answers", response_model=HealthBody)
    async def livez() -> Response:
        return json_response(200, {"status": "ok", "redis": "not asked"})

    @app.get(
        READYZ,
        summary="readiness: /health is ok or no_model",
        response_model=HealthBody,
        responses={503: {"model": HealthBody, "description": "not ready"}},
    )
    async def readyz(request: Request) -> Response:
        status, body = await health_of_async(lookup_client(request), cfg.paths.model_store)
        return json_response(status, body)

    @app.get(
        METRICS,
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
        dependencies=secured,
    )
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")


def add_error_handlers(app: FastAPI, serve_cfg: ServeConfig) -> None:
    """Every error a JSON body ``{"error": ...}`` with its status; a bug a logged 500."""

    @app.exception_handler(HttpError)
    async def http_error(request: Request, exc: HttpError) -> Response:
        if isinstance(exc, EventsRefused):
            return json_response(exc.status, {"error": str(exc), "invalid": exc.invalid})
        return error_response(exc.status, str(exc))

    @app.exception_handler(BadLookup)
    async def bad_lookup(request: Request, exc: BadLookup) -> Response:
        return error_response(400, str(exc))

    @app.exception_handler(ModelStoreError)
    async def no_model(request: Request, exc: ModelStoreError) -> Response:
        return error_response(503, f"the live model cannot be loaded from paths.model_store: {exc}")

    @app.exception_handler(ServiceUnavailable)
    async def redis_down(request: Request, exc: ServiceUnavailable) -> Response:
        return error_response(503, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        if field == "n":
            got = str(first.get("input", ""))[:20]
            return error_response(
                400, f"n must be an integer from 1 to {serve_cfg.max_n}, got {got!r}"
            )
        return error_response(400, f"{field}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_exception(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            path = request.scope.get("path", "")[:100]
            return error_response(404, f"no route {path!r}; see /openapi.json")
        return error_response(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        log.exception("serve: %s failed", request.scope.get("path", "?"))
        return error_response(500, f"internal error ({exc.__class__.__name__}); see the server log")


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
