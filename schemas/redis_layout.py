"""The Redis layout: every key streamrec writes, and the encoding of a top-N list.

Keys (``P`` is ``redis.key_prefix`` from config, ``V`` a model version such as
``v20261125T120000Z-1a2b``):

    P:model:current          STRING the version readers use: switching it switches every list
    P:m:V:u:<user_id>        HASH   one user's list under version V
                                    field ``list``  = the encoded list (JSON, below)
                                    field ``fence`` = watermark (ms) the list was built up to
                                    field ``segment`` = the user's segment under V (an int)
                                    field ``segment_p`` = JSON array of membership
                                    probabilities, one per segment (Gaussian mixture only)
    P:m:V:s:<segment>        HASH   segment ``segment``'s list under version V, same fields
                                    as a user's list (source ``segment``)
    P:m:V:popular            HASH   the global popular list of version V, same fields
    P:st:u:<user_id>         HASH   the streaming job's state of one user, whatever the version
                                    field ``state`` = JSON (model/user_state.py)
                                    field ``batch`` = the last micro-batch applied to it

A batch publish writes version V's keys while readers still follow the previous version, then
switches ``P:model:current`` in one command and removes the previous version's keys, so a
reader never sees a mix of two versions or a half-written one (read with ``READ_LISTS_LUA``:
pointer and lists in one atomic step). The streaming job writes into the namespace of the model
version it scored with.

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
FIELD_SEGMENT = "segment"
FIELD_SEGMENT_P = "segment_p"

SOURCE_BATCH = "batch"
SOURCE_STREAM = "stream"
SOURCE_POPULAR = "popular"
SOURCE_SEGMENT = "segment"


def user_list_key(prefix: str, version: str, user_id: str) -> str:
    return f"{version_prefix(prefix, version)}u:{user_id}"


def segment_list_key(prefix: str, version: str, segment: int) -> str:
    return f"{version_prefix(prefix, version)}s:{int(segment)}"


def encode_segment_probabilities(probabilities: list[float] | None) -> str:
    """The ``segment_p`` field: a JSON array (4 decimals), or "" when there are none."""
    if probabilities is None:
        return ""
    return json.dumps([round(float(p), 4) for p in probabilities], separators=(",", ":"))


def popular_list_key(prefix: str, version: str) -> str:
    return f"{version_prefix(prefix, version)}popular"


def version_prefix(prefix: str, version: str) -> str:
    """Every key of ``version`` starts with this (the Lua reader builds keys the same way)."""
    return f"{prefix}:m:{version}:"


def version_keys_pattern(prefix: str, version: str) -> str:
    """A SCAN MATCH pattern for all keys of ``version``, glob characters of the prefix and
    version escaped."""
    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in version_prefix(prefix, version))
    return escaped + "*"


def user_state_key(prefix: str, user_id: str) -> str:
    return f"{prefix}:st:u:{user_id}"


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
# The stream's write: replaces the list unless the stored one is newer.
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


# A batch publish's write of one user into the new version.
# KEYS[1] = the user's key in the new version, KEYS[2] = their key in the current version
# ARGV = encoded list, fence (the model's data cut, ms), ttl seconds, segment ("" for none),
#        segment probabilities ("" for none).
# A list the stream refreshed after the data cut (in either version) is kept, not replaced by
# the older batch list. Segment ids belong to a version's segmentation, so the new version's
# segment is always written, except over one the stream already assigned under the new version.
# Returns 1 when the batch list was written, 0 when a newer one was kept.
PUBLISH_WRITE_LUA = """
local fence = tonumber(ARGV[2])
local function set_segment(overwrite)
  if ARGV[4] == '' then return end
  local command = overwrite and 'HSET' or 'HSETNX'
  redis.call(command, KEYS[1], 'segment', ARGV[4])
  if ARGV[5] ~= '' then redis.call(command, KEYS[1], 'segment_p', ARGV[5]) end
end
local own = redis.call('HGET', KEYS[1], 'fence')
if own and tonumber(own) > fence then
  set_segment(false)
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
  return 0
end
local prev = redis.call('HMGET', KEYS[2], 'list', 'fence')
if prev[1] and prev[2] and tonumber(prev[2]) > fence then
  redis.call('HSET', KEYS[1], 'list', prev[1], 'fence', prev[2])
  set_segment(true)
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
  return 0
end
redis.call('HSET', KEYS[1], 'list', ARGV[1], 'fence', ARGV[2])
set_segment(true)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""

# The stream's write of one user: their new state and, in the same atomic step, their list and
# segment under the model version the stream scored with.
# KEYS[1] = the user's list key (version V), KEYS[2] = their state key
# ARGV = encoded list ("" for none), fence (the user's newest event time, ms), ttl seconds,
#        micro-batch id, encoded state, segment ("" for none), segment probabilities ("" none)
# A micro-batch applied already (a replay, a retried task) changes nothing: returns -1.
# Otherwise returns 1 when the list was written, 0 when the stored list is newer (or no list).
STREAM_WRITE_LUA = """
local applied = redis.call('HGET', KEYS[2], 'batch')
if applied and tonumber(applied) >= tonumber(ARGV[4]) then
  return -1
end
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[2], 'state', ARGV[5], 'batch', ARGV[4])
redis.call('EXPIRE', KEYS[2], ttl)
local wrote = 0
if ARGV[1] ~= '' then
  local stored = redis.call('HGET', KEYS[1], 'fence')
  if not stored or tonumber(stored) <= tonumber(ARGV[2]) then
    redis.call('HSET', KEYS[1], 'list', ARGV[1], 'fence', ARGV[2])
    wrote = 1
  end
end
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[1], 'segment', ARGV[6])
  if ARGV[7] ~= '' then
    redis.call('HSET', KEYS[1], 'segment_p', ARGV[7])
  end
end
if wrote == 1 or ARGV[6] ~= '' then
  redis.call('EXPIRE', KEYS[1], ttl)
end
return wrote
"""

# Atomic read of the current version and some users' lists (and the popular list).
# KEYS[1] = P:model:current; ARGV[1] = P (the prefix), ARGV[2..] = user ids.
# Returns {version or false, popular list or false, list of user 1 or false, ...}.
READ_LISTS_LUA = """
local version = redis.call('GET', KEYS[1])
if not version then
  return {false}
end
local base = ARGV[1] .. ':m:' .. version .. ':'
local out = {version, redis.call('HGET', base .. 'popular', 'list')}
for i = 2, #ARGV do
  out[#out + 1] = redis.call('HGET', base .. 'u:' .. ARGV[i], 'list')
end
return out
"""
