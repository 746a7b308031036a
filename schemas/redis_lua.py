"""The Lua scripts of the Redis layout (docs/redis-layout.md): the writers, each touching one
user's keys (one Redis Cluster slot), the forward-only version switch, and the single-node
readers that take the pointer and the lists of the version it names in one atomic step.

Every script builds or takes keys exactly as schemas/redis_layout.py names them."""

from __future__ import annotations

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
