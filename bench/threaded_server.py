"""The lookup server of streamrec 0.1 on the standard library's ThreadingHTTPServer, kept as
the baseline `streamrec bench lookup` measures `streamrec serve` against in the same run:

    python -m streamrec.bench.threaded_server --config FILE [--host H] [--port P]

Same routes and answers as `streamrec serve` (GET /recommendations/{user_id},
/segments/{user_id}, /health, /metrics, /openapi.json), one thread per connection.
"""

from __future__ import annotations

import gc
import hmac
import json
import logging
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from streamrec.errors import ServiceUnavailable
from streamrec.lookup import LookupClient
from streamrec.lookup_answers import BadLookup, max_user_id_length
from streamrec.schemas.config import Config, ServeConfig
from streamrec.schemas.config_loader import load_config
from streamrec.serve_http import HttpError, Target, parse_n, parse_target
from streamrec.serve_ops import health_of

log = logging.getLogger(__name__)

RECOMMENDATIONS, SEGMENTS = "/recommendations/{user_id}", "/segments/{user_id}"
HEALTH, METRICS, OPENAPI, OTHER = "/health", "/metrics", "/openapi.json", "other"
_BY_HEAD = {"recommendations": RECOMMENDATIONS, "segments": SEGMENTS}
_FIXED = {"/health": HEALTH, "/metrics": METRICS, "/openapi.json": OPENAPI}
_OPEN_ROUTES = (HEALTH, OPENAPI)  # answered without the API key
_JSON = "application/json; charset=utf-8"


class Metrics:
    """Request counts, a latency histogram per route, and the source of every answered list,
    rendered as Prometheus text. Thread-safe."""

    BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, int]] = Counter()
        self._buckets: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}
        self._sources: Counter[str] = Counter()

    def observe(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(route, status)] += 1
            counts = self._buckets.setdefault(route, [0] * (len(self.BUCKETS) + 1))
            counts[
                next((i for i, b in enumerate(self.BUCKETS) if seconds <= b), len(self.BUCKETS))
            ] += 1
            self._sums[route] = self._sums.get(route, 0.0) + seconds

    def count_source(self, source: str | None) -> None:
        with self._lock:
            self._sources[source or "none"] += 1

    def render(self) -> str:
        name = "streamrec_http_request_duration_seconds"
        with self._lock:
            lines = [
                "# HELP streamrec_http_requests_total HTTP requests by route and status.",
                "# TYPE streamrec_http_requests_total counter",
            ]
            lines += [
                f'streamrec_http_requests_total{{route="{r}",code="{c}"}} {v}'
                for (r, c), v in sorted(self._requests.items())
            ]
            lines += [
                f"# HELP {name} Time from request to response written, by route.",
                f"# TYPE {name} histogram",
            ]
            for route, counts in sorted(self._buckets.items()):
                total = 0
                for bound, count in zip([*map(str, self.BUCKETS), "+Inf"], counts, strict=True):
                    total += count
                    lines.append(f'{name}_bucket{{route="{route}",le="{bound}"}} {total}')
                lines.append(f'{name}_sum{{route="{route}"}} {self._sums.get(route, 0.0):.6f}')
                lines.append(f'{name}_count{{route="{route}"}} {total}')
            lines += [
                "# HELP streamrec_lookup_source_total Answered lookups by list source.",
                "# TYPE streamrec_lookup_source_total counter",
            ]
            lines += [
                f'streamrec_lookup_source_total{{source="{s}"}} {v}'
                for s, v in sorted(self._sources.items())
            ]
        return "\n".join(lines) + "\n"


def _json(status: int, payload: Any) -> tuple[int, bytes, str]:
    return status, json.dumps(payload, ensure_ascii=False).encode("utf-8"), _JSON


class Headers(Protocol):
    """What the server needs of request headers (http.client's message, or a dict)."""

    def get(self, name: str, /) -> str | None: ...


class App:
    """What each request gets, apart from the socket: routing, auth, lookups, metrics."""

    def __init__(self, lookup: LookupClient, cfg: ServeConfig, model_store: str = "") -> None:
        self.lookup, self.cfg, self.metrics = lookup, cfg, Metrics()
        self.model_store = model_store  # "" when this server cannot read it
        self._key = cfg.api_key.encode("utf-8")

    def authorized(self, headers: Headers) -> bool:
        if not self._key:
            return True
        given = headers.get("X-API-Key") or ""
        bearer = headers.get("Authorization") or ""
        if not given and bearer.startswith("Bearer "):
            given = bearer[len("Bearer ") :]
        # Header values arrive decoded as latin-1: encoding back gives the bytes sent, so a
        # key with non-ASCII characters matches when the client sent it as UTF-8.
        return hmac.compare_digest(given.encode("latin-1", "replace"), self._key)

    def handle(self, target: str, headers: Headers) -> tuple[str, tuple[int, bytes, str]]:
        route = OTHER
        try:
            request = parse_target(target)
            route = request.route
            if route not in _OPEN_ROUTES and not self.authorized(headers):
                raise HttpError(401, "a valid API key is required (X-API-Key header)")
            return route, self._answer(request)
        except HttpError as exc:
            return route, _json(exc.status, {"error": str(exc)})
        except BadLookup as exc:
            return route, _json(400, {"error": str(exc)})
        except ServiceUnavailable as exc:
            return route, _json(503, {"error": str(exc)})

    def _answer(self, request: Target) -> tuple[int, bytes, str]:
        route, params = request.route, request.params
        allowed = {RECOMMENDATIONS: {"n", "exclude"}}.get(route, set())
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise HttpError(400, f"unknown query parameter {unknown[0][:40]!r}")
        if route == RECOMMENDATIONS:
            assert request.subject is not None
            rec = self.lookup.lookup(
                request.subject, parse_n(params, self.cfg), params.get("exclude", ())
            )
            self.metrics.count_source(rec.source)
            return _json(200, rec.to_json())
        if route == SEGMENTS:
            assert request.subject is not None
            return _json(200, self.lookup.segment(request.subject).to_json())
        if route == HEALTH:
            status, body = health_of(self.lookup, self.model_store)
            return _json(status, body)
        if route == METRICS:
            return 200, self.metrics.render().encode(), "text/plain; version=0.0.4"
        return _json(200, openapi(self.cfg))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # no 40 ms Nagle stalls on small responses
    wbufsize = 1 << 16  # headers and body leave in one send, when the request is done
    server: _Server

    def do_GET(self) -> None:
        started = time.perf_counter()
        app = self.server.app
        route, (status, body, content_type) = app.handle(self.path, self.headers)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        app.metrics.observe(route, status, time.perf_counter() - started)

    def log_message(self, format: str, *args: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog is 5: a burst of new connections beyond it has its SYNs
    # dropped, and the client waits a second to retry.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        super().__init__(address, _Handler)


def make_server(cfg: Config, host: str | None = None, port: int | None = None) -> _Server:
    """A bound server with its Redis connection checked (port 0: any free port)."""
    lookup = LookupClient.open(cfg.redis)
    address = (host or cfg.serve.host, cfg.serve.port if port is None else port)
    return _Server(address, App(lookup, cfg.serve, cfg.paths.model_store))


def serve(cfg: Config, host: str | None = None, port: int | None = None) -> int:
    """Serve until interrupted; prints ``listening on http://HOST:PORT`` once ready."""
    server = make_server(cfg, host, port)
    bound_host, bound_port = server.server_address[:2]
    log.info(
        "serving lookups of prefix %s on %s:%s, auth %s",
        cfg.redis.key_prefix,
        bound_host,
        bound_port,
        "on" if cfg.serve.api_key else "off",
    )
    # Everything loaded so far lives as long as the process: keep it out of the collector's
    # full passes, which otherwise stall every request for tens of milliseconds.
    gc.collect()
    gc.freeze()
    print(f"listening on http://{bound_host!s}:{bound_port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        server.app.lookup.close()
    return 0


_ERROR: dict[str, Any] = {
    "description": "error",
    "content": {
        "application/json": {
            "schema": {"type": "object", "properties": {"error": {"type": "string"}}}
        }
    },
}

_ITEM: dict[str, Any] = {
    "type": "object",
    "properties": {"item_id": {"type": "string"}, "score": {"type": "number"}},
}
_NULLABLE_INT, _NULLABLE_STR = {"type": ["integer", "null"]}, {"type": ["string", "null"]}
_RECOMMENDATIONS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "user_id": {"type": "string"},
        "items": {"type": "array", "items": _ITEM},
        "source": {"enum": ["stream", "batch", "segment", "popular", None]},
        "model_version": _NULLABLE_STR,
        "generated_ms": _NULLABLE_INT,
        "watermark_ms": _NULLABLE_INT,
        "segment": _NULLABLE_INT,
    },
}

_SEGMENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "user_id": {"type": "string"},
        "model_version": _NULLABLE_STR,
        "segment": _NULLABLE_INT,
        "probabilities": {"type": ["array", "null"], "items": {"type": "number"}},
    },
}

_HEALTH: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"enum": ["ok", "no_model", "degraded", "unavailable"]},
        "reason": {"type": "string"},
        "redis": {"type": "string"},
        "model_version": _NULLABLE_STR,
    },
}


def openapi(cfg: ServeConfig) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the routes above."""
    user = {
        "name": "user_id",
        "in": "path",
        "required": True,
        "description": "the user id, URL-encoded (any characters, '/' as %2F)",
        "schema": {"type": "string", "minLength": 1, "maxLength": max_user_id_length()},
    }
    secured: list[dict[str, list[str]]] = [{"apiKey": []}] if cfg.api_key else []

    def get(
        summary: str,
        params: list[dict[str, Any]],
        ok: dict[str, Any],
        codes: tuple[str, ...],
        open_route: bool = False,
    ) -> dict[str, Any]:
        content_type = "text/plain" if "text" in ok else "application/json"
        responses = {
            "200": {"description": "ok", "content": {content_type: {"schema": ok.get("text", ok)}}}
        }
        responses.update({code: _ERROR for code in codes})
        if not open_route and cfg.api_key:
            responses["401"] = _ERROR
        op = {"summary": summary, "parameters": params, "responses": responses}
        return {"get": op | ({} if open_route else {"security": secured})}

    query: list[dict[str, Any]] = [
        {
            "name": "n",
            "in": "query",
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": cfg.max_n,
                "default": cfg.default_n,
            },
        },
        {
            "name": "exclude",
            "in": "query",
            "description": "an item id to leave out (repeat)",
            "schema": {"type": "array", "items": {"type": "string"}},
            "explode": True,
        },
    ]
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "streamrec lookup",
            "version": "1",
            "description": "Recommendations from Redis: the user's list, else their "
            "segment's, else the popular list; every answer from one model version.",
        },
        "paths": {
            RECOMMENDATIONS: get(
                "a user's top n", [user, *query], _RECOMMENDATIONS, ("400", "503")
            ),
            SEGMENTS: get("a user's segment", [user], _SEGMENT, ("400", "503")),
            HEALTH: get("Redis answers; the model version", [], _HEALTH, ("503",), True),
            METRICS: get("Prometheus metrics", [], {"text": {"type": "string"}}, ()),
            OPENAPI: get("this description", [], {"type": "object"}, (), True),
        },
    }
    if cfg.api_key:
        doc["components"] = {
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
        }
    return doc


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m streamrec.bench.threaded_server")
    parser.add_argument("--config", required=True)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    return serve(load_config(args.config), args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
