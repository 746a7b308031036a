"""The Redis layout: every key streamrec writes, and the encoding of a top-N list.

The contract for apps and readers in other languages is docs/redis-layout.md (keys, values,
TTLs, hash tags, how to read on a single node and on Redis Cluster); this module is its one
implementation in Python, tested byte for byte in tests/unit/test_redis_layout.py.

Keys (``P`` is ``redis.key_prefix`` from config, ``V`` a model version such as
``v20261125T120000Z-1a2b``, ``T`` the user's hash tag ``{u:<user_id>}``):

    P:model:current          STRING the version readers use: switching it switches every list
    P:m:V:u:T                HASH   one user's list under version V
                                    field ``list``  = the encoded list (JSON, below)
                                    field ``fence`` = watermark (ms) the list was built up to
                                    field ``segment`` = the user's segment under V (an int)
                                    field ``segment_p`` = JSON array of membership
                                    probabilities, one per segment (Gaussian mixture only)
    P:m:V:s:<segment>        HASH   segment ``segment``'s list under version V, same fields
                                    as a user's list (source ``segment``)
    P:m:V:popular            HASH   the global popular list of version V, same fields
    P:m:V:i:{i:<item>}       HASH   an item's most similar items under V (source ``similar``)
    P:st:u:T                 HASH   the streaming job's state of one user, whatever the version
                                    field ``state`` = JSON (model/user_state.py: it records the
                                    micro-batches and partitions applied)
                                    field ``rev`` = the state's revision, +1 on every write

Hash tags: every per-user key ends with the same tag ``{u:<user_id>}``, so on Redis Cluster a
user's state and lists (of every version) live in one slot and ``STREAM_WRITE_LUA`` and
``PUBLISH_WRITE_LUA`` may touch them in one call. Redis hashes the text between the first
``{`` and the first ``}`` after it; the prefix and the version never contain braces
(``check_key_part``), so the first ``{`` is the tag's own, and an id with a ``}`` in it cuts
every key of that user at the same place: the keys still share their slot.

A batch publish writes version V's keys while readers still follow the previous version, then
switches ``P:model:current`` in one command and removes the previous version's keys, so a
reader never sees a mix of two versions or a half-written one (read with ``LOOKUP_LUA`` or
``READ_LISTS_LUA`` of schemas/redis_lua.py: pointer and lists in one atomic step). The
streaming job writes into the namespace of the model version it scored with.

A list value is compact UTF-8 JSON:

    {"v":1,"source":"batch"|"stream"|"segment"|"popular"|"similar","model":"<version>",
     "generated_ms":<int>,"watermark_ms":<int>,"items":[["<item_id>",<score>],...]}

The user id sits whole inside its tag at the end of the key, so an id of any shape (colons,
braces, spaces, unicode) cannot reach another key. Writes go through the fenced scripts of
schemas/redis_lua.py (``FENCED_WRITE_LUA``, ``STREAM_WRITE_LUA``, ``PUBLISH_WRITE_LUA``): a
list replaces the stored one whole, and only when its watermark is not older than the stored
fence, so a replayed or late writer never puts an older list over a newer one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Container, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import orjson

LIST_FORMAT_VERSION = 1
FIELD_LIST = "list"
FIELD_FENCE = "fence"
FIELD_SEGMENT = "segment"
FIELD_SEGMENT_P = "segment_p"

SOURCE_BATCH = "batch"
SOURCE_STREAM = "stream"
SOURCE_POPULAR = "popular"
SOURCE_SEGMENT = "segment"
SOURCE_SIMILAR = "similar"


def user_tag(user_id: str) -> str:
    """The Redis Cluster hash tag every key of one user ends with: ``{u:<user_id>}``."""
    return "{u:" + user_id + "}"


def user_list_key(prefix: str, version: str, user_id: str) -> str:
    return f"{version_prefix(prefix, version)}u:{user_tag(user_id)}"


def item_tag(item_id: str) -> str:
    """The Redis Cluster hash tag of one item's keys: ``{i:<item_id>}``."""
    return "{i:" + item_id + "}"


def similar_list_key(prefix: str, version: str, item_id: str) -> str:
    """An item's most similar items under ``version`` (a hash: ``list``, ``fence``)."""
    return f"{version_prefix(prefix, version)}i:{item_tag(item_id)}"


def segment_list_key(prefix: str, version: str, segment: int) -> str:
    return f"{version_prefix(prefix, version)}s:{int(segment)}"


def encode_segment_probabilities(probabilities: list[float] | None) -> str:
    """The ``segment_p`` field: a JSON array (4 decimals), or "" when there are none."""
    if probabilities is None:
        return ""
    return json.dumps([round(float(p), 4) for p in probabilities], separators=(",", ":"))


def decode_segment_probabilities(raw: bytes | str) -> tuple[float, ...]:
    """The probabilities of a non-empty ``segment_p`` field."""
    return tuple(float(p) for p in json.loads(raw))


def popular_list_key(prefix: str, version: str) -> str:
    return f"{version_prefix(prefix, version)}popular"


def version_prefix(prefix: str, version: str) -> str:
    """Every key of ``version`` starts with this (the Lua readers build keys the same way)."""
    check_key_part("prefix", prefix)
    check_key_part("version", version)
    return f"{prefix}:m:{version}:"


def all_versions_pattern(prefix: str) -> str:
    """A SCAN pattern for the keys of every version."""
    check_key_part("prefix", prefix)
    return f"{prefix}:m:*"


def version_of_key(prefix: str, key: str) -> str | None:
    """The version a key of ``all_versions_pattern`` belongs to."""
    head = f"{prefix}:m:"
    if not key.startswith(head):
        return None
    return key[len(head) :].split(":", 1)[0] or None


def check_key_part(name: str, value: str) -> None:
    """A prefix or a version with a brace would move the hash tag of every key built on it."""
    if "{" in value or "}" in value:
        raise ValueError(f"a Redis key {name} must not contain '{{' or '}}': {value!r}")


def version_keys_pattern(prefix: str, version: str) -> str:
    """A SCAN MATCH pattern for all keys of ``version``, glob characters of the prefix and
    version escaped."""
    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in version_prefix(prefix, version))
    return escaped + "*"


def user_state_key(prefix: str, user_id: str) -> str:
    return f"{prefix}:st:u:{user_tag(user_id)}"


def stream_run_key(prefix: str) -> str:
    """The Spark query id of the stream run whose fences the per-user states hold."""
    check_key_part("prefix", prefix)
    return f"{prefix}:stream:run"


def batch_lock_key(prefix: str) -> str:
    """The lock one batch run holds at a time (batch/run_lock.py)."""
    check_key_part("prefix", prefix)
    return f"{prefix}:lock:batch"


def current_model_key(prefix: str) -> str:
    return f"{prefix}:model:current"


def stream_metrics_key(prefix: str) -> str:
    """A Redis stream (XADD, trimmed to ``streaming.metrics_kept``): one entry per micro-batch
    of the streaming job's queries (streaming/metrics.py has the fields)."""
    return f"{prefix}:stats:stream"


@dataclass(frozen=True)
class RecList:
    items: tuple[tuple[str, float], ...]
    source: str
    model_version: str
    generated_ms: int
    watermark_ms: int


def encode_list(rec: RecList) -> bytes:
    payload = {
        "v": LIST_FORMAT_VERSION,
        "source": rec.source,
        "model": rec.model_version,
        "generated_ms": int(rec.generated_ms),
        "watermark_ms": int(rec.watermark_ms),
        # Scores rounded to 6 significant digits: enough to rank, half the bytes.
        "items": [[item, float(f"{score:.6g}")] for item, score in rec.items],
    }
    # The standard library's float format is the documented wire format (exponents as 1e-07,
    # 1e+16); decoding goes through orjson, which reads any JSON several times faster.
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class ListEncoder:
    """``encode_list``'s exact bytes for many lists of one source and model, straight from item
    positions and scores: the catalogue's ids are JSON-escaped once, not once per list (the
    stream encodes a list for every active user, and escaping every id of every list would be a
    sixth of its per-user CPU). Lists with a score that is not finite go through
    ``encode_list`` itself."""

    def __init__(self, item_ids: Sequence[str], source: str, model_version: str) -> None:
        self._ids = [_json_text(item) for item in item_ids]
        self._head = (
            f'{{"v":{LIST_FORMAT_VERSION},"source":{_json_text(source)},'
            f'"model":{_json_text(model_version)},"generated_ms":'
        )
        self._item_ids, self._source, self._model = item_ids, source, model_version

    def encode(
        self,
        positions: Sequence[int],
        scores: Sequence[float],
        generated_ms: int,
        watermark_ms: int,
    ) -> bytes:
        """The list of the items at ``positions`` (catalogue order) with their ``scores``."""
        rounded = [float(f"{score:.6g}") for score in scores]
        if not all(math.isfinite(score) for score in rounded):
            pairs = zip(positions, scores, strict=True)
            scored = tuple((self._item_ids[i], float(s)) for i, s in pairs)
            return encode_list(
                RecList(scored, self._source, self._model, generated_ms, watermark_ms)
            )
        ids = self._ids
        # repr is the standard library's float format (json.dumps uses float.__repr__).
        items = ",".join(
            [f"[{ids[i]},{score!r}]" for i, score in zip(positions, rounded, strict=True)]
        )
        text = (
            f'{self._head}{int(generated_ms)},"watermark_ms":{int(watermark_ms)},'
            f'"items":[{items}]}}'
        )
        return text.encode("utf-8")


def _json_text(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def decode_list(
    raw: bytes | str, limit: int | None = None, exclude: Container[str] = ()
) -> RecList:
    """A stored list; with ``limit`` and ``exclude``, only its first ``limit`` items that are
    not in ``exclude`` (a lookup decodes no more than it returns)."""
    data: dict[str, Any] = orjson.loads(raw)
    if data.get("v") != LIST_FORMAT_VERSION:
        raise ValueError(f"unsupported list format version {data.get('v')!r}")
    pairs = ((str(item), float(score)) for item, score in data["items"] if item not in exclude)
    return RecList(
        items=tuple(pairs if limit is None else islice(pairs, limit)),
        source=data["source"],
        model_version=data["model"],
        generated_ms=int(data["generated_ms"]),
        watermark_ms=int(data["watermark_ms"]),
    )
