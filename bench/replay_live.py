"""`streamrec bench replay --live N`: a slice of the time-ordered replay through the real path,
beside the offline replay of the same slice under the same model version.

The first half of the file goes through Kafka and the streaming job (per-user state, event
store); the batch job trains on that event store and publishes its lists. Then the running
stream takes the first ``N`` events of the second half, and before each event its user's list
is read from Redis as an app reads it (their list, else the version's popular list). The same
events are replayed offline with the stream's own per-user step against the version the batch
job saved (bench/replay.py ``fold_in``). Both paths are scored on the same relevant events;
where they agree the live path is what the offline figures say it is.

Events are sent in waves of at most one event per user (each user's events stay in order), and
a wave is sent once the stream has applied the previous one: a user's list depends on their
own history only, so this is the same replay as one event at a time, in far fewer round trips.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from pyspark.sql import SparkSession

from streamrec.batch.interactions import RATING
from streamrec.batch.job import BatchResult, run_batch
from streamrec.batch.rating_files import DEFAULT_EVENT_TYPES, read_ratings
from streamrec.bench.replay import ReplayParams, Tally, without
from streamrec.demo import namespace_config, reset_namespace
from streamrec.errors import StreamrecError
from streamrec.model import store
from streamrec.model.store import ItemModel
from streamrec.model.user_state import UserState, merge
from streamrec.producer.run import publish_events
from streamrec.redis_lists import connect, read_lists
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.spark import build_spark
from streamrec.stack import manager
from streamrec.streaming.fresh_lists import finish_users, read_states
from streamrec.streaming.job import StreamReport, run_stream, start_stream

log = logging.getLogger(__name__)

# The offline states keep every item and id: the slice is short, nothing is bounded away.
OFFLINE_MAX_ITEMS, OFFLINE_MAX_IDS = 100_000, 8


def _events(rows: pd.DataFrame, first_id: int, event_type: str) -> list[dict[str, Any]]:
    return [
        {
            E.EVENT_ID: f"replay-{first_id + n}",
            E.USER_ID: str(user),
            E.ITEM_ID: str(item),
            E.EVENT_TYPE: event_type,
            E.EVENT_TIME: int(when),
            E.VALUE: float(value),
        }
        for n, (user, item, when, value) in enumerate(
            zip(rows[E.USER_ID], rows[E.ITEM_ID], rows[E.EVENT_TIME], rows[RATING], strict=True)
        )
    ]


def _waves(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Events regrouped so that a wave holds at most one event per user, each user's events in
    their order: event j of a user goes to wave j."""
    waves: list[list[dict[str, Any]]] = []
    count: dict[str, int] = defaultdict(int)
    for event in events:
        at = count[event[E.USER_ID]]
        count[event[E.USER_ID]] += 1
        if at == len(waves):
            waves.append([])
        waves[at].append(event)
    return waves


def _offline_list(
    model: ItemModel, index: dict[str, int], state: UserState | None, cfg: Config
) -> list[str]:
    """The stream's list for ``state`` under ``model``, computed here ([] when it has none)."""
    if state is None:
        return []
    update = finish_users([state], model, index, cfg, int(state.last_ms or 0))[0]
    return [item for item, _ in L.decode_list(update.payload).items] if update.payload else []


def _wait_applied(cfg: Config, expected: dict[str, int], timeout_s: float) -> None:
    """Until every user's stored state has taken ``expected[user]`` events."""
    client = connect(cfg.redis)
    users = sorted(expected)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            states = read_states(client, cfg.redis.key_prefix, users)
            behind = [u for u, s in zip(users, states, strict=True) if s.events < expected[u]]
            if not behind:
                return
            if time.monotonic() > deadline:
                raise StreamrecError(
                    f"replay: the stream has not applied the events of {len(behind)} users "
                    f"(e.g. {behind[0]}) within {timeout_s:.0f} s"
                )
            time.sleep(0.05)
    finally:
        client.close()


@dataclass
class Agreement:
    """The live lists' and the offline lists' hits, and how often the two were the same."""

    live: Tally = field(default_factory=Tally)
    offline: Tally = field(default_factory=Tally)
    compared: int = 0
    agreed: int = 0

    def add(self, live_list: list[str], offline_list: list[str], item: str) -> None:
        self.live.add(live_list, item)
        self.offline.add(offline_list, item)
        self.compared += 1
        self.agreed += live_list == offline_list


def _first_model(
    spark: SparkSession, cfg: Config, train: list[dict[str, Any]]
) -> tuple[BatchResult, ItemModel]:
    """The training half through Kafka and the stream, then a batch run: the live version."""
    publish_events(cfg, train)
    stream = run_stream(cfg, available_now=True, spark=spark)
    if stream.valid != len(train):
        raise StreamrecError(f"replay: {stream.valid} of {len(train)} training events stored")
    result = run_batch(cfg, spark=spark)
    if not result.promoted:
        raise StreamrecError(f"replay: the first model was not promoted: {result.decision}")
    return result, store.load_item_model(cfg.paths.model_store, result.version)


def _offline_states(
    train: list[dict[str, Any]], cfg: Config
) -> tuple[dict[str, UserState], dict[str, set[str]], dict[str, int]]:
    """The offline side's start: each user's state, items seen and events applied."""
    states: dict[str, UserState] = {}
    seen: dict[str, set[str]] = defaultdict(set)
    applied: dict[str, int] = defaultdict(int)
    for user, frame in pd.DataFrame(train).groupby(E.USER_ID):
        merged = merge(UserState(), frame, 0, cfg.feedback, OFFLINE_MAX_ITEMS, OFFLINE_MAX_IDS)
        if merged is not None:
            states[str(user)] = merged
        seen[str(user)].update(frame[E.ITEM_ID])
        applied[str(user)] = len(frame)
    return states, seen, applied


def _apply_offline(
    wave: list[dict[str, Any]],
    batch: int,
    cfg: Config,
    states: dict[str, UserState],
    seen: dict[str, set[str]],
    applied: dict[str, int],
) -> None:
    """A wave's events into the offline states, as the stream applies them."""
    for event in wave:
        user = event[E.USER_ID]
        applied[user] += 1
        before = states.get(user, UserState())
        merged = merge(
            before, pd.DataFrame([event]), batch, cfg.feedback, OFFLINE_MAX_ITEMS, OFFLINE_MAX_IDS
        )
        if merged is not None:
            states[user] = merged
        seen[user].add(event[E.ITEM_ID])


def run_live_replay(
    cfg: Config, data: str, params: ReplayParams, slice_events: int, timeout_s: float = 120.0
) -> dict[str, Any]:
    cfg = namespace_config(cfg, "replay")
    manager.up(cfg)
    reset_namespace(cfg)
    spark = build_spark(cfg, "replay-live")
    rows: pd.DataFrame = read_ratings(spark, data, params.fmt, params.sep).toPandas()
    if rows[E.EVENT_TIME].isna().any():
        raise ValueError(f"{data}: every row needs a time to be replayed in order")
    rows = rows.sort_values(E.EVENT_TIME, kind="stable").reset_index(drop=True)
    half, k = len(rows) // 2, params.k
    event_type = DEFAULT_EVENT_TYPES[params.fmt]
    train = _events(rows.iloc[:half], 0, event_type)
    part = rows.iloc[half : half + slice_events]
    replayed = _events(part, half, event_type)

    started = time.monotonic()
    result, model = _first_model(spark, cfg, train)
    prepare_s = time.monotonic() - started
    index = model.index_of()
    states, seen, applied = _offline_states(train, cfg)

    agreement = Agreement()
    client = connect(cfg.redis)
    queries = start_stream(spark, cfg, available_now=False, report=StreamReport())
    started = time.monotonic()
    waves = _waves(replayed)
    try:
        for wave_no, wave in enumerate(waves):
            users = [event[E.USER_ID] for event in wave]
            _, popular, lists = read_lists(client, cfg.redis.key_prefix, users)
            fallback = [item for item, _ in popular.items] if popular else []
            for event in wave:
                user, item = event[E.USER_ID], event[E.ITEM_ID]
                if float(event[E.VALUE]) < params.relevant_min or item in seen[user]:
                    continue
                rec = lists[user]
                live_list = without([i for i, _ in rec.items] if rec else fallback, seen[user], k)
                ours = _offline_list(model, index, states.get(user), cfg)
                offline_list = without(ours or fallback, seen[user], k)
                agreement.add(live_list, offline_list, item)
            publish_events(cfg, wave)
            _apply_offline(wave, wave_no + 1, cfg, states, seen, applied)
            _wait_applied(cfg, {u: applied[u] for u in users}, timeout_s)
    finally:
        queries.stop_gracefully()
        client.close()
    replay_s = time.monotonic() - started
    return _live_summary(
        data, params, half, replayed, len(waves), result, model, agreement, prepare_s, replay_s
    )


def _live_summary(
    data: str,
    params: ReplayParams,
    half: int,
    replayed: list[dict[str, Any]],
    waves: int,
    result: BatchResult,
    model: ItemModel,
    agreement: Agreement,
    prepare_s: float,
    replay_s: float,
) -> dict[str, Any]:
    return {
        "data": data,
        "trained_on": half,
        "replayed": len(replayed),
        "waves": waves,
        "version": result.version,
        "params": model.meta["params"],
        "k": params.k,
        "relevant_min": params.relevant_min,
        "live": agreement.live.as_dict(),
        "offline": agreement.offline.as_dict(),
        "lists_compared": agreement.compared,
        "lists_identical": agreement.agreed,
        "agreement": agreement.agreed / agreement.compared if agreement.compared else None,
        "prepare_s": round(prepare_s, 1),
        "replay_s": round(replay_s, 1),
        "events_per_s": round(len(replayed) / replay_s, 1) if replay_s else None,
    }


def table(result: dict[str, Any]) -> str:
    k = result["k"]
    lines = [
        f"live slice: {result['replayed']} events in {result['waves']} waves, "
        f"{result['live']['events']} relevant, model {result['version']} "
        f"({result['params'].get('family', 'als')})",
        f"{'path':<8} {f'HR@{k}':>7} {f'NDCG@{k}':>8}",
    ]
    for path in ("live", "offline"):
        lines.append(f"{path:<8} {result[path]['hr']:7.4f} {result[path]['ndcg']:8.4f}")
    share = result["agreement"]
    lines.append(
        f"identical top-{k} lists: {result['lists_identical']} of {result['lists_compared']}"
        + ("" if share is None else f" ({share:.1%})")
    )
    return "\n".join(lines)
