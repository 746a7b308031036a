"""The Redis layout: every key streamrec writes, and the encoding of a top-N list.

Keys (``P`` is ``redis.key_prefix`` from config):

    P:rec:u:<user_id>     HASH  one user's current list
                                 field ``list``  = the encoded list (JSON, below)
                                 field ``fence`` = integer watermark (ms) the list was built up to
    P:rec:popular         HASH  the global popular list, same fields
    P:model:current       STRING the model version the batch job published last

A list value is compact UTF-8 JSON:

    {"v":1,"source":"batch"|"stream","model":"<version>","generated_ms":<int>,
     "watermark_ms":<int>,"items":[["<item_id>",<score>],...]}

The user id is the last part of its key, so an id of any shape (colons, braces, spaces, unicode)
cannot reach another key. Writes go through ``FENCED_WRITE_LUA``: a list replaces the stored one
whole, and only when its watermark is not older than the stored fence, so a replayed or late
writer never puts an older list over a newer one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

LIST_FORMAT_VERSION = 1
FIELD_LIST = "list"
FIELD_FENCE = "fence"

SOURCE_BATCH = "batch"
SOURCE_STREAM = "stream"
SOURCE_POPULAR = "popular"


def user_list_key(prefix: str, user_id: str) -> str:
    return f"{prefix}:rec:u:{user_id}"


def popular_list_key(prefix: str) -> str:
    return f"{prefix}:rec:popular"


def current_model_key(prefix: str) -> str:
    return f"{prefix}:model:current"


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
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode_list(raw: bytes | str) -> RecList:
    data: dict[str, Any] = json.loads(raw)
    if data.get("v") != LIST_FORMAT_VERSION:
        raise ValueError(f"unsupported list format version {data.get('v')!r}")
    return RecList(
        items=tuple((str(item), float(score)) for item, score in data["items"]),
        source=data["source"],
        model_version=data["model"],
        generated_ms=int(data["generated_ms"]),
        watermark_ms=int(data["watermark_ms"]),
    )


# KEYS[1] = list key; ARGV = encoded list, fence (int ms), ttl seconds.
# Returns 1 when written, 0 when the stored list is newer (and was kept).
FENCED_WRITE_LUA = """
local stored = redis.call('HGET', KEYS[1], 'fence')
if stored and tonumber(stored) > tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], 'list', ARGV[1], 'fence', ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""
