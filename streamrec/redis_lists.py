"""Recommendation lists in Redis (layout: schemas/redis_layout.py): connect (bounded waits,
retries with backoff), write
many lists per pipeline through the layout's Lua scripts (stream writes and batch publishes),
switch the current version, and read a version's lists atomically."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from streamrec.errors import ServiceUnavailable
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import RedisConfig
from streamrec.schemas.redis_layout import FENCED_WRITE_LUA, PUBLISH_WRITE_LUA, READ_LISTS_LUA


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
    """redis-py's connection options for ``cfg`` (the same for its sync and asyncio clients)."""
    tls: dict[str, Any] = {}
    if cfg.tls:
        tls = dict(
            ssl=True,
            ssl_ca_certs=cfg.tls_ca_file or None,
            ssl_certfile=cfg.tls_cert_file or None,
            ssl_keyfile=cfg.tls_key_file or None,
        )
    return dict(
        host=cfg.host,
        port=cfg.port,
        db=cfg.db,
        username=cfg.username or None,
        password=cfg.password or None,
        socket_timeout=cfg.socket_timeout_s,
        socket_connect_timeout=cfg.socket_timeout_s,
        **tls,
    )


def connect(cfg: RedisConfig, patient: bool = True) -> redis.Redis:
    """A client that has answered PING, or ServiceUnavailable saying how to start Redis.

    Every command waits at most ``redis.socket_timeout_s``. A ``patient`` client (the jobs')
    retries a failed command with backoff for about ``redis.retry_window_s``, so a Redis
    restart or freeze does not stop a job; an impatient one (lookups, start-up checks) retries
    once and then says so. Password, ACL user and TLS come from the config (which reads them
    from the environment); none of them is ever logged, and the error names only the host,
    port and user."""
    client = redis.Redis(
        **client_options(cfg), retry=retry_policy(cfg.retry_window_s if patient else 0.0)
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        raise unavailable(cfg, exc) from exc
    return client


def unavailable(cfg: RedisConfig, exc: Exception) -> ServiceUnavailable:
    """The error for a Redis that does not answer (at connect or later): where, and what to do.
    Names the host, port and ACL user, never the password."""
    how = (" as ACL user " + repr(cfg.username) if cfg.username else "") + (
        " over TLS" if cfg.tls else ""
    )
    return ServiceUnavailable(
        f"Redis at {cfg.host}:{cfg.port}{how} does not answer ({exc.__class__.__name__}: {exc}). "
        "Start the local stack with `streamrec stack up`, or fix redis.host/redis.port (and "
        "redis.username, REDIS_PASSWORD, redis.tls*) in the config file."
    )


def write_lists(
    client: redis.Redis,
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
    client: redis.Redis,
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
    client: redis.Redis,
    lua: str,
    calls: Iterable[tuple[list[str], list[bytes | int | str]]],
    chunk: int,
) -> tuple[int, int]:
    script = client.register_script(lua)
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
    client: redis.Redis, prefix: str, user_ids: list[str]
) -> tuple[str | None, L.RecList | None, dict[str, L.RecList | None]]:
    """(current version, popular list, {user: list or None}) in one atomic round trip."""
    raw = client.eval(READ_LISTS_LUA, 1, L.current_model_key(prefix), prefix, *user_ids)
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


def switch_version(client: redis.Redis, prefix: str, new_version: str) -> Switch:
    """Point readers at ``new_version`` (one atomic step, forward only), then unlink the
    previous version's keys. A newer live version refuses the switch: nothing changes."""
    pointer = L.current_model_key(prefix)
    switched, other = client.eval(L.SWITCH_FORWARD_LUA, 1, pointer, new_version)
    if not int(switched):
        return Switch(False, None, decoded(other))
    previous = decoded(other) or None
    if previous and previous != new_version:
        delete_version(client, prefix, previous)
    return Switch(True, previous)


def versions_with_keys(client: redis.Redis, prefix: str) -> set[str]:
    """Every version that has keys in Redis (one SCAN over the versions' keys)."""
    found: set[str] = set()
    for key in client.scan_iter(match=L.all_versions_pattern(prefix), count=1000):
        version = L.version_of_key(prefix, decoded(key) or "")
        if version:
            found.add(version)
    return found


def delete_version(client: redis.Redis, prefix: str, version: str) -> int:
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
