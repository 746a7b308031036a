"""The bodies `streamrec serve` answers with, as the OpenAPI document describes them."""

# No `from __future__ import annotations`: FastAPI reads the route signatures' annotations,
# which refer to this config's limits, when the routes are declared.
from typing import Literal

from pydantic import BaseModel


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
