"""The synthetic world: its events are valid, deterministic, and carry the structure it plants
(segments with their own taste, skewed popularity, repeat plays, newcomers)."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import numpy as np
import pytest

from streamrec.producer.synthetic import DEFAULT_START_MS, SyntheticWorld
from streamrec.schemas.events import encode_event, parse_event, validate_event

pytestmark = pytest.mark.unit

NEW_USER_SHARE = 0.08


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return SyntheticWorld(users=600, items=300, segments=4, seed=11, new_user_share=NEW_USER_SHARE)


@pytest.fixture(scope="module")
def events(world: SyntheticWorld) -> list[dict[str, Any]]:
    return list(world.events(20_000))


def test_every_event_is_valid_and_survives_the_wire(events: list[dict[str, Any]]) -> None:
    for event in events:
        assert validate_event(event) is None, event
        parsed, reason = parse_event(encode_event(event))
        assert reason is None
        assert parsed == event


def test_ids_have_the_documented_shape(events: list[dict[str, Any]]) -> None:
    assert all(e["user_id"][0] == "u" and e["user_id"][1:].isdigit() for e in events)
    assert all(e["item_id"][0] == "i" and len(e["item_id"]) == 5 for e in events)


def test_event_ids_are_unique_and_times_strictly_increase(events: list[dict[str, Any]]) -> None:
    assert len({e["event_id"] for e in events}) == len(events)
    times = [e["event_time"] for e in events]
    assert times[0] > DEFAULT_START_MS
    assert all(a < b for a, b in itertools.pairwise(times))


def test_same_seed_same_events_and_a_shorter_run_is_a_prefix() -> None:
    a = list(SyntheticWorld(200, 100, 3, seed=5).events(500))
    b = list(SyntheticWorld(200, 100, 3, seed=5).events(300))
    assert a[:300] == b


def test_other_seed_or_world_gives_other_events_and_ids() -> None:
    base = list(SyntheticWorld(200, 100, 3, seed=5).events(300))
    other_seed = list(SyntheticWorld(200, 100, 3, seed=6).events(300))
    more_users = list(SyntheticWorld(201, 100, 3, seed=5).events(300))
    later = list(SyntheticWorld(200, 100, 3, seed=5).events(300, start_ms=DEFAULT_START_MS + 1))
    ids = {e["event_id"] for e in base}
    for run in (other_seed, more_users, later):
        assert run != base
        assert ids.isdisjoint(e["event_id"] for e in run)


def test_truth_covers_every_user_and_item(world: SyntheticWorld) -> None:
    assert len(world.segment_of) == world.users
    assert all(world.user_segment(u) == s for u, s in world.segment_of.items())
    # Balanced segments of users and of items.
    assert set(Counter(world.segment_of.values()).values()) == {world.users // world.segments}
    clusters = [world.segment_items(k) for k in range(world.segments)]
    assert sorted(i for c in clusters for i in c) == world.item_ids
    assert {len(c) for c in clusters} == {world.items // world.segments}
    assert all(world.item_cluster(i) == k for k, c in enumerate(clusters) for i in c)


def test_newcomer_segment_is_stable_and_foreign_ids_are_refused(world: SyntheticWorld) -> None:
    newcomer = f"u{world.users + 3:05d}"
    assert world.is_newcomer(newcomer)
    assert world.user_segment(newcomer) == SyntheticWorld(600, 300, 4, seed=11).user_segment(
        newcomer
    )
    for bad in ("x00001", "u", "42", "uabc"):
        with pytest.raises(KeyError):
            world.user_segment(bad)
    with pytest.raises(KeyError):
        world.item_cluster(f"i{world.items:04d}")


def test_each_segment_plays_mostly_its_own_cluster(
    world: SyntheticWorld, events: list[dict[str, Any]]
) -> None:
    by_segment: dict[int, Counter[int]] = {k: Counter() for k in range(world.segments)}
    for e in events:
        by_segment[world.user_segment(e["user_id"])][world.item_cluster(e["item_id"])] += 1
    for segment, clusters in by_segment.items():
        total = sum(clusters.values())
        assert clusters[segment] / total > 0.6
        assert max(n for c, n in clusters.items() if c != segment) / total < 0.2


def test_users_of_a_segment_share_taste_far_more_than_across(
    world: SyntheticWorld, events: list[dict[str, Any]]
) -> None:
    users = sorted({e["user_id"] for e in events if not world.is_newcomer(e["user_id"])})
    row = {u: n for n, u in enumerate(users)}
    counts = np.zeros((len(users), world.items))
    for e in events:
        if e["user_id"] in row:
            counts[row[e["user_id"]], int(e["item_id"][1:])] += 1
    unit = counts / np.linalg.norm(counts, axis=1, keepdims=True)
    similarity = unit @ unit.T
    segment = np.array([world.user_segment(u) for u in users])
    same = segment[:, None] == segment[None, :]
    np.fill_diagonal(same, False)
    across = segment[:, None] != segment[None, :]
    assert similarity[same].mean() > 3 * similarity[across].mean()


def test_segments_have_different_top_items(
    world: SyntheticWorld, events: list[dict[str, Any]]
) -> None:
    top: dict[int, set[str]] = {}
    for k in range(world.segments):
        plays = Counter(e["item_id"] for e in events if world.user_segment(e["user_id"]) == k)
        top[k] = {item for item, _ in plays.most_common(10)}
    for a in range(world.segments):
        for b in range(a + 1, world.segments):
            assert len(top[a] & top[b]) <= 3


def test_popularity_is_skewed(world: SyntheticWorld, events: list[dict[str, Any]]) -> None:
    plays = sorted(Counter(e["item_id"] for e in events).values(), reverse=True)
    top_decile = sum(plays[: world.items // 10]) / len(events)
    assert top_decile > 0.4  # uniform popularity would give 0.1


def test_users_replay_items_they_played() -> None:
    def replay_share(repeat_share: float) -> float:
        run = SyntheticWorld(300, 200, 4, seed=3, repeat_share=repeat_share).events(5000)
        pairs = Counter((e["user_id"], e["item_id"]) for e in run if e["event_type"] == "play")
        return sum(n - 1 for n in pairs.values()) / 5000

    assert replay_share(0.25) > 0.2
    assert replay_share(0.25) > replay_share(0.0) + 0.1


def test_new_users_arrive_at_the_configured_share_over_time(
    world: SyntheticWorld, events: list[dict[str, Any]]
) -> None:
    seen: set[str] = set()
    firsts = []
    for n, e in enumerate(events):
        if world.is_newcomer(e["user_id"]) and e["user_id"] not in seen:
            firsts.append(n)
        seen.add(e["user_id"])
    assert abs(len(firsts) / len(events) - NEW_USER_SHARE) < 0.015
    half = len(events) // 2
    assert sum(n < half for n in firsts) > 0.4 * len(firsts)
    assert sum(n >= half for n in firsts) > 0.4 * len(firsts)
    # Newcomers come back after their first event.
    newcomer_events = sum(world.is_newcomer(e["user_id"]) for e in events)
    assert newcomer_events > 1.5 * len(firsts)
    assert set(world.user_ids).isdisjoint(u for u in seen if world.is_newcomer(u))


def test_no_new_users_when_the_share_is_zero() -> None:
    world = SyntheticWorld(100, 50, 2, seed=1, new_user_share=0.0)
    assert not any(world.is_newcomer(e["user_id"]) for e in world.events(2000))


def test_event_types_mix_and_follow_taste(
    world: SyntheticWorld, events: list[dict[str, Any]]
) -> None:
    types = Counter(e["event_type"] for e in events)
    assert types["play"] > 0.6 * len(events)
    assert types["click"] > 0.05 * len(events)
    assert types["like"] > 0 and types["skip"] > 0
    assert set(types) == {"play", "click", "like", "skip"}
    assert all(e["value"] > 0 for e in events if e["event_type"] == "play")
    assert all(e["value"] is None for e in events if e["event_type"] != "play")

    def skip_rate(in_taste: bool) -> float:
        chosen = [
            e
            for e in events
            if (world.item_cluster(e["item_id"]) == world.user_segment(e["user_id"])) == in_taste
        ]
        return sum(e["event_type"] == "skip" for e in chosen) / len(chosen)

    assert skip_rate(False) > 2 * skip_rate(True)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"users": 0},
        {"segments": 0},
        {"items": 3, "segments": 4},
        {"new_user_share": 1.5},
        {"repeat_share": -0.1},
        {"segment_focus": 2.0},
    ],
)
def test_impossible_worlds_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SyntheticWorld(**kwargs)
