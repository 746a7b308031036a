"""The Redis Cluster plans of the Lua readers (streamrec/cluster_reads.py), run against a dict
that answers GET, HGET and HMGET: their replies, their round trips, and their start-over when a
publish switches versions (and deletes the old one) between two rounds."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from redis.cluster import RedisCluster

from streamrec.cluster_reads import (
    MAX_ROUNDS,
    Command,
    drive,
    lists_plan,
    lookup_plan,
    popular_plan,
    reader,
    segment_plan,
    similar_plan,
)
from streamrec.lookup_answers import answers, item_list, segment_info
from streamrec.schemas import redis_layout as L
from streamrec.schemas import redis_lua as LUA

P = "p"
POINTER = L.current_model_key(P)


def _list(source: str, version: str, *items: str) -> bytes:
    rec = L.RecList(tuple((i, 1.0) for i in items), source, version, 1, 1)
    return L.encode_list(rec)


def _version(version: str) -> dict[str, Any]:
    """A published version: user a (own list, segment 0), b (segment 0 only), c (segment 9,
    whose list is missing), the segment 0 list, the popular list, item x's similar list."""
    return {
        L.user_list_key(P, version, "a"): {
            "list": _list("batch", version, "a1"),
            "segment": b"0",
        },
        L.user_list_key(P, version, "b"): {"segment": b"0", "segment_p": b"[0.9,0.1]"},
        L.user_list_key(P, version, "c"): {"segment": b"9"},
        L.segment_list_key(P, version, 0): {"list": _list("segment", version, "s1")},
        L.popular_list_key(P, version): {"list": _list("popular", version, "p1")},
        L.similar_list_key(P, version, "x"): {"list": _list("similar", version, "y")},
    }


class Store:
    """Keys of a dict, read as Redis would; ``after_round`` changes them between rounds."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data, self.rounds = data, 0
        self.after_round: Callable[[int], None] = lambda n: None

    def run(self, commands: Sequence[Command]) -> list[Any]:
        replies = [self._one(*command) for command in commands]
        self.rounds += 1
        self.after_round(self.rounds)
        return replies

    def _one(self, name: str, key: str, *fields: str) -> Any:
        value = self.data.get(key)
        if name == "GET":
            return value
        found = value or {}
        if name == "HGET":
            return found.get(fields[0])
        return [found.get(f) for f in fields]


def _store(version: str = "v1") -> Store:
    return Store({POINTER: version.encode(), **_version(version)})


def _sources(reply: list[Any], users: list[str], exclude: Sequence[str] = ()) -> dict[str, Any]:
    return {u: r.source for u, r in answers(reply, users, 10, exclude).items()}


def test_lookup_every_fallback_step_and_round_trips() -> None:
    store = _store()
    # A user with their own list: the pointer and their hash, two round trips.
    reply = drive(lookup_plan(POINTER, [P, "0", "a"]), store.run)
    assert _sources(reply, ["a"]) == {"a": "batch"} and store.rounds == 2
    assert reply[1] is None  # the popular list is only returned when someone needs it
    # Fallbacks: segment and popular lists in one more round, then the pointer re-checked.
    store.rounds = 0
    users = ["a", "b", "c", "nobody"]
    reply = drive(lookup_plan(POINTER, [P, "0", *users]), store.run)
    assert store.rounds == 4
    assert _sources(reply, users) == {
        "a": "batch",
        "b": "segment",
        "c": "popular",  # segment 9 has no list
        "nobody": "popular",
    }
    assert answers(reply, users, 10, ())["b"].segment == 0


def test_lookup_reply_matches_the_scripts_shape() -> None:
    """Per user: own list, segment, segment list (only when the user falls back to it or
    every list is asked for); the popular list only when some user needs it."""
    v = "v1"
    seg0, popular = _list("segment", v, "s1"), _list("popular", v, "p1")
    own = _list("batch", v, "a1")
    reply = drive(lookup_plan(POINTER, [P, "0", "a", "b"]), _store().run)
    assert reply == [b"v1", None, own, b"0", None, None, b"0", seg0]
    reply = drive(lookup_plan(POINTER, [P, "1", "a", "b"]), _store().run)
    assert reply == [b"v1", popular, own, b"0", seg0, None, b"0", seg0]
    # Excluding everything of a's own list falls through to the segment list.
    assert _sources(reply, ["a"], exclude=["a1"]) == {"a": "segment"}


def test_no_pointer_answers_nothing() -> None:
    store = Store({})
    for plan in (
        lookup_plan(POINTER, [P, "0", "a"]),
        segment_plan(POINTER, [P, "a"]),
        similar_plan(POINTER, [P, "x"]),
        popular_plan(POINTER, [P]),
        lists_plan(POINTER, [P, "a"]),
    ):
        assert drive(plan, store.run) == [None]


def test_a_switch_between_rounds_starts_over_under_the_new_version() -> None:
    """The publish switches v1 -> v2 and deletes v1's keys right after the plan read v1's
    pointer: the plan finds a hole, sees the new pointer, and answers wholly from v2."""
    store = Store({POINTER: b"v1", **_version("v1"), **_version("v2")})

    def publish(rounds: int) -> None:
        if rounds == 1:
            store.data[POINTER] = b"v2"
            for key in [k for k in store.data if k.startswith(L.version_prefix(P, "v1"))]:
                del store.data[key]

    store.after_round = publish
    reply = drive(lookup_plan(POINTER, [P, "0", "a", "nobody"]), store.run)
    recs = answers(reply, ["a", "nobody"], 10, ())
    assert {u: (r.source, r.model_version) for u, r in recs.items()} == {
        "a": ("batch", "v2"),
        "nobody": ("popular", "v2"),
    }


def test_a_pointer_that_keeps_moving_gives_up_after_max_rounds() -> None:
    """A missing popular list and a pointer changed at every re-check: the plan starts over
    MAX_ROUNDS times (three round trips each), then returns its last answer, not looping."""
    store = Store({POINTER: b"v1"})
    store.after_round = lambda n: store.data.__setitem__(POINTER, f"v{n + 1}".encode())
    reply = drive(popular_plan(POINTER, [P]), store.run)
    assert reply[1] is None and store.rounds == 3 * MAX_ROUNDS


def test_segment_similar_popular_and_lists() -> None:
    info = segment_info("b", drive(segment_plan(POINTER, [P, "b"]), _store().run))
    assert (info.model_version, info.segment, info.probabilities) == ("v1", 0, (0.9, 0.1))
    assert segment_info("z", drive(segment_plan(POINTER, [P, "z"]), _store().run)).segment is None
    near = item_list(drive(similar_plan(POINTER, [P, "x"]), _store().run), 5, ())
    assert (near.source, near.items) == ("similar", (("y", 1.0),))
    store = _store()
    unknown = item_list(drive(similar_plan(POINTER, [P, "zz"]), store.run), 5, ())
    assert (unknown.source, unknown.model_version, store.rounds) == (None, "v1", 3)
    popular = item_list(drive(popular_plan(POINTER, [P]), _store().run), 5, ())
    assert popular.source == "popular"
    reply = drive(lists_plan(POINTER, [P, "a", "b"]), _store().run)
    assert reply == [b"v1", _list("popular", "v1", "p1"), _list("batch", "v1", "a1"), None]


def test_reader_refuses_a_script_it_has_no_plan_for() -> None:
    # reader() dispatches on the client's class alone: an unconnected instance is enough.
    unconnected = RedisCluster.__new__(RedisCluster)
    with pytest.raises(ValueError, match="no Redis Cluster plan"):
        reader(unconnected, LUA.STREAM_WRITE_LUA)
