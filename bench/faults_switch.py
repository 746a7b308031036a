"""The ``batch_switch`` fault of `streamrec bench faults`: a second batch run switches versions
under the running stream and a steady producer, and a reader times when the users whose list
under the old version was fresher see one as fresh under the new version."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from streamrec.batch.job import run_batch
from streamrec.bench.fault_counts import FaultParams, Outcome, caught_up, count_load
from streamrec.producer.run import publish_events
from streamrec.producer.synthetic import SyntheticWorld
from streamrec.redis_lists import connect, decoded
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import dump_config, with_overrides
from streamrec.schemas.redis_layout import decode_list
from streamrec.streaming.job import StreamReport, run_stream, start_stream

log = logging.getLogger(__name__)


class SwitchWatch:
    """A reader around a version switch: it copies the live version's user lists every poll
    until the pointer moves, then times when each user whose last list under the old version
    was fresher than their list under the new one sees one at least as fresh."""

    def __init__(self, cfg: Config, users: list[str], poll_s: float = 0.02) -> None:
        self.cfg, self.users, self.poll_s = cfg, users, poll_s
        self.before: dict[str, int] = {}  # user -> the old version's list fence at the switch
        self.visible_s: dict[str, float] = {}
        self.waiting: list[str] = []
        self.switched_to: str | None = None

    def _fences(self, client: Any, version: str) -> dict[str, int]:
        """Each user's list fence as a reader decodes it (watermark_ms), one round trip."""
        prefix = self.cfg.redis.key_prefix
        pipe = client.pipeline(transaction=False)
        for user in self.users:
            pipe.hget(L.user_list_key(prefix, version, user), "list")
        raw = pipe.execute()
        return {
            u: decode_list(r, limit=0).watermark_ms
            for u, r in zip(self.users, raw, strict=True)
            if r is not None
        }

    def run(self, old: str, deadline_s: float, stop: threading.Event) -> None:
        prefix = self.cfg.redis.key_prefix
        client = connect(self.cfg.redis)
        try:
            while not stop.is_set():
                live = decoded(client.get(L.current_model_key(prefix)))
                if live is not None and live != old:
                    switched, self.switched_to = time.monotonic(), live
                    break
                self.before = self._fences(client, old) or self.before
                time.sleep(self.poll_s)
            else:
                return
            after = self._fences(client, self.switched_to)
            self.waiting = [u for u, t in self.before.items() if after.get(u, -1) < t]
            pending = set(self.waiting)
            while pending and time.monotonic() - switched < deadline_s:
                now = self._fences(client, self.switched_to)
                for u in list(pending):
                    if now.get(u, -1) >= self.before[u]:
                        self.visible_s[u] = time.monotonic() - switched
                        pending.discard(u)
                time.sleep(self.poll_s)
        finally:
            client.close()


def batch_switch(spark: SparkSession, cfg: Config, params: FaultParams, tmp: Path) -> Outcome:
    """A first version trained on the first events, then the stream running under a steady
    producer while a second batch run (its own process, ``streamrec batch run``) trains and
    switches; a reader (``SwitchWatch``) times the switch."""
    world = SyntheticWorld(users=200, items=150, segments=4, seed=19)
    pool = world.events(1_000_000)
    sent: list[dict[str, Any]] = []
    stop_sending = threading.Event()

    def until_stopped() -> Any:
        for event in pool:
            if stop_sending.is_set():
                return
            sent.append(event)
            yield event

    # The switch is what is timed: the runs train at the configured setting, untuned.
    untuned = with_overrides(cfg, batch=dict(tune_every=0, holdout_share=0.0))
    config = tmp / "switch.yaml"
    text, env = dump_config(untuned)
    config.write_text(text, "utf-8")
    first_events = [next(pool) for _ in range(1_000)]
    sent += first_events
    publish_events(cfg, first_events)
    run_stream(cfg, available_now=True, spark=spark)
    first = run_batch(untuned, spark=spark).version

    queries = start_stream(spark, cfg, available_now=False, report=StreamReport())
    producer = threading.Thread(
        target=publish_events, args=(cfg, until_stopped()), kwargs={"rate": params.switch_rate}
    )
    watch = SwitchWatch(cfg, world.user_ids)
    stop_watching = threading.Event()
    halted, code = False, 0
    try:
        producer.start()
        # The stream loads the first version and writes fresh lists under it; the archive
        # query stores the new events for the second run.
        time.sleep(cfg.streaming.archive_trigger_seconds + 5.0)
        watcher = threading.Thread(target=watch.run, args=(first, 30.0, stop_watching))
        watcher.start()
        cmd = [sys.executable, "-m", "streamrec.cli", "--config", str(config), "batch", "run"]
        run = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
        code = run.returncode
        if code:
            log.error("faults: the batch run exited %d: %s", code, run.stderr[-3000:])
        watcher.join(timeout=60.0)
        stop_watching.set()
        watcher.join()
        stop_sending.set()
        producer.join()
        halted = not caught_up(queries.lists, deadline_s=120)
        halted = halted or not all(q.isActive for q in queries.all) or code != 0
    finally:
        stop_watching.set()
        stop_sending.set()
        queries.stop_gracefully()
    outcome = count_load(spark, cfg, sent, "batch_switch", halted)
    times = sorted(watch.visible_s.values())
    outcome.detail.update(
        batch_exit_code=code,
        switched_from=first,
        switched_to=watch.switched_to,
        fresher_before_switch=len(watch.waiting),
        visible_p50_s=round(times[len(times) // 2], 3) if times else None,
        visible_max_s=round(times[-1], 3) if times else None,
        late=sum(1 for u in watch.waiting if watch.visible_s.get(u, 99.0) > 1.0),
        never_visible=sum(1 for u in watch.waiting if u not in watch.visible_s),
    )
    return outcome
