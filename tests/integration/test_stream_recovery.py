"""The streaming job killed with SIGKILL mid-stream and restarted on the same checkpoint: the
event store holds every valid event exactly once, every invalid record reached the dead-letter
topic, and each user's state and list in Redis count every event once.

Black-box: ``streamrec stream`` runs as a subprocess with a config file; the test looks only at
Kafka, the event store folder, the checkpoint folder and Redis. The helpers at the top
(``StreamProcess``, ``wait_until``, ``warm_up``, ``user_states``) serve
test_stream_model_switch.py too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis
from pyspark.sql import SparkSession

from streamrec.batch.job import BatchResult, run_batch
from streamrec.model import store
from streamrec.model.feedback import event_weights
from streamrec.model.user_state import UserState, decode_state
from streamrec.producer.invalid import KINDS, RawRecord, malformed
from streamrec.producer.run import ProduceReport, publish_events
from streamrec.producer.synthetic import SyntheticWorld
from streamrec.redis_lists import read_lists
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import dump_config, with_overrides
from tests.conftest import dead_letter_digests, read_topic, source_digest

pytestmark = pytest.mark.integration

STREAMREC = Path(sys.executable).with_name("streamrec")  # the venv's console script
Event = dict[str, Any]


# --- helpers shared with test_stream_model_switch.py --------------------------------------------


class StreamProcess:
    """``streamrec stream`` in its own process group (the JVM included), its output in a file."""

    def __init__(self, cfg: Config, folder: Path, *args: str) -> None:
        assert STREAMREC.exists(), f"no console script at {STREAMREC}: pip install -e ."
        self.folder = folder
        self.config_file = folder / "streamrec.yaml"
        text, secrets = dump_config(cfg)
        self.config_file.write_text(text, "utf-8")
        self.env = {k: v for k, v in os.environ.items() if k != "STREAMREC_CONFIG"} | secrets
        self.cmd = [str(STREAMREC), "--config", str(self.config_file), "stream", *args]
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def log_file(self) -> Path:
        return self.folder / f"stream-{self.runs}.log"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "the stream is running already"
        self.runs += 1
        with open(self.log_file, "wb") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.folder,
                env=self.env,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL to the whole group: the Python driver and its JVM die at once."""
        assert self.proc is not None
        self._signal_group(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """Ctrl-C to the driver (it stops the query between micro-batches), SIGKILL to the group
        if it has not exited in ``timeout_s``; returns the exit code, None if it had to be
        killed."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGINT)
        try:
            code: int | None = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        self._signal_group(signal.SIGKILL)  # whatever the driver left behind
        self.proc.wait(timeout=30)
        return code

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):  # the group is gone already
            os.killpg(self.proc.pid, sig)  # start_new_session: the group id is the pid

    def check_running(self) -> None:
        assert self.proc is not None
        code = self.proc.poll()
        assert code is None, f"`streamrec stream` exited with {code}:\n{self.tail()}"

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_file.read_text("utf-8", errors="replace")
        except FileNotFoundError:
            return "(no output)"
        return "\n".join(text.splitlines()[-lines:])


def wait_until(
    condition: Callable[[], bool],
    timeout_s: float,
    what: str,
    stream: StreamProcess | None = None,
    poll_s: float = 0.2,
) -> float:
    """Poll ``condition`` until it holds; returns the seconds it took. On timeout (or if the
    stream exits meanwhile) fail saying what was awaited, with the stream's output."""
    start = time.monotonic()
    while not condition():
        if stream is not None:
            stream.check_running()
        if time.monotonic() - start > timeout_s:
            output = f"\n--- stream output (tail) ---\n{stream.tail()}" if stream else ""
            raise AssertionError(f"not within {timeout_s:.0f}s: {what}{output}")
        time.sleep(poll_s)
    return time.monotonic() - start


def warm_up(
    cfg: Config, spark: SparkSession, events: list[Event], stream: StreamProcess
) -> BatchResult:
    """Start the stream (it boots while ``events`` go out), wait for the event store to hold
    them, and run the batch job: a current model that knows their users and items, with the
    stream running on."""
    stream.start()
    assert publish_events(cfg, events).sent == len(events)
    what = f"the stream stores the {len(events)} warm-up events"
    wait_until(lambda: stored_events(spark, cfg) >= len(events), 180, what, stream, poll_s=2.0)
    result = run_batch(cfg, spark=spark)
    assert result.promoted, result.decision
    print(f"batch: {result.summary()}")
    return result


def user_states(client: redis.Redis, cfg: Config, users: Iterable[str]) -> dict[str, UserState]:
    """The stream's state of each user (an empty state for a user it has not seen)."""
    users = list(users)
    pipe = client.pipeline(transaction=False)
    for user in users:
        pipe.hget(L.user_state_key(cfg.redis.key_prefix, user), "state")
    return {user: decode_state(raw) for user, raw in zip(users, pipe.execute(), strict=True)}


def newest_event(events: Iterable[Event]) -> dict[str, int]:
    """Each user's newest event time."""
    newest: dict[str, int] = {}
    for e in events:
        newest[e[E.USER_ID]] = max(newest.get(e[E.USER_ID], 0), e[E.EVENT_TIME])
    return newest


def event_store_ids(spark: SparkSession, cfg: Config) -> Counter[str]:
    """How many times the event store holds each event id."""
    rows = spark.read.parquet(cfg.paths.event_store).select(E.EVENT_ID).collect()
    return Counter(r[E.EVENT_ID] for r in rows)


def dead_letters(cfg: Config) -> list[str]:
    """The source values' digests of the dead letters so far."""
    return dead_letter_digests(read_topic(cfg, cfg.kafka.dead_letter_topic))


def stored_events(spark: SparkSession, cfg: Config) -> int:
    """The number of events in the event store, for polling: 0 while it has none, and -1 when a
    read fails because the stream is replacing a folder being read (a replay)."""
    if not any(Path(cfg.paths.event_store).glob("batch_id=*/*.parquet")):
        return 0
    try:
        return spark.read.parquet(cfg.paths.event_store).count()
    except Exception:  # a replay replaced files under the read; the next poll reads again
        return -1


class BackgroundPublish:
    """``publish_events`` on a thread, paced at ``rate`` per second, while the test works."""

    def __init__(self, cfg: Config, records: Iterable[Any], rate: float) -> None:
        self.errors: list[BaseException] = []
        self.report: ProduceReport | None = None

        def run() -> None:
            try:
                self.report = publish_events(cfg, records, rate=rate)
            except BaseException as exc:  # surfaced in the test's thread by join()
                self.errors.append(exc)

        self.thread = threading.Thread(target=run, name="producer", daemon=True)
        self.thread.start()

    def join(self, timeout_s: float = 60.0) -> ProduceReport:
        """The ProduceReport, once every record is sent."""
        self.thread.join(timeout=timeout_s)
        assert not self.thread.is_alive(), f"the producer did not finish in {timeout_s:.0f}s"
        assert not self.errors, f"publishing failed: {self.errors[0]!r}"
        assert self.report is not None
        return self.report


# --- this test's own helpers ----------------------------------------------------------------------


def _numbered(folder: Path) -> int:
    """The highest numbered file in a checkpoint log folder (offsets/, commits/), -1 if none."""
    if not folder.is_dir():
        return -1
    return max((int(p.name) for p in folder.iterdir() if p.name.isdigit()), default=-1)


def _batches_in_flight(checkpoint: Path) -> dict[str, int]:
    """Per query of the stream (a folder with ``offsets/`` under its checkpoint), the micro-batch
    it has planned (offsets/N) and not committed (commits/N): what Spark replays on restart.
    Spark's own checkpoint layout, whatever number of queries the stream runs."""
    in_flight = {}
    for offsets in checkpoint.rglob("offsets"):
        planned, committed = _numbered(offsets), _numbered(offsets.parent / "commits")
        if planned > committed:
            in_flight[str(offsets.parent.relative_to(checkpoint))] = planned
    return in_flight


def _expected_weights(cfg: Config, events: list[Event]) -> dict[str, float]:
    """A user's rating of each item as the batch job computes it (decay is off): the sum of
    their events' weights, zeros dropped."""
    frame = pd.DataFrame(events)
    frame["w"] = event_weights(cfg.feedback, frame[E.EVENT_TYPE], frame[E.VALUE])
    sums = frame.groupby(E.ITEM_ID)["w"].sum()
    return {str(item): float(w) for item, w in sums.items() if w != 0.0}


def _with_invalid(events: list[Event], kinds: Iterable[str], first: int) -> list[Event | RawRecord]:
    """``events`` with a malformed copy of one of them for each kind slipped in, spread out."""
    kinds = list(kinds)
    records: list[Event | RawRecord] = list(events)
    for n, kind in enumerate(kinds):
        at = (n + 1) * len(events) // (len(kinds) + 1)
        records.insert(at + n, malformed(kind, events[at], first + n))
    return records


def _kill_mid_batch(
    stream: StreamProcess, cfg: Config, client: redis.Redis, users: list[str], least: int
) -> tuple[dict[str, int], str]:
    """SIGKILL the stream in the middle of a micro-batch once at least ``least`` events are
    applied to the states: preferably a micro-batch that has written some users' state already
    (partly applied in Redis), else, 3 s later, any micro-batch in flight. Returns the
    micro-batches in flight at the kill (per query) and how it was hit."""
    checkpoint = Path(cfg.paths.stream_checkpoint)
    start, since = time.monotonic(), None
    seen = {u: s.batch for u, s in user_states(client, cfg, users).items()}
    while True:
        stream.check_running()
        in_flight = _batches_in_flight(checkpoint)
        states = user_states(client, cfg, users)
        applied = sum(s.events for s in states.values())
        # States written since the last poll by a micro-batch that is still in flight.
        fresh = {s.batch for u, s in states.items() if s.batch != seen[u]}
        seen = {u: s.batch for u, s in states.items()}
        if applied >= least and since is None:
            since = time.monotonic()
        when = ""
        if in_flight and since is not None:
            if fresh & set(in_flight.values()):
                when = f"a micro-batch had written some users' state ({applied} events applied)"
            elif time.monotonic() - since > 3:
                when = f"a micro-batch was in flight ({applied} events applied)"
        if when:
            stream.kill()
            return _batches_in_flight(checkpoint), when
        assert time.monotonic() - start < 60, (
            f"no micro-batch in flight with at least {least} events applied, in 60 s "
            f"(applied {applied}, in flight {in_flight}):\n{stream.tail()}"
        )
        time.sleep(0.02)


WARM_EVENTS = 600
PHASE_A = 800  # paced while the stream runs; the kill comes after a quarter of it
PHASE_B = 200  # sent while the stream is down
RATE = 100.0  # events/s in phase A


def test_sigkill_mid_stream_then_restart_keeps_every_event_exactly_once(
    isolated_cfg: Config, spark: SparkSession, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # The state's bound on newest ids is above any user's count, so each user's state must hold
    # each of their event ids exactly once. No holdout: the retrain is promoted.
    cfg = with_overrides(
        isolated_cfg, streaming=dict(state_max_ids=5000), batch=dict(holdout_share=0.0)
    )
    world = SyntheticWorld(users=20, items=30, segments=3, seed=23, new_user_share=0.0)
    events = list(world.events(WARM_EVENTS + PHASE_A + PHASE_B))
    phase_a, phase_b = events[WARM_EVENTS:-PHASE_B], events[-PHASE_B:]
    by_user: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        by_user[e[E.USER_ID]].append(e)
    users, newest = sorted(by_user), newest_event(events)
    active = sorted({e[E.USER_ID] for e in phase_a + phase_b})  # they get stream lists
    half = len(KINDS) // 2
    records_a = _with_invalid(phase_a, KINDS[:half], 0)
    records_b = _with_invalid(phase_b, KINDS[half:], half)
    invalid = [r for r in records_a + records_b if isinstance(r, RawRecord)]

    def applied() -> int:
        return sum(s.events for s in user_states(redis_client, cfg, users).values())

    stream = StreamProcess(cfg, tmp_path)
    t0 = time.monotonic()
    try:
        model = warm_up(cfg, spark, events[:WARM_EVENTS], stream)
        known = set(store.load_item_model(cfg.paths.model_store).item_ids)
        assert all({e[E.ITEM_ID] for e in by_user[u]} & known for u in active)
        print(f"warm-up and model {model.version} in {time.monotonic() - t0:.1f}s")

        # 1. A first event through the stream with the model (its first such micro-batch is
        # the slow one), then phase A paced and a SIGKILL in the middle of a micro-batch once a
        # quarter of it is applied; phase B while the stream is down.
        assert publish_events(cfg, records_a[:1]).sent == 1
        wait_until(
            lambda: applied() == WARM_EVENTS + 1,
            60,
            "the stream applies a first event with the model",
            stream,
        )
        producer = BackgroundPublish(cfg, records_a[1:], RATE)
        least = WARM_EVENTS + PHASE_A // 4
        in_flight, when = _kill_mid_batch(stream, cfg, redis_client, users, least)
        print(
            f"killed at {time.monotonic() - t0:.1f}s when {when} of {len(events)}; in flight: "
            f"{in_flight}"
        )
        assert in_flight, f"the kill came between micro-batches ({when})"
        assert producer.join().sent == PHASE_A - 1
        assert publish_events(cfg, records_b).sent == PHASE_B

        # 2. The same command again, until every event is in the states and the event store
        # (which a query of its own may write later).
        stream.start()
        total = len(events)
        wait_until(
            lambda: applied() >= total,
            120,
            f"the restarted stream applies all {total} events",
            stream,
        )
        print(f"states complete at {time.monotonic() - t0:.1f}s")
        wait_until(
            lambda: stored_events(spark, cfg) >= total,
            60,
            f"the event store holds {total} events",
            stream,
            poll_s=1.0,
        )
        print(f"event store complete at {time.monotonic() - t0:.1f}s")
        # An archive micro-batch writes the event store first, then its dead letters.
        wanted_dead = {source_digest(r.value) for r in invalid}
        wait_until(
            lambda: wanted_dead <= set(dead_letters(cfg)),
            60,
            "every invalid record is dead-lettered",
            stream,
            poll_s=1.0,
        )
        stored = event_store_ids(spark, cfg)
        states = user_states(redis_client, cfg, users)
        version, _, lists = read_lists(redis_client, cfg.redis.key_prefix, active)
        fences = {
            u: redis_client.hget(
                L.user_list_key(cfg.redis.key_prefix, model.version, u), L.FIELD_FENCE
            )
            for u in active
        }
    finally:
        code = stream.stop()
    print(f"stream stopped (exit code {code}) at {time.monotonic() - t0:.1f}s")

    # The event store: every valid event exactly once, nothing else.
    want = Counter(e[E.EVENT_ID] for e in events)
    duplicated = sorted(i for i, n in stored.items() if n > 1)
    assert duplicated == [], f"{len(duplicated)} events stored more than once: {duplicated[:5]}"
    missing, extra = sorted(want - stored), sorted(stored - want)
    assert missing == [], f"{len(missing)} events lost: {missing[:5]}"
    assert extra == [], f"{len(extra)} unexpected events stored: {extra[:5]}"

    # Every invalid record reached the dead-letter topic (a replay may have repeated some).
    dead = Counter(dead_letters(cfg))
    assert [r.kind for r in invalid if dead[source_digest(r.value)] == 0] == []
    assert set(dead) == {source_digest(r.value) for r in invalid}

    # Each user's state counts each of their events once.
    for user in users:
        mine, state = by_user[user], states[user]
        assert state.events == len(mine), user
        assert sorted(state.ids) == sorted(e[E.EVENT_ID] for e in mine), user
        assert state.types == dict(Counter(e[E.EVENT_TYPE] for e in mine)), user
        assert state.last_ms == newest[user], user
        want_weights = _expected_weights(cfg, mine)
        assert state.weights == pytest.approx(want_weights, rel=1e-9, abs=1e-9), user
    # Each active user's list: from the stream, under the current model, up to their newest event.
    assert version == model.version
    for user in active:
        rec = lists[user]
        assert rec is not None, f"{user} has no list under {version}"
        assert (rec.source, rec.model_version) == (L.SOURCE_STREAM, model.version), user
        assert rec.watermark_ms == newest[user], user
        assert fences[user] is not None and int(fences[user]) == newest[user], user
