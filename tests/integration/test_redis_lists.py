"""The fenced list write (schemas/redis_layout.py's Lua) against a real redis-server."""

from __future__ import annotations

import pytest

from streamrec.redis_lists import connect, write_lists
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config

pytestmark = pytest.mark.integration


def _list(source: str, watermark: int, items: tuple[tuple[str, float], ...]) -> bytes:
    return L.encode_list(L.RecList(items, source, "v1", 1, watermark))


def test_newer_fence_replaces_older_is_kept(isolated_cfg: Config) -> None:
    client = connect(isolated_cfg.redis)
    key = L.user_list_key(isolated_cfg.redis.key_prefix, "v1", "user:{odd} id/ü")
    first = _list("batch", 100, (("a", 1.0),))
    newer = _list("stream", 200, (("b", 2.0),))
    older = _list("batch", 150, (("c", 3.0),))

    assert write_lists(client, [(key, first, 100)], ttl_seconds=60) == (1, 0)
    assert write_lists(client, [(key, newer, 200)], ttl_seconds=60) == (1, 0)
    assert write_lists(client, [(key, older, 150)], ttl_seconds=60) == (0, 1)
    stored = L.decode_list(client.hget(key, L.FIELD_LIST))
    assert stored.items == (("b", 2.0),) and stored.source == "stream"
    assert int(client.hget(key, L.FIELD_FENCE)) == 200
    assert 0 < client.ttl(key) <= 60


def test_replay_with_equal_fence_rewrites_identically(isolated_cfg: Config) -> None:
    client = connect(isolated_cfg.redis)
    key = L.user_list_key(isolated_cfg.redis.key_prefix, "v1", "u1")
    payload = _list("stream", 500, (("x", 0.5), ("y", 0.25)))
    assert write_lists(client, [(key, payload, 500)], ttl_seconds=30) == (1, 0)
    assert write_lists(client, [(key, payload, 500)], ttl_seconds=30) == (1, 0)
    assert client.hget(key, L.FIELD_LIST) == payload


def test_many_rows_in_chunks(isolated_cfg: Config) -> None:
    client = connect(isolated_cfg.redis)
    prefix = isolated_cfg.redis.key_prefix
    rows = [
        (L.user_list_key(prefix, "v1", f"u{i}"), _list("batch", 7, (("i", 1.0),)), 7)
        for i in range(1234)
    ]
    assert write_lists(client, rows, ttl_seconds=100, chunk=100) == (1234, 0)
    assert len(list(client.scan_iter(match=f"{prefix}:m:v1:u:*", count=1000))) == 1234


def test_missing_redis_says_how_to_start_it() -> None:
    from streamrec.errors import ServiceUnavailable
    from streamrec.schemas.config_loader import with_overrides

    cfg = with_overrides(Config(), redis=dict(port=1))
    with pytest.raises(ServiceUnavailable, match="streamrec stack up"):
        connect(cfg.redis)


def test_publish_writes_segments_by_the_new_versions_rules(isolated_cfg: Config) -> None:
    from streamrec.redis_lists import write_publish

    client = connect(isolated_cfg.redis)
    prefix = isolated_cfg.redis.key_prefix
    old, new = (lambda user, v=v: L.user_list_key(prefix, v, user) for v in ("v1", "v2"))
    batch = _list("batch", 1000, (("b", 1.0),))
    probs = L.encode_segment_probabilities([0.25, 0.75])
    # "fresh": the stream refreshed it under v1 after the cut -> NOT carried over (scored with
    # v1's model): v2's batch list and segment (the stream rescores it under v2 itself).
    write_lists(client, [(old("fresh"), _list("stream", 2000, (("s", 1.0),)), 2000)], 60)
    client.hset(old("fresh"), L.FIELD_SEGMENT, "7")
    # "early": the stream already wrote under v2 (list and segment): both kept.
    write_lists(client, [(new("early"), _list("stream", 3000, (("e", 1.0),)), 3000)], 60)
    client.hset(new("early"), L.FIELD_SEGMENT, "4")
    rows = [
        (new(u), batch, 1000, seg, p)
        for u, seg, p in [
            ("plain", "1", probs),
            ("fresh", "2", ""),
            ("early", "3", ""),
            ("none", "", ""),
        ]
    ]
    assert write_publish(client, rows, ttl_seconds=60) == (3, 1)
    segment_of = {
        u: client.hget(new(u), L.FIELD_SEGMENT) for u in ("plain", "fresh", "early", "none")
    }
    assert segment_of == {"plain": b"1", "fresh": b"2", "early": b"4", "none": None}
    assert client.hget(new("plain"), L.FIELD_SEGMENT_P) == b"[0.25,0.75]"
    assert L.decode_list(client.hget(new("fresh"), L.FIELD_LIST)).source == "batch"
    assert L.decode_list(client.hget(new("early"), L.FIELD_LIST)).source == "stream"
    assert L.decode_list(client.hget(new("plain"), L.FIELD_LIST)).source == "batch"
    assert all(0 < client.ttl(new(u)) <= 60 for u in ("plain", "fresh", "early", "none"))
