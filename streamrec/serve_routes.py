"""The lookup routes of `streamrec serve`: a user's list (with filters, diversity and
explanations), an anonymous session's list, a user's segment, an item's similar items and the
popular list."""

# No `from __future__ import annotations`: FastAPI reads the route signatures' annotations,
# which refer to this config's limits, when the routes are declared.
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, StringConstraints

from streamrec.lookup_answers import Recommendations, max_item_id_length
from streamrec.model.user_state import decode_state
from streamrec.personal import (
    LiveModel,
    LiveModels,
    SessionItem,
    diversified,
    explanations,
    rank_session,
    session_history,
)
from streamrec.schemas.config import Config
from streamrec.serve_bodies import ItemListBody, RecommendationsBody, SegmentBody
from streamrec.serve_http import (
    POPULAR,
    Metrics,
    check_event_types,
    item_filter,
    json_response,
    lookup_client,
    parse_diversity,
    parse_flag,
    parse_n,
    target_of,
    with_explanations,
)


def add_lookup_routes(
    app: FastAPI,
    cfg: Config,
    metrics: Metrics,
    secured: list[Any],
    errors: dict[int | str, dict[str, Any]],
    categories: Mapping[str, frozenset[str]] | None,
) -> None:
    """The lookup routes, on ``app``."""
    serve_cfg = cfg.serve
    # The list routes' query parameters, described in the OpenAPI document; their values are
    # read from the raw query (parse_target, parse_n), as the errors say.
    Count = Annotated[
        int | None,
        Query(ge=1, le=serve_cfg.max_n, description=f"default {serve_cfg.default_n}"),
    ]
    Excluded = Annotated[list[str] | None, Query(description="an item id to leave out (repeat)")]

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
        rec = await lookup_client(request).lookup(
            target.subject, serve_cfg.max_n if mix else count, blocked
        )
        metrics.count_source(rec.source)
        if not mix and not parse_flag(params, "explain"):
            return json_response(200, rec.to_json())
        user = target.subject

        async def user_history(live: LiveModel) -> Any:
            return decode_state(await lookup_client(request).user_state(user)).interactions(
                live.index
            )

        history_of = user_history if parse_flag(params, "explain") else None
        return json_response(200, await personalised(request, rec, count, mix, history_of))

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
        version = await lookup_client(request).model_version()
        n = session.n or serve_cfg.default_n
        blocked = item_filter(session.exclude, session.category, categories)
        if version is None:
            return json_response(
                200, {**Recommendations("", (), None, None).to_json(), "user_id": None}
            )
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
            popular = await lookup_client(request).popular(pool, blocked)
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
        return json_response(200, {**body, "user_id": None, "unknown_items": unknown})

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
        return json_response(200, (await lookup_client(request).segment(target.subject)).to_json())

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
        answer = await lookup_client(request).similar(
            target.subject, parse_n(target.params, serve_cfg), target.params.get("exclude", ())
        )
        return json_response(200, {"item_id": target.subject, **answer.to_json()})

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
        answer = await lookup_client(request).popular(
            parse_n(target.params, serve_cfg), target.params.get("exclude", ())
        )
        return json_response(200, answer.to_json())
