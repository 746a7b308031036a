"""A seeded synthetic world whose events carry structure a recommender can find.

What is planted, so that tests and demos can check a model against the truth:

- items are split into ``segments`` clusters; every user belongs to one latent segment and picks
  items of its segment's cluster ``segment_focus`` of the time, the rest by global popularity;
- item popularity is Zipf-like (``popularity_skew``), with Dirichlet-style noise per segment, so a
  few items take most of the traffic but each segment ranks its cluster differently;
- users differ in activity (log-normal), and re-play items they played before (``repeat_share``);
- event types depend on taste: mostly plays (value = seconds played, longer in taste), some
  clicks, likes mostly in taste, skips mostly out of taste;
- a share ``new_user_share`` of events is the first event of a user outside the initial
  population; such a user then stays active like any other;
- event times increase strictly, with exponential gaps (a Poisson stream).

Everything is a function of the parameters and the seed (on a given Python version, since
``random.Random`` backs it): ``events(n)`` is a prefix of ``events(n + k)``, event ids included.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import random
from collections.abc import Iterator
from typing import Any

from streamrec.schemas.events import (
    EVENT_ID,
    EVENT_TIME,
    EVENT_TYPE,
    ITEM_ID,
    USER_ID,
    VALUE,
)

# 2024-01-01T00:00:00Z: a fixed start, so the same seed replays the same events byte for byte.
DEFAULT_START_MS = 1_704_067_200_000

# Event type mixes (type, probability): likes mostly in taste, skips mostly out of it.
_IN_TASTE_MIX = (("play", 0.72), ("click", 0.16), ("like", 0.08), ("skip", 0.04))
_OUT_OF_TASTE_MIX = (("play", 0.62), ("click", 0.18), ("like", 0.02), ("skip", 0.18))
# Median seconds played; a play never lasts beyond an hour in this world.
_IN_TASTE_PLAY_S = 150.0
_OUT_OF_TASTE_PLAY_S = 45.0
_MAX_PLAY_S = 3600.0


def user_id(index: int) -> str:
    return f"u{index:05d}"


def item_id(index: int) -> str:
    return f"i{index:04d}"


def _id_index(identifier: str, prefix: str) -> int:
    digits = identifier[len(prefix) :]
    if not identifier.startswith(prefix) or not digits.isdigit():
        raise KeyError(f"{identifier!r} is not a synthetic id ({prefix}<digits>)")
    return int(digits)


def _cumulative(weights: list[float]) -> list[float]:
    return list(itertools.accumulate(weights))


def _draw(cum: list[float], rng: random.Random) -> int:
    """An index drawn with probability proportional to its weight, given cumulative weights."""
    index = bisect.bisect_right(cum, rng.random() * cum[-1])
    return min(index, len(cum) - 1)  # guards the float edge where the draw equals the total


class SyntheticWorld:
    """Users, items and latent segments, and a deterministic stream of their events."""

    def __init__(
        self,
        users: int = 1000,
        items: int = 500,
        segments: int = 5,
        seed: int = 7,
        new_user_share: float = 0.05,
        *,
        segment_focus: float = 0.8,
        popularity_skew: float = 1.0,
        repeat_share: float = 0.25,
        mean_gap_ms: float = 1000.0,
    ) -> None:
        problems = [
            (users >= 1, "users must be >= 1"),
            (segments >= 1, "segments must be >= 1"),
            (items >= segments, "items must be >= segments (each segment needs its own items)"),
            (0.0 <= new_user_share <= 1.0, "new_user_share must be within [0, 1]"),
            (0.0 <= segment_focus <= 1.0, "segment_focus must be within [0, 1]"),
            (popularity_skew >= 0.0, "popularity_skew must be >= 0"),
            (0.0 <= repeat_share <= 1.0, "repeat_share must be within [0, 1]"),
            (mean_gap_ms >= 0.0, "mean_gap_ms must be >= 0"),
        ]
        errors = [message for ok, message in problems if not ok]
        if errors:
            raise ValueError("; ".join(errors))
        self.users = users
        self.items = items
        self.segments = segments
        self.seed = seed
        self.new_user_share = new_user_share
        self.segment_focus = segment_focus
        self.popularity_skew = popularity_skew
        self.repeat_share = repeat_share
        self.mean_gap_ms = mean_gap_ms
        # Seeding with a string hashes it (sha512), so nearby seeds give unrelated worlds.
        rng = random.Random(f"streamrec.synthetic:{seed}")
        self._item_cluster = self._plant_clusters(rng)
        self._popularity = self._plant_popularity(rng)
        self._segment_cum = [self._segment_weights(k, rng) for k in range(segments)]
        self._user_segment = self._plant_user_segments(rng)
        self._activity = [rng.lognormvariate(0.0, 1.0) for _ in range(users)]
        # A newcomer is as active as a typical (median) user.
        self._newcomer_activity = sorted(self._activity)[users // 2]

    # --- planting the structure -------------------------------------------------------------

    def _plant_clusters(self, rng: random.Random) -> list[int]:
        order = list(range(self.items))
        rng.shuffle(order)
        cluster = [0] * self.items
        for position, item in enumerate(order):
            cluster[item] = position * self.segments // self.items
        return cluster

    def _plant_popularity(self, rng: random.Random) -> list[float]:
        # Zipf over a random ranking, independent of the clusters: every cluster has hits.
        ranks = list(range(self.items))
        rng.shuffle(ranks)
        return [1.0 / (rank + 1) ** self.popularity_skew for rank in ranks]

    def _segment_weights(self, segment: int, rng: random.Random) -> list[float]:
        # Gamma noise (a Dirichlet once normalised) makes each segment rank its cluster its own way.
        in_cluster = [
            pop * rng.gammavariate(2.0, 1.0) if self._item_cluster[i] == segment else 0.0
            for i, pop in enumerate(self._popularity)
        ]
        in_total, pop_total = sum(in_cluster), sum(self._popularity)
        focus = self.segment_focus
        weights = [
            focus * w / in_total + (1.0 - focus) * pop / pop_total
            for w, pop in zip(in_cluster, self._popularity, strict=True)
        ]
        return _cumulative(weights)

    def _plant_user_segments(self, rng: random.Random) -> list[int]:
        # Balanced: every segment gets its share of the initial users.
        segment_of = [index % self.segments for index in range(self.users)]
        rng.shuffle(segment_of)
        return segment_of

    def _newcomer_segment(self, newcomer: int) -> int:
        # A function of the seed and the newcomer's rank alone, so truth needs no event stream.
        return random.Random(f"streamrec.synthetic:{self.seed}:new:{newcomer}").randrange(
            self.segments
        )

    # --- truth ------------------------------------------------------------------------------

    @property
    def user_ids(self) -> list[str]:
        """The initial population; newcomers get the ids that follow."""
        return [user_id(u) for u in range(self.users)]

    @property
    def item_ids(self) -> list[str]:
        return [item_id(i) for i in range(self.items)]

    @property
    def segment_of(self) -> dict[str, int]:
        """Planted segment of every user of the initial population."""
        return {user_id(u): s for u, s in enumerate(self._user_segment)}

    def user_segment(self, user: str) -> int:
        """Planted segment of any user, newcomers included; KeyError for a foreign id."""
        index = _id_index(user, "u")
        if index < self.users:
            return self._user_segment[index]
        return self._newcomer_segment(index - self.users)

    def is_newcomer(self, user: str) -> bool:
        return _id_index(user, "u") >= self.users

    def item_cluster(self, item: str) -> int:
        """The segment whose cluster ``item`` belongs to."""
        index = _id_index(item, "i")
        if index >= self.items:
            raise KeyError(f"{item!r} is not an item of this world ({self.items} items)")
        return self._item_cluster[index]

    def segment_items(self, segment: int) -> list[str]:
        """The items of the cluster that ``segment`` favours."""
        return [item_id(i) for i, c in enumerate(self._item_cluster) if c == segment]

    def _fingerprint(self, start_ms: int) -> str:
        params = (
            self.users,
            self.items,
            self.segments,
            self.seed,
            self.new_user_share,
            self.segment_focus,
            self.popularity_skew,
            self.repeat_share,
            self.mean_gap_ms,
            start_ms,
        )
        return hashlib.sha256(repr(params).encode()).hexdigest()[:10]

    # --- the event stream -------------------------------------------------------------------

    def events(self, count: int, start_ms: int = DEFAULT_START_MS) -> Iterator[dict[str, Any]]:
        """``count`` contract-valid events, times strictly increasing from ``start_ms``.

        Event ids fold in every parameter and ``start_ms``: the same world replays the same ids
        (so consumers can drop the replay), a different world never reuses them.
        """
        rng = random.Random(f"streamrec.synthetic:{self.seed}:events:{start_ms}")
        tag = self._fingerprint(start_ms)
        activity_cum = _cumulative(self._activity)
        segment_of = list(self._user_segment)
        played: dict[int, list[int]] = {}
        now = start_ms
        for n in range(count):
            gap = rng.expovariate(1.0 / self.mean_gap_ms) if self.mean_gap_ms > 0 else 0.0
            now += 1 + int(gap)
            if rng.random() < self.new_user_share:
                user = len(segment_of)
                segment_of.append(self._newcomer_segment(user - self.users))
                activity_cum.append(activity_cum[-1] + self._newcomer_activity)
            else:
                user = _draw(activity_cum, rng)
            event_type, item, seconds = self._next_action(user, segment_of[user], played, rng)
            if event_type != "skip":
                played.setdefault(user, []).append(item)
            yield {
                EVENT_ID: f"syn-{tag}-{n}",
                USER_ID: user_id(user),
                ITEM_ID: item_id(item),
                EVENT_TYPE: event_type,
                EVENT_TIME: now,
                VALUE: seconds,
            }

    def _next_action(
        self, user: int, segment: int, played: dict[int, list[int]], rng: random.Random
    ) -> tuple[str, int, float | None]:
        history = played.get(user)
        if history and rng.random() < self.repeat_share:
            # Uniform over past plays: an item played often is re-played more often.
            return "play", rng.choice(history), self._play_seconds(True, rng)
        item = _draw(self._segment_cum[segment], rng)
        in_taste = self._item_cluster[item] == segment
        event_type = self._event_type(in_taste, rng)
        seconds = self._play_seconds(in_taste, rng) if event_type == "play" else None
        return event_type, item, seconds

    @staticmethod
    def _event_type(in_taste: bool, rng: random.Random) -> str:
        mix = _IN_TASTE_MIX if in_taste else _OUT_OF_TASTE_MIX
        draw = rng.random()
        for event_type, share in mix:
            draw -= share
            if draw < 0:
                return event_type
        return mix[0][0]

    @staticmethod
    def _play_seconds(in_taste: bool, rng: random.Random) -> float:
        median = _IN_TASTE_PLAY_S if in_taste else _OUT_OF_TASTE_PLAY_S
        seconds = median * rng.lognormvariate(0.0, 0.8)
        return round(min(max(seconds, 1.0), _MAX_PLAY_S), 1)
