"""The EASE family on the real jobs: the batch job saves its item-item matrix and publishes
every user's history times that matrix; the stream's per-user step ranks a user the same way
from their state; tuning picks the family that wins on validation and says so."""

from __future__ import annotations

import random

import numpy as np
import pytest
import redis
from pyspark.sql import SparkSession

from streamrec.batch.job import run_batch
from streamrec.model import store
from streamrec.model.lists import rank_histories
from streamrec.model.user_state import decode_state
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import with_overrides
from streamrec.streaming.event_store import write_batch
from streamrec.streaming.fresh_lists import OUTCOME, WRITTEN, fresh_list_rows

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000


def _taste_groups(groups: int = 8, users_per_group: int = 15, items_per_group: int = 10) -> list:  # type: ignore[type-arg]
    """Users who play most of their group's items and a few of any group's, in rounds."""
    rng = random.Random(5)
    histories = []
    for u in range(groups * users_per_group):
        group = u % groups
        own = rng.sample([f"g{group}i{i}" for i in range(items_per_group)], items_per_group - 3)
        other = [f"g{rng.randrange(groups)}i{rng.randrange(items_per_group)}" for _ in range(2)]
        histories.append((f"u{u:03d}", own + other))
    rows = []
    for round_no in range(items_per_group - 1):
        for user, items in histories:
            if round_no < len(items):
                n = len(rows)
                rows.append((f"e{n}", user, items[round_no], "play", T0 + n * 1000, 30.0))
    return rows


def _store(spark: SparkSession, cfg: Config, rows: list, batch_id: int) -> None:  # type: ignore[type-arg]
    frame = spark.createDataFrame(rows, E.spark_event_schema())
    write_batch(frame, cfg.paths.event_store, batch_id)


def _list(client: redis.Redis, cfg: Config, version: str, user: str) -> L.RecList | None:
    raw = client.hget(L.user_list_key(cfg.redis.key_prefix, version, user), L.FIELD_LIST)
    return None if raw is None else L.decode_list(raw)


def test_an_ease_version_ranks_batch_and_stream_lists_alike(
    spark: SparkSession, isolated_cfg: Config, redis_client: redis.Redis
) -> None:
    rows = _taste_groups()
    _store(spark, isolated_cfg, rows, 0)
    cfg = with_overrides(
        isolated_cfg,
        batch=dict(family="ease", ease_l2=20.0, ease_binary=True, rank=4, top_n=5),
        streaming=dict(top_n=5),
    )
    result = run_batch(cfg, spark=spark)
    assert result.promoted and result.params["family"] == "ease", result.summary()
    assert "EASE l2 20" in result.summary()
    model = store.load_item_model(cfg.paths.model_store, result.version)
    assert model.item_matrix is not None
    n = len(model.item_ids)
    assert model.item_matrix.shape == (n, n) and np.allclose(np.diag(model.item_matrix), 0)
    params = store.fold_in_params(model)
    assert params.ease_binary is True

    # Batch lists: each user's played items, binarised, times the matrix; history left out.
    index = model.index_of()
    played: dict[str, set[str]] = {}
    for _, user, item, *_ in rows:
        played.setdefault(user, set()).add(item)
    users = sorted(played)[:12]
    histories = [
        (np.array(sorted(index[i] for i in played[u])), np.ones(len(played[u]))) for u in users
    ]
    expected = rank_histories(model, params, histories, 5)
    for user, best in zip(users, expected, strict=True):
        rec = _list(redis_client, cfg, result.version, user)
        assert best is not None and rec is not None and rec.source == L.SOURCE_BATCH
        assert [item for item, _ in rec.items] == [model.item_ids[i] for i in best[0]]
        assert not {item for item, _ in rec.items} & played[user]
        # Taste groups: the list starts with the user's own group's unplayed items.
        assert rec.items[0][0].split("i")[0] == f"g{int(user[1:]) % 8}"

    # The stream's per-user step under the same version: a user's list from their state.
    names = E.event_contract().field_names
    fresh = [
        ("s0", "newcomer", "g3i1", "play", T0 + 10**7, 5.0),
        ("s1", "newcomer", "g3i2", "play", T0 + 10**7 + 1, 5.0),
    ]
    values = [(E.encode_event({k: v for k, v in zip(names, row, strict=True)}),) for row in fresh]
    frame = spark.createDataFrame(values, "value binary")
    bc = spark.sparkContext.broadcast(model)
    outcomes = fresh_list_rows(frame, bc, cfg, 7, T0 + 10**7).collect()
    assert {r[E.USER_ID]: r[OUTCOME] for r in outcomes} == {"newcomer": WRITTEN}
    state = decode_state(
        redis_client.hget(L.user_state_key(cfg.redis.key_prefix, "newcomer"), "state")
    )
    stream_best = rank_histories(model, params, [state.interactions(index)], 5)[0]
    rec = _list(redis_client, cfg, result.version, "newcomer")
    assert stream_best is not None and rec is not None and rec.source == L.SOURCE_STREAM
    assert [item for item, _ in rec.items] == [model.item_ids[i] for i in stream_best[0]]
    assert all(item.startswith("g3") for item, _ in rec.items[:3])


def test_tuning_chooses_the_family_that_wins_on_validation(
    spark: SparkSession, isolated_cfg: Config
) -> None:
    rows = _taste_groups()
    _store(spark, isolated_cfg, rows, 0)
    cfg = with_overrides(
        isolated_cfg,
        batch=dict(
            rank=2,
            max_iter=4,
            holdout_share=0.2,
            tune_every=1,
            tune_candidates=2,
            tune_ranks=(2, 8),
            tune_reg_params=(0.1,),
            tune_alphas=(5.0,),
            tune_ease_l2s=(5.0, 50.0),
        ),
    )
    result = run_batch(cfg, spark=spark)
    tuning = result.tuning
    assert tuning is not None and tuning["tuned"] is True
    ease_trials = tuning["ease_trials"]
    assert {(t["ease_l2"], t["ease_binary"]) for t in ease_trials} == {
        (5.0, True),
        (50.0, True),
        (5.0, False),
        (50.0, False),
    }
    best_ease = max(t["ndcg"] for t in ease_trials)
    als_ndcg = tuning["validation"]["als_ndcg"]
    assert als_ndcg is not None
    chosen = result.params["family"]
    assert chosen == ("ease" if best_ease > als_ndcg else "als"), tuning
    assert tuning["tuned_params"]["family"] == chosen
    assert tuning["validation"]["best_ndcg"] == max(best_ease, als_ndcg)
    # The holdout scored the chosen family, which is what the version ranks with.
    meta = store.read_meta(cfg.paths.model_store, result.version)
    assert meta["params"]["family"] == chosen
    has_matrix = store.read_version_file(cfg.paths.model_store, result.version, store.ITEM_MATRIX)
    assert (has_matrix is not None) == (chosen == "ease")


def test_the_gate_folds_an_ease_current_model_in_on_the_next_holdout(
    spark: SparkSession, isolated_cfg: Config
) -> None:
    rows = _taste_groups()
    cut = len(rows) // 2
    cfg = with_overrides(
        isolated_cfg, batch=dict(family="ease", ease_l2=20.0, rank=4, holdout_share=0.2)
    )
    _store(spark, cfg, rows[:cut], 0)
    first = run_batch(cfg, spark=spark)
    _store(spark, cfg, rows[cut:], 1)
    second = run_batch(cfg, spark=spark)
    assert first.promoted and second.holdout is not None
    current = second.holdout["current"]
    # Trained before the new holdout's split: scored as the stream would use it, folded in.
    assert current is not None and current["version"] == first.version
    assert current["method"] == "folded_in" and current["users"] == second.holdout["als"]["users"]
    assert current["ndcg"] > second.holdout["popularity"]["ndcg"]
