"""The operator page of `streamrec serve`: one static page and the JSON it draws from.

    GET /console                       the page (HTML, script and style: no data in them)
    GET /console/static/{name}         its script and style
    GET /console/api/auth              whether a key is needed (open, like /health)
    GET /console/api/stream            the stream's micro-batches, downsampled, and keep-up
    GET /console/api/dead-letters      the newest dead letters (cached a few seconds)
    GET /console/api/models            every model version: data, parameters, holdout, gate
    GET /console/api/segments          a version's segments: sizes, distinctive items, plots
    GET /console/api/segments/{version}/plots/{name}   one plot of that report (PNG)
    GET /console/api/user?user_id=     a user's list, segment and streaming state

The JSON routes are the API's (same key, same errors, in /openapi.json) and scripts may read
them too. A browser cannot set a header on a page navigation, so the page and its files carry
no data and need no key; the page asks for the key once, keeps it in the tab's
sessionStorage, and sends it in ``X-API-Key`` on every fetch, images included (fetched as
blobs). Every asset is served from the package: nothing is fetched from the internet.
"""

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Annotated, Any, TypeVar

import orjson
import redis
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from streamrec.batch.segment_markdown import PLOTS
from streamrec.console_data import DeadLetterReader, state_summary, stream_series
from streamrec.errors import ModelStoreError, ServiceUnavailable
from streamrec.lookup import AsyncLookupClient
from streamrec.lookup_answers import check_user_id
from streamrec.model import store
from streamrec.model.describe import describe
from streamrec.model.user_state import decode_state
from streamrec.redis_lists import unavailable
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

# The most micro-batch entries one request reads from the metrics stream, whatever the window:
# what bounds the work (bench/console.py) and the payload when the stream holds 100,000
# entries or more.
MAX_ENTRIES = 5_000
# A poll's answer is reused this long for the same window and points: tabs polling together
# cost one read.
STREAM_CACHE_S = 2.0
STATIC = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
REPORT = "segments/report"
_VERSION = re.compile(r"v[0-9A-Za-z-]{1,80}")
_JSON = "application/json; charset=utf-8"


class StreamSeries(BaseModel):
    """Columns (one array per field, one element per point), oldest point first."""

    points: int
    entries: int
    total_entries: int
    truncated: bool
    from_ms: int | None
    to_ms: int | None
    newest: dict[str, Any] | None
    lists: dict[str, list[Any]]
    archive: dict[str, list[Any]]
    keeping_up: dict[str, Any]


class DeadLetters(BaseModel):
    topic: str
    read_ms: int
    letters: list[dict[str, Any]]


class ModelVersions(BaseModel):
    live: str | None
    versions: list[dict[str, Any]]


class SegmentReport(BaseModel):
    version: str | None
    report: dict[str, Any] | None
    plots: dict[str, str]


class UserView(BaseModel):
    user_id: str
    now_ms: int
    recommendations: dict[str, Any]
    segment: dict[str, Any]
    state: dict[str, Any] | None


def _json(status: int, payload: Any) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=_JSON)


def _static(name: str, media_type: str) -> Response:
    data = (resources.files("streamrec") / "console_static" / name).read_bytes()
    return Response(data, media_type=media_type, headers={"Cache-Control": "no-cache"})


async def _bounded(lookup: AsyncLookupClient, call: Awaitable[T]) -> T:
    """``call``, waiting at most the server's Redis timeout, else ServiceUnavailable."""
    try:
        async with asyncio.timeout(lookup.timeout_s):
            return await call
    except (redis.ConnectionError, redis.TimeoutError, TimeoutError) as exc:
        raise unavailable(lookup.cfg, exc) from exc


def versions_view(model_store: str, live: str | None) -> dict[str, Any]:
    """Every complete version, newest first, as `streamrec models` describes it, with its
    segments' summary and the version Redis readers follow. Blocking (reads the store)."""
    rows = []
    for version in reversed(store.versions(model_store)):
        try:
            row = describe(model_store, version)
            meta = store.read_meta(model_store, version)
        except ModelStoreError as exc:  # one unreadable version does not hide the others
            rows.append({"version": version, "error": str(exc)})
            continue
        row["segments"] = meta.get("segments")
        row["interactions"] = meta.get("interactions")
        row["trained_at"] = _trained_at(version)
        rows.append(row)
    return {"live": live or store.current_version(model_store), "versions": rows}


def _trained_at(version: str) -> str | None:
    """The UTC time in a version's name (store.new_version_name: vYYYYmmddTHHMMSSZ-xxxx)."""
    stamp = version[1:].split("-", 1)[0]
    try:
        parsed = time.strptime(stamp, "%Y%m%dT%H%M%SZ")
    except ValueError:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", parsed)


def segment_view(model_store: str, version: str) -> dict[str, Any]:
    """The segment report of ``version`` (None when it has none) and its plots' URLs."""
    raw = store.read_version_file(model_store, version, f"{REPORT}/metrics.json")
    report = None if raw is None else orjson.loads(raw)
    plots = {}
    if report is not None:
        for key, name in (report.get("plots") or PLOTS).items():
            plots[key] = f"/console/api/segments/{version}/plots/{name}"
    return {"version": version, "report": report, "plots": plots}


def console_router(cfg: Config, secured: Sequence[Any], errors: dict[int | str, Any]) -> APIRouter:
    """The page's routes; ``secured`` are the API's key dependencies (empty without a key) and
    ``errors`` its documented error responses."""
    router = APIRouter()
    dead_letters = DeadLetterReader(cfg.kafka)
    last_stream: dict[tuple[float, int], tuple[float, dict[str, Any]]] = {}
    model_store, prefix = cfg.paths.model_store, cfg.redis.key_prefix

    def api(path: str, summary: str, model: type[BaseModel]) -> Callable[[F], F]:
        """A JSON route of the API: keyed, with its errors and its answer in the OpenAPI."""
        return router.get(
            path, summary=summary, response_model=model, responses=errors, dependencies=[*secured]
        )

    def lookup(request: Request) -> AsyncLookupClient:
        client: AsyncLookupClient = request.app.state.lookup
        return client

    @router.get("/console", include_in_schema=False)
    async def page() -> Response:
        return _static("index.html", "text/html; charset=utf-8")

    @router.get("/console/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in STATIC:
            return _json(404, {"error": f"no console file {name[:100]!r}"})
        return _static(name, STATIC[name])

    @router.get("/console/api/auth", summary="whether the JSON routes need the API key")
    async def auth() -> Response:
        """Open: the page asks for the key only when the server has one."""
        return _json(200, {"key_required": bool(secured)})

    @api(
        "/console/api/stream", "the stream's micro-batches over a window, downsampled", StreamSeries
    )
    async def stream(
        request: Request,
        minutes: Annotated[float, Query(gt=0, le=10_080)] = 60,
        points: Annotated[int, Query(ge=10, le=2_000)] = 300,
    ) -> Response:
        """Per query (``lists``, ``archive``): event → Redis lag p50/p95/p99, records/s in
        and processed, micro-batch duration, dead letters/s, counts; at most ``points``
        points from the newest 5,000 micro-batches of the last ``minutes`` (``truncated``
        when there were more). ``keeping_up`` judges the lists query from its newest
        micro-batches; ``newest`` is the newest entry, however old. Times are entry ids
        (Redis's clock at XADD); the window ends at this server's clock. An answer is reused
        for 2 s for the same parameters."""
        cached = last_stream.get((minutes, points))
        if cached is not None and time.monotonic() - cached[0] < STREAM_CACHE_S:
            return _json(200, cached[1])
        client, key = lookup(request), L.stream_metrics_key(prefix)
        since = int(time.time() * 1000 - minutes * 60_000)
        async with client.client.pipeline(transaction=False) as pipe:
            pipe.xlen(key)
            pipe.xrevrange(key, count=1)
            pipe.xrevrange(key, min=str(since), count=MAX_ENTRIES)
            total, newest, entries = await _bounded(client, pipe.execute())
        limit = cfg.streaming.max_offsets_per_trigger
        body = await asyncio.to_thread(stream_series, entries, newest, points, limit)
        body.update(total_entries=total, truncated=len(entries) >= MAX_ENTRIES)
        last_stream.clear()  # one answer kept: any parameters a client sends cost no memory
        last_stream[(minutes, points)] = (time.monotonic(), body)
        return _json(200, body)

    @api("/console/api/dead-letters", "the newest records of the dead-letter topic", DeadLetters)
    async def newest_dead_letters() -> Response:
        """At most 20 records from the end of each partition, newest first, with their reason
        and source; read at most every 10 s, whoever asks (Kafka is not read per request)."""
        try:
            letters = await asyncio.to_thread(dead_letters.newest)
        except Exception as exc:  # kafka-python's errors have no common root worth naming
            raise ServiceUnavailable(
                f"the dead-letter topic could not be read from {cfg.kafka.bootstrap_servers} "
                f"({exc!r}); start the stack with `streamrec stack up` or fix kafka.* in the "
                "config file"
            ) from exc
        topic = cfg.kafka.dead_letter_topic
        return _json(200, {"topic": topic, "read_ms": int(time.time() * 1000), "letters": letters})

    @api("/console/api/models", "every model version in the store, newest first", ModelVersions)
    async def models(request: Request) -> Response:
        """When each version was trained, on how many events, users and items, its chosen
        parameters and how they were chosen, its holdout metrics beside popularity's and the
        live model's, and the promotion gate's decision. ``live`` is Redis's pointer."""
        live = await lookup(request).model_version()
        return _json(200, await asyncio.to_thread(versions_view, model_store, live))

    @api(
        "/console/api/segments",
        "a version's segments: sizes, distinctive items, plots",
        SegmentReport,
    )
    async def segments(request: Request, version: str | None = None) -> Response:
        """The segment report of ``version`` (default: the live one); ``report`` is None when
        the version has no segments."""
        if version is None:
            version = await lookup(request).model_version()
            if version is None:
                return _json(200, {"version": None, "report": None, "plots": {}})
        if not _VERSION.fullmatch(version):
            return _json(400, {"error": f"not a model version: {version[:100]!r}"})
        return _json(200, await asyncio.to_thread(segment_view, model_store, version))

    @router.get(
        "/console/api/segments/{version}/plots/{name}",
        summary="one plot of a version's segment report",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}, **errors},
        dependencies=[*secured],
    )
    async def plot(version: str, name: str) -> Response:
        if not _VERSION.fullmatch(version) or name not in PLOTS.values():
            return _json(404, {"error": f"no plot {name[:100]!r} of {version[:100]!r}"})
        data = await asyncio.to_thread(
            store.read_version_file, model_store, version, f"{REPORT}/{name}"
        )
        if data is None:
            return _json(404, {"error": f"version {version} has no plot {name}"})
        return Response(data, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @api("/console/api/user", "a user's list, segment and streaming state", UserView)
    async def user(
        request: Request,
        user_id: Annotated[str, Query(min_length=1)],
        n: Annotated[int, Query(ge=1, le=cfg.serve.max_n)] = 10,
    ) -> Response:
        """What /recommendations answers (list, source, model version, generated and
        watermark times), the user's segment, and the stream's state of them: event counts
        by type, newest event time and ids, the items they weigh most."""
        check_user_id(user_id)
        client = lookup(request)
        rec = await client.lookup(user_id, n)
        segment = await client.segment(user_id)
        raw = await _bounded(client, client.client.hget(L.user_state_key(prefix, user_id), "state"))
        state = None if raw is None else state_summary(decode_state(raw))
        return _json(
            200,
            {
                "user_id": user_id,
                "now_ms": int(time.time() * 1000),
                "recommendations": rec.to_json(),
                "segment": segment.to_json(),
                "state": state,
            },
        )

    return router
