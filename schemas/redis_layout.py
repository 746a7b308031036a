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
    P:st:u:T                 HASH   the streaming job's state of one user, whatever the version
                                    field ``state`` = JSON (model/user_state.py)
                                    field ``batch`` = the last micro-batch applied to it

Hash tags: every per-user key ends with the same tag ``{u:<user_id>}``, so on Redis Cluster a
user's state and lists (of every version) live in one slot and ``STREAM_WRITE_LUA`` and
``PUBLISH_WRITE_LUA`` may touch them in one call. Redis hashes the text between the first
``{`` and the first ``}`` after it; the prefix and the version never contain braces
(``check_key_part``), so the first ``{`` is the tag's own, and an id with a ``}`` in it cuts
every key of that user at the same place: the keys still share their slot.

A batch publish writes version V's keys while readers still follow the previous version, then
switches ``P:model:current`` in one command and removes the previous version's keys, so a
reader never sees a mix of two versions or a half-written one (read with ``LOOKUP_LUA`` or
``READ_LISTS_LUA``: pointer and lists in one atomic step). The streaming job writes into the
namespace of the model version it scored with.

A list value is compact UTF-8 JSON:

    {"v":1,"source":"batch"|"stream"|"segment"|"popular","model":"<version>",
     "generated_ms":<int>,"watermark_ms":<int>,"items":[["<item_id>",<score>],...]}

The user id sits whole inside its tag at the end of the key, so an id of any shape (colons,
braces, spaces, unicode) cannot reach another key. Writes go through ``FENCED_WRITE_LUA``: a
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
    stream encodes a list for every active user; ``encode_list`` was a sixth of its per-user
    CPU). Lists with a score that is not finite go through ``encode_list`` itself."""

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
# KEYS[1] = the user's key in the new version
# ARGV = encoded list, fence (the model's data cut, ms), ttl seconds, segment ("" for none),
#        segment probabilities ("" for none).
# A list the stream already wrote under the new version from events after the data cut is kept,
# not replaced by the older batch list. A fresher stream list under the previous version is
# NOT carried over: it was scored with the previous model, and a reader following the new
# version must only see the new model's lists (the stream rescores those users under the new
# version when it loads it: streaming/job.py). Segment ids belong to a version's segmentation,
# so the new version's segment is always written, except over one the stream already assigned
# under the new version.
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
redis.call('HSET', KEYS[1], 'list', ARGV[1], 'fence', ARGV[2])
set_segment(true)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""

# The stream's write of one user: their new state and, in the same atomic step, their list and
# segment under the model version the stream scored with. The state was computed from the one
# read at revision ARGV[4] (the state hash's ``rev`` field, "" before the first write): when
# another writer got in between (the user's events came through two Kafka partitions, so two
# tasks of one micro-batch work on them at once) nothing is written and -2 returned, and the
# caller reads the state again and redoes the user. Replays are caught before the write: the
# state records the micro-batches and partitions already applied (model/user_state.py). The
# state has no TTL (a user's history outlives their lists; PERSIST clears one set before); the
# list gets the lists' TTL.
# KEYS[1] = the user's list key (version V), KEYS[2] = their state key
# ARGV = encoded list ("" for none), fence (the user's newest event time, ms), ttl seconds,
#        revision read, encoded state, segment ("" for none), segment probabilities ("" none)
# Returns 1 when the list was written, 0 when the stored list is newer (or no list), -2 on a
# lost race.
STREAM_WRITE_LUA = """
local rev = redis.call('HGET', KEYS[2], 'rev') or ''
if rev ~= ARGV[4] then
  return -2
end
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[2], 'state', ARGV[5], 'rev', (tonumber(rev) or 0) + 1)
redis.call('PERSIST', KEYS[2])
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

# The switch of readers (and the stream) to a version, forward only: version names sort by
# creation time, so a run that finished late never replaces a newer live version.
# KEYS[1] = the pointer P:model:current; ARGV[1] = the new version.
# Returns {1, previous or ""} when switched, {0, the newer live version} when not.
SWITCH_FORWARD_LUA = """
local live = redis.call('GET', KEYS[1])
if live and live > ARGV[1] then
  return {0, live}
end
redis.call('SET', KEYS[1], ARGV[1])
return {1, live or ''}
"""

# A user's state rebuilt from the event store (streaming/state_rebuild.py), written only if the
# stream has not changed it since it was read: KEYS[1] = the state key, ARGV[1] = the encoded
# state, ARGV[2] = the revision read ("" when there was none). Returns 1 when written.
STATE_REBUILD_LUA = """
local rev = redis.call('HGET', KEYS[1], 'rev') or ''
if rev ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'rev', (tonumber(rev) or 0) + 1)
return 1
"""

# The Lua readers below build keys from the prefix, the version and the user ids themselves
# (exactly as version_prefix, user_list_key and segment_list_key do), so one call reads the
# pointer and the lists of the version it names: single-node Redis (or one Redis Cluster slot)
# only. A Cluster client reads the same keys in a few calls instead (docs/redis-layout.md).

# How every reader starts: the current version ({false} without one) and the head of its keys
# (version_prefix). KEYS[1] = P:model:current, ARGV[1] = P.
_VERSION_HEAD_LUA = """
local version = redis.call('GET', KEYS[1])
if not version then
  return {false}
end
local base = ARGV[1] .. ':m:' .. version .. ':'
"""

# Atomic read of the current version and some users' lists (and the popular list).
# KEYS[1] = P:model:current; ARGV[1] = P (the prefix), ARGV[2..] = user ids.
# Returns {version or false, popular list or false, list of user 1 or false, ...}.
READ_LISTS_LUA = (
    _VERSION_HEAD_LUA
    + """
local out = {version, redis.call('HGET', base .. 'popular', 'list')}
for i = 2, #ARGV do
  out[#out + 1] = redis.call('HGET', base .. 'u:{u:' .. ARGV[i] .. '}', 'list')
end
return out
"""
)

# The lookup: the current version, and for each user the first list that exists of their own
# list, their segment's list and the popular list, in one atomic step.
# KEYS[1] = P:model:current; ARGV[1] = P, ARGV[2] = "1" to return every fallback list that
# exists (the caller excludes items and may need the next list), else "0"; ARGV[3..] = user ids.
# Returns {false} without a current version, else {version, popular list or false, then per
# user: list or false, segment or false, segment list or false}. A segment list is returned
# when the user has a segment and (no list or ARGV[2] = "1"); the popular list when some user
# has neither list (or ARGV[2] = "1").
LOOKUP_LUA = (
    _VERSION_HEAD_LUA
    + """
local every = ARGV[2] == '1'
local need_popular = every
local out = {version, false}
for i = 3, #ARGV do
  local user = redis.call('HMGET', base .. 'u:{u:' .. ARGV[i] .. '}', 'list', 'segment')
  local segment_list = false
  if user[2] and (every or not user[1]) then
    segment_list = redis.call('HGET', base .. 's:' .. user[2], 'list')
  end
  if not user[1] and not segment_list then
    need_popular = true
  end
  out[#out + 1] = user[1]
  out[#out + 1] = user[2]
  out[#out + 1] = segment_list
end
if need_popular then
  out[2] = redis.call('HGET', base .. 'popular', 'list')
end
return out
"""
)

# One item's similar items under the current version, atomically with the version.
# KEYS[1] = P:model:current; ARGV[1] = P, ARGV[2] = item id.
# Returns {false} without a current version, else {version, the list or false}.
READ_SIMILAR_LUA = (
    _VERSION_HEAD_LUA
    + """
return {version, redis.call('HGET', base .. 'i:{i:' .. ARGV[2] .. '}', 'list')}
"""
)

# The popular list of the current version, atomically with the version.
# KEYS[1] = P:model:current; ARGV[1] = P. Returns {false}, or {version, the list or false}.
READ_POPULAR_LUA = (
    _VERSION_HEAD_LUA
    + """
return {version, redis.call('HGET', base .. 'popular', 'list')}
"""
)

# One user's segment under the current version, atomically with the version.
# KEYS[1] = P:model:current; ARGV[1] = P, ARGV[2] = user id.
# Returns {false} without a current version, else {version, segment or false, segment_p or false}.
READ_SEGMENT_LUA = (
    _VERSION_HEAD_LUA
    + """
local fields = redis.call('HMGET', base .. 'u:{u:' .. ARGV[2] .. '}', 'segment', 'segment_p')
return {version, fields[1], fields[2]}
"""
)
