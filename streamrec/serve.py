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

This module assembles the app and runs it; the routes are in streamrec/serve_routes.py
(lookups) and streamrec/serve_ops.py (events, probes, metrics, errors), what they share in
streamrec/serve_http.py and streamrec/serve_bodies.py, the hot route's shortcut in
streamrec/serve_fast.py, and the operator page in streamrec/console.py.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures' annotations,
# which refer to this config's limits, when the routes are declared.
import asyncio
import gc
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.security import APIKeyHeader

from streamrec.console import console_router
from streamrec.lookup import AsyncLookupClient, LookupClient
from streamrec.personal import (
    LiveModels,
    read_item_categories,
)
from streamrec.producer.publisher import EventPublisher
from streamrec.schemas.config import ENV_CONFIG_PATH, Config
from streamrec.schemas.config_loader import dump_config, load_config
from streamrec.serve_bodies import ErrorBody
from streamrec.serve_http import _METRICS_DIR, HttpError, Metrics, MetricsMiddleware, authorized
from streamrec.serve_ops import add_error_handlers, add_ops_routes
from streamrec.serve_routes import add_lookup_routes

log = logging.getLogger(__name__)


def create_app(cfg: Config) -> FastAPI:
    """The lookup service for ``cfg``: its routes, errors, probes and metrics. The Redis client
    opens when the app starts (in each worker) and closes when it stops."""
    serve_cfg, key = cfg.serve, cfg.serve.api_key.encode("utf-8")
    metrics = Metrics()
    publisher: list[EventPublisher] = []  # POST /events' producer, once opened
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
    add_lookup_routes(app, cfg, metrics, secured, errors, categories)
    add_ops_routes(app, cfg, metrics, secured, publisher)
    app.include_router(console_router(cfg, secured, errors))  # the operator page: /console
    add_error_handlers(app, serve_cfg)
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
