"""What keeps `streamrec serve`'s hot route cheap: ``GET /recommendations/{user_id}`` answered
in the ASGI layer (``RecommendationsFastPath``), and uvicorn's httptools protocol sending a
response in one write (``CoalescingHttpToolsProtocol``). Measured by `streamrec bench lookup`
(docs/results/lookup-asgi.md)."""

import asyncio
from typing import Any, cast

from fastapi.responses import Response
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from streamrec.errors import ServiceUnavailable
from streamrec.lookup import AsyncLookupClient
from streamrec.lookup_answers import BadLookup
from streamrec.schemas.config import ServeConfig
from streamrec.serve_http import (
    RECOMMENDATIONS,
    HttpError,
    Metrics,
    Target,
    authorized,
    error_response,
    json_response,
    parse_n,
    parse_target,
    raw_target,
)


class RecommendationsFastPath:
    """GET /recommendations/{user_id} answered in the ASGI layer, before Starlette's routing
    and FastAPI's per-request parameter handling (together most of the hot route's Python
    time). It takes only a request it answers exactly as the declared route would: the route's
    own query parameters (``QUERY``) with a plain decimal ``n``, and the API key when one is
    set. Every other request (a bad id or ``n``, another parameter, no key, another route) goes
    on to the declared route, which also stays the OpenAPI description. Keep ``QUERY`` and
    ``answer`` in step with ``recommendations`` in ``create_app``."""

    QUERY = frozenset({"n", "exclude"})
    HEAD = "/recommendations/"

    def __init__(self, app: ASGIApp, metrics: Metrics, cfg: ServeConfig, key: bytes) -> None:
        self.app, self.metrics, self.cfg, self.key = app, metrics, cfg, key
        self.route: Any = None  # the declared route, for MetricsMiddleware's label

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = self.taken(scope)
        if target is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route or self.declared(scope)
        response = await self.answer(scope["app"].state.lookup, target)
        await response(scope, receive, send)

    def taken(self, scope: Scope) -> Target | None:
        """The request's target when this path answers it, else None."""
        if scope["type"] != "http" or scope["method"] != "GET":
            return None
        if not scope["path"].startswith(self.HEAD):
            return None
        try:
            target = parse_target(raw_target(scope))
        except HttpError:
            return None
        n = target.params.get("n")
        if target.route != RECOMMENDATIONS or not self.QUERY.issuperset(target.params):
            return None
        if n and not (n[-1].isascii() and n[-1].isdigit() and 1 <= int(n[-1]) <= self.cfg.max_n):
            return None
        if self.key and not authorized(self.key, Headers(scope=scope)):
            return None
        return target

    async def answer(self, lookup: AsyncLookupClient, target: Target) -> Response:
        assert target.subject is not None
        try:
            rec = await lookup.lookup(
                target.subject, parse_n(target.params, self.cfg), target.params.get("exclude", ())
            )
        except BadLookup as exc:
            return error_response(400, str(exc))
        except ServiceUnavailable as exc:
            return error_response(503, str(exc))
        self.metrics.count_source(rec.source)
        return json_response(200, rec.to_json())

    def declared(self, scope: Scope) -> Any:
        routes = scope["app"].router.routes
        self.route = next(r for r in routes if getattr(r, "path_format", "") == RECOMMENDATIONS)
        return self.route


class _CoalescedWrites:
    """A connection's transport whose writes in one turn of the event loop leave in one send:
    uvicorn writes a response's head and body apart, which for a small answer costs two send
    calls and two TCP segments (and two wake-ups of the client)."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport, self._pending = transport, bytearray()
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending += data

    def _flush(self) -> None:
        if self._pending and not self._transport.is_closing():
            self._transport.write(bytes(self._pending))
        self._pending.clear()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._pending)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a response's writes coalesced (``_CoalescedWrites``)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(cast(asyncio.Transport, _CoalescedWrites(transport)))
