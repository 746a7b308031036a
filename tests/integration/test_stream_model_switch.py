"""A new model published while the stream runs: the stream moves its lists to the new version,
readers follow the pointer, and the previous version's keys are gone.

The stream runs as ``streamrec stream`` in a subprocess (helpers in test_stream_recovery.py);
the batch job runs in-process and publishes V2 while events keep arriving, and a reader thread
checks every atomic read (pointer and lists in one call) the whole time.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pyspark.sql import SparkSession

from streamrec.batch.job import run_batch
from streamrec.producer.run import publish_events
from streamrec.producer.synthetic import SyntheticWorld
from streamrec.redis_lists import read_lists
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import with_overrides
from tests.integration.test_stream_recovery import (
    BackgroundPublish,
    Event,
    StreamProcess,
    newest_event,
    user_states,
    wait_until,
    warm_up,
)

pytestmark = pytest.mark.integration


class Reader:
    """A thread reading every user's list and the pointer in one atomic call (READ_LISTS_LUA),
    noting each list whose model is not the version the same call returned."""

    def __init__(self, cfg: Config, users: list[str]) -> None:
        self.cfg, self.users = cfg, users
        self.polls = 0
        self.versions: list[str] = []  # in the order first seen
        self.mismatches: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        client = redis.Redis(host=self.cfg.redis.host, port=self.cfg.redis.port)
        try:
            while not self._stop.is_set():
                version, popular, lists = read_lists(client, self.cfg.redis.key_prefix, self.users)
                self.polls += 1
                if version is not None and version not in self.versions:
                    self.versions.append(version)
                named = [("popular", popular), *lists.items()]
                for who, rec in named:
                    if rec is not None and rec.model_version != version:
                        self.mismatches.append(
                            f"poll {self.polls}: pointer {version}, {who}'s list "
                            f"({rec.source}) model {rec.model_version}"
                        )
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _lists_fresh(
    client: redis.Redis, cfg: Config, users: list[str], version: str, newest: dict[str, int]
) -> bool:
    """Every one of ``users`` has, under the pointer ``version``, a stream list of ``version``
    built up to their newest event."""
    pointer, _, lists = read_lists(client, cfg.redis.key_prefix, users)
    return pointer == version and all(
        rec is not None
        and (rec.source, rec.model_version, rec.watermark_ms)
        == (L.SOURCE_STREAM, version, newest[user])
        for user, rec in lists.items()
    )


def test_a_model_published_while_the_stream_runs_takes_over_its_lists(
    isolated_cfg: Config, spark: SparkSession, redis_client: redis.Redis, tmp_path: Path
) -> None:
    cfg = with_overrides(isolated_cfg, batch=dict(holdout_share=0.0))  # every retrain promoted
    prefix = cfg.redis.key_prefix
    world = SyntheticWorld(users=16, items=30, segments=3, seed=31, new_user_share=0.0)
    warm = list(world.events(500))
    users = sorted({e[E.USER_ID] for e in warm})
    early, during = users[:4], users[4:12]  # events before the retrain / while it runs
    after = during[:4]  # ... and events after the switch too
    clock = itertools.count(max(e[E.EVENT_TIME] for e in warm) + 60_000)
    sent: list[Event] = []  # every event after the warm-up, in the order sent

    def play(user: str, tag: str) -> Event:
        n = next(clock)
        event = {
            E.EVENT_ID: f"{tag}-{n}",
            E.USER_ID: user,
            E.ITEM_ID: world.item_ids[n % 30],
            E.EVENT_TYPE: "play",
            E.EVENT_TIME: n,
            E.VALUE: 90.0,
        }
        sent.append(event)
        return event

    stop_during = threading.Event()

    def while_training() -> Iterator[Event]:
        for user in itertools.cycle(during):
            if stop_during.is_set():
                return
            yield play(user, "during")

    stream = StreamProcess(cfg, tmp_path)
    reader: Reader | None = None
    t0 = time.monotonic()
    try:
        v1 = warm_up(cfg, spark, warm, stream).version
        print(f"warm-up and V1 {v1} in {time.monotonic() - t0:.1f}s")

        # 1. The stream writes lists under V1.
        assert publish_events(cfg, [play(u, "early") for u in early * 2]).sent == 8
        newest = newest_event(sent)
        wait_until(
            lambda: _lists_fresh(redis_client, cfg, early, v1, newest),
            90,
            f"stream lists under V1 for {early}",
            stream,
        )
        print(f"stream lists under V1 at {time.monotonic() - t0:.1f}s")

        # 2. V2 trained and published while events keep coming and a reader watches.
        reader = Reader(cfg, users)
        producer = BackgroundPublish(cfg, while_training(), rate=20.0)
        second = run_batch(cfg, spark=spark)
        stop_during.set()
        producer.join()
        v2 = second.version
        assert second.promoted and v2 != v1, second.decision
        print(
            f"V2 {v2} published at {time.monotonic() - t0:.1f}s ({len(sent) - 8} events "
            f"while it trained), data cut {second.data_cut_ms}, newest early event "
            f"{max(newest[u] for u in early)}"
        )

        # 3. Events after the switch: the stream's next micro-batches write under V2.
        assert publish_events(cfg, [play(u, "after") for u in after]).sent == len(after)
        newest = newest_event(sent)
        wait_until(
            lambda: _lists_fresh(redis_client, cfg, after, v2, newest),
            60,
            f"stream lists under V2 for {after}",
            stream,
        )
        states = user_states(redis_client, cfg, early + during)
        behind = [u for u in early + during if states[u].last_ms != newest[u]]
        assert behind == [], f"the stream has not applied every event of {behind}"
        print(f"stream lists under V2 at {time.monotonic() - t0:.1f}s")
        reader.stop()
        pointer = redis_client.get(L.current_model_key(prefix))
        _, _, lists = read_lists(redis_client, prefix, users)
        left = sorted(
            k.decode()
            for k in redis_client.scan_iter(match=L.version_keys_pattern(prefix, v1), count=1000)
        )
        left_lists = {k: redis_client.hget(k, L.FIELD_LIST) for k in left}
        fences = {
            u: redis_client.hget(L.user_list_key(prefix, v2, u), L.FIELD_FENCE) for u in after
        }
    finally:
        if reader is not None:
            reader.stop()
        stop_during.set()
        stream.stop()

    assert pointer == v2.encode()
    assert reader is not None
    assert reader.polls > 20 and reader.versions == [v1, v2], (reader.polls, reader.versions)
    for user in after:  # fresh lists of V2, from the stream, up to the newest event
        rec = lists[user]
        assert rec is not None and rec.model_version == v2 and rec.source == L.SOURCE_STREAM
        assert rec.watermark_ms == newest[user] and fences[user] == str(newest[user]).encode()

    # What the switch must not leave behind, gathered so one run shows every kind.
    problems = []
    if reader.mismatches:
        problems.append(
            f"{len(reader.mismatches)} reads returned a list whose model is not the "
            f"pointer read in the same call, first: {reader.mismatches[:3]}"
        )
    if left:
        shown = {k: (v or b"")[:90] for k, v in list(left_lists.items())[:3]}
        problems.append(f"{len(left)} keys of V1 {v1} remain after the switch: {shown}")
    for user, rec in lists.items():
        if rec is None:
            problems.append(f"{user} has no list under V2")
        elif rec.model_version != v2:
            problems.append(
                f"{user}'s list under V2 is of model {rec.model_version} "
                f"({rec.source}, watermark {rec.watermark_ms})"
            )
        elif user in newest and rec.watermark_ms < newest[user]:
            problems.append(
                f"{user}'s list under V2 ({rec.source}) is built up to "
                f"{rec.watermark_ms}, not their newest event {newest[user]}"
            )
    assert problems == [], "\n".join(problems)
