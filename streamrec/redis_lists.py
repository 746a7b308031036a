"""Recommendation lists in Redis (layout: schemas/redis_layout.py): connect to one node or to
Redis Cluster (bounded waits, retries with backoff), write many lists per pipeline through the
layout's Lua scripts (stream writes and batch publishes), switch the current version, and read
a version's lists (atomically on one node; on Redis Cluster with a pointer re-check)."""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from streamrec import cluster_reads
from streamrec.errors import ServiceUnavailable
from streamrec.schemas import redis_layout as L
from streamrec.schemas import redis_lua as LUA
from streamrec.schemas.config import RedisConfig
from streamrec.schemas.redis_lua import FENCED_WRITE_LUA, PUBLISH_WRITE_LUA, READ_LISTS_LUA

# A client of one Redis node or of a Redis Cluster (``redis.cluster`` in the config). Every
# writer's Lua call touches one slot (docs/redis-layout.md), and pipelines are never MULTI, so
# the writers take either; the readers whose Lua spans slots run streamrec/cluster_reads.py's
# plans on a cluster instead.
RedisClient = redis.Redis | RedisCluster

# The errors of a Redis that is not there (ServiceUnavailable for the caller): redis-py raises
# RedisClusterException, which is not a RedisError, when no node of a cluster answers.
UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.RedisClusterException)


def decoded(raw: bytes | str | None) -> str | None:
    """A Redis reply as text: clients made with or without ``decode_responses`` both work."""
    return raw.decode("utf-8") if isinstance(raw, bytes) else raw


# Backoff between retries: from 50 ms, doubling, at most this long (with jitter).
RETRY_CAP_S = 4.0


def retry_policy(window_s: float) -> Retry:
    """Retries with exponential backoff of a command whose connection failed or timed out, for
    about ``window_s`` seconds in all (at least one retry)."""
    retries = 1 + int(window_s // RETRY_CAP_S) + 6  # six doublings reach the cap
    return Retry(
        ExponentialWithJitterBackoff(cap=RETRY_CAP_S, base=0.05),
        retries if window_s > 0 else 1,
        (redis.ConnectionError, redis.TimeoutError, socket.timeout),
    )


def client_options(cfg: RedisConfig) -> dict[str, Any]:
    """redis-py's connection options for ``cfg`` (the same for its sync and asyncio clients, on
    one node or Redis Cluster, which has no ``db`` option: the config keeps it 0 there)."""
    tls: dict[str, Any] = {}
    if cfg.tls:
        tls = dict(
            ssl=True,
            ssl_ca_certs=cfg.tls_ca_file or None,
            ssl_certfile=cfg.tls_cert_file or None,
            ssl_keyfile=cfg.tls_key_file or None,
        )
    database = {} if cfg.cluster else dict(db=cfg.db)
    return dict(
        host=cfg.host,
        port=cfg.port,
        **database,
        username=cfg.username or None,
        password=cfg.password or None,
        socket_timeout=cfg.socket_timeout_s,
        socket_connect_timeout=cfg.socket_timeout_s,
        **tls,
    )


def connect(cfg: RedisConfig, patient: bool = True) -> RedisClient:
    """A client that has answered PING, or ServiceUnavailable saying how to start Redis.

    Every command waits at most ``redis.socket_timeout_s``. A ``patient`` client (the jobs')
    retries a failed command with backoff for about ``redis.retry_window_s``, so a Redis
    restart or freeze does not stop a job; an impatient one (lookups, start-up checks) retries
    once and then says so. Password, ACL user and TLS come from the config (which reads them
    from the environment); none of them is ever logged, and the error names only the host,
    port and user. With ``redis.cluster``, a ``RedisCluster`` that found every master from
    ``host:port``; redis-py 8.1's cluster client takes only the policy's number of retries,
    which it makes at once, after refreshing its map of the cluster, without the backoff."""
    retry = retry_policy(cfg.retry_window_s if patient else 0.0)
    try:
        client: RedisClient = (
            RedisCluster(**client_options(cfg), retry=retry)
            if cfg.cluster
            else redis.Redis(**client_options(cfg), retry=retry)
        )
    except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
        raise unavailable(cfg, exc) from exc
    try:
        client.ping()
    except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
        client.close()
        raise unavailable(cfg, exc) from exc
    return client


def async_client(cfg: RedisConfig) -> aioredis.Redis | AsyncRedisCluster:
    """The asyncio client for ``cfg`` (one node or Redis Cluster) that the HTTP server's
    lookups use: it retries once, and connects on first use."""
    if cfg.cluster:
        return AsyncRedisCluster(**client_options(cfg), retry=AsyncRetry(NoBackoff(), 1))
    return aioredis.Redis(**client_options(cfg), retry=AsyncRetry(NoBackoff(), 1))


def unavailable(cfg: RedisConfig, exc: Exception) -> ServiceUnavailable:
    """The error for a Redis that does not answer (at connect or later): where, and what to do.
    Names the host, port and ACL user, never the password."""
    how = (" as ACL user " + repr(cfg.username) if cfg.username else "") + (
        " over TLS" if cfg.tls else ""
    )
    what, start = (
        (
            "Redis Cluster (startup node)",
            "a local cluster with `python -m streamrec.stack.redis_cluster start`",
        )
        if cfg.cluster
        else ("Redis", "the local stack with `streamrec stack up`")
    )
    return ServiceUnavailable(
        f"{what} at {cfg.host}:{cfg.port}{how} does not answer ({exc.__class__.__name__}: {exc}). "
        f"Start {start}, or fix redis.host/redis.port (and redis.username, REDIS_PASSWORD, "
        "redis.tls*, redis.cluster) in the config file."
    )


class _ClusterPipelineScript:
    """A script queued on a Redis Cluster pipeline: EVALSHA routed by its keys' slot. redis-py
    8.1 blocks the pipeline's ``evalsha`` method (redis/redis-py#2914, lifted by PR #4206), not
    the command, and sends EVALSHA without loading the script: ``pipelined_script`` loads it
    on every primary first."""

    def __init__(self, sha: str) -> None:
        self.sha = sha

    def __call__(self, keys: Sequence[str], args: Sequence[Any], client: Any) -> Any:
        return client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)


def pipelined_script(client: RedisClient, lua: str) -> Any:
    """A callable ``script(keys=..., args=..., client=pipeline)`` for the Lua script ``lua``:
    ``client.register_script(lua)`` on a single node (whose pipeline loads the script itself);
    on Redis Cluster the script is loaded on every primary now, and a primary that restarts
    empty before the pipeline runs answers NOSCRIPT, which fails the call (a job's task is then
    retried by Spark)."""
    if isinstance(client, RedisCluster):
        return _ClusterPipelineScript(str(client.script_load(lua)))  # SCRIPT LOAD: all primaries
    return client.register_script(lua)


def write_lists(
    client: RedisClient,
    rows: Iterable[tuple[str, bytes, int]],
    ttl_seconds: int,
    chunk: int = 500,
) -> tuple[int, int]:
    """Write (key, encoded list, fence) rows; returns (written, kept because newer)."""
    return _run_script(
        client,
        FENCED_WRITE_LUA,
        (([key], [payload, int(fence), int(ttl_seconds)]) for key, payload, fence in rows),
        chunk,
    )


def write_publish(
    client: RedisClient,
    rows: Iterable[tuple[str, bytes, int, str, str]],
    ttl_seconds: int,
    chunk: int = 500,
) -> tuple[int, int]:
    """A publish's (new key, list, fence, segment, segment probabilities) rows, the last two ""
    when there are none; returns (written, kept newer)."""
    return _run_script(
        client,
        PUBLISH_WRITE_LUA,
        (
            ([key], [payload, int(fence), int(ttl_seconds), segment, probs])
            for key, payload, fence, segment, probs in rows
        ),
        chunk,
    )


def _run_script(
    client: RedisClient,
    lua: str,
    calls: Iterable[tuple[list[str], list[bytes | int | str]]],
    chunk: int,
) -> tuple[int, int]:
    script = pipelined_script(client, lua)
    written = kept = 0
    pipe = client.pipeline(transaction=False)
    pending = 0

    def flush() -> None:
        nonlocal written, kept, pending
        for result in pipe.execute():
            if int(result) == 1:
                written += 1
            else:
                kept += 1
        pending = 0

    for keys, args in calls:
        script(keys=keys, args=args, client=pipe)
        pending += 1
        if pending >= chunk:
            flush()
    if pending:
        flush()
    return written, kept


def read_lists(
    client: RedisClient, prefix: str, user_ids: list[str]
) -> tuple[str | None, L.RecList | None, dict[str, L.RecList | None]]:
    """(current version, popular list, {user: list or None}) of one version: in one atomic
    round trip on a single node, in a few on Redis Cluster (streamrec/cluster_reads.py)."""
    pointer = L.current_model_key(prefix)
    if isinstance(client, RedisCluster):
        raw = cluster_reads.ClusterScript(client, READ_LISTS_LUA)([pointer], [prefix, *user_ids])
    else:
        raw = client.eval(READ_LISTS_LUA, 1, pointer, prefix, *user_ids)
    if not raw or raw[0] is None:
        return None, None, {u: None for u in user_ids}

    def decode(value: bytes | None) -> L.RecList | None:
        return None if value is None else L.decode_list(value)

    version = str(decoded(raw[0]))
    lists = {u: decode(v) for u, v in zip(user_ids, raw[2:], strict=True)}
    return version, decode(raw[1]), lists


@dataclass(frozen=True)
class Switch:
    switched: bool
    previous: str | None  # the version readers followed before (when switched)
    newer: str | None = None  # the newer live version that refused the switch


def switch_version(client: RedisClient, prefix: str, new_version: str) -> Switch:
    """Point readers at ``new_version`` (one atomic step, forward only), then unlink the
    previous version's keys. A newer live version refuses the switch: nothing changes."""
    pointer = L.current_model_key(prefix)
    switched, other = client.eval(LUA.SWITCH_FORWARD_LUA, 1, pointer, new_version)
    if not int(switched):
        return Switch(False, None, decoded(other))
    previous = decoded(other) or None
    if previous and previous != new_version:
        delete_version(client, prefix, previous)
    return Switch(True, previous)


def versions_with_keys(client: RedisClient, prefix: str) -> set[str]:
    """Every version that has keys in Redis (one SCAN over the versions' keys)."""
    found: set[str] = set()
    for key in client.scan_iter(match=L.all_versions_pattern(prefix), count=1000):
        version = L.version_of_key(prefix, decoded(key) or "")
        if version:
            found.add(version)
    return found


def delete_version(client: RedisClient, prefix: str, version: str) -> int:
    """Unlink every key of ``version``. On Redis Cluster, SCAN runs on every primary and each
    UNLINK is split by slot (redis-py's cluster client does both)."""
    removed = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=L.version_keys_pattern(prefix, version), count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            removed += int(client.unlink(*batch))
            batch = []
    if batch:
        removed += int(client.unlink(*batch))
    return removed
