"""The server's model-side answers on a real batch run: an anonymous session folded in against
the live version (POST /recommendations), category filters, diversity and explanations, for
both model families."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis
from pyspark.sql import SparkSession

from streamrec.batch.job import run_batch
from streamrec.bench.server_process import ServerProcess
from streamrec.model.lists import rank_histories
from streamrec.model.store import fold_in_params, load_item_model
from streamrec.model.user_state import UserState, encode_state, merge
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import with_overrides
from streamrec.streaming.event_store import write_batch

pytestmark = pytest.mark.integration

T = 1_700_000_000_000


def call(url: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def taste_groups(spark: SparkSession, cfg: Config) -> None:
    """Users 0-19 play items a0-a9, users 20-39 play b0-b9."""
    rows = [
        (f"e{u}-{i}", f"u{u}", f"{'a' if u < 20 else 'b'}{i}", "play", T + u * 100 + i, 60.0)
        for u in range(40)
        for i in range(10)
        if (u + i) % 3 != 0
    ]
    write_batch(spark.createDataFrame(rows, E.spark_event_schema()), cfg.paths.event_store, 0)


@pytest.mark.parametrize("family", ["als", "ease"])
def test_sessions_filters_diversity_and_explanations(
    spark: SparkSession,
    isolated_cfg: Config,
    redis_client: redis.Redis,
    tmp_path: Path,
    family: str,
) -> None:
    taste_groups(spark, isolated_cfg)
    # Odd-numbered items are "odd", the others "even"; a0 is both.
    categories = tmp_path / "categories.jsonl"
    categories.write_text(
        "\n".join(
            json.dumps({"item_id": f"{g}{i}", "categories": ["odd" if i % 2 else "even"]})
            for g in "ab"
            for i in range(10)
        )
    )
    cfg = with_overrides(
        isolated_cfg,
        batch=dict(holdout_share=0.0, rank=4, tune_every=0, top_n=8, family=family, ease_l2=5.0),
        serve=dict(item_categories=str(categories)),
    )
    version = run_batch(cfg, spark=spark).version
    model = load_item_model(cfg.paths.model_store, version)
    index = model.index_of()
    prefix = cfg.redis.key_prefix
    # u3's state as the stream keeps it, from u3's own events
    events = pd.DataFrame(
        {
            E.EVENT_ID: [f"s{i}" for i in range(3)],
            E.ITEM_ID: ["a1", "a2", "a4"],
            E.EVENT_TYPE: ["play"] * 3,
            E.EVENT_TIME: [T + i for i in range(3)],
            E.VALUE: [60.0] * 3,
        }
    )
    state = merge(UserState(), events, 0, cfg.feedback)
    assert state is not None
    redis_client.hset(L.user_state_key(prefix, "u3"), "state", encode_state(state))
    keys_before = sorted(redis_client.scan_iter(match=f"{prefix}:*"))

    with ServerProcess(cfg) as server:
        url = f"{server.url}/recommendations"
        # An anonymous session: what the stream would give a user with this history.
        status, body = call(url, {"items": ["a1", "a2", "nobody"], "n": 4, "explain": True})
        assert status == 200, body
        assert (body["source"], body["model_version"], body["user_id"]) == (
            "session",
            version,
            None,
        )
        assert body["unknown_items"] == ["nobody"]
        history = state_of({"a1": 1.0, "a2": 1.0}, index)
        expected = rank_histories(model, fold_in_params(model), [history], 4)[0]
        assert expected is not None
        got = [item["item_id"] for item in body["items"]]
        assert got == [model.item_ids[p] for p in expected[0].tolist()]
        assert not {"a1", "a2"} & set(got)
        for item in body["items"]:
            # the shares name the session's items and add up to the score
            assert {s["item_id"] for s in item["because"]} <= {"a1", "a2"}
            assert item["model_score"] == pytest.approx(item["score"], rel=1e-3, abs=1e-4)
            assert sum(s["share"] for s in item["because"]) <= item["model_score"] + 1e-4

        # Events are weighed by the version's feedback transform; bad input names the field.
        status, body = call(url, {"items": [{"item_id": "b3", "event_type": "purchase"}]})
        assert status == 200 and body["source"] == "session"
        assert sum(i["item_id"].startswith("b") for i in body["items"]) >= 5
        status, body = call(url, {"items": [{"item_id": "b3", "event_type": "teleport"}]})
        assert status == 400 and "items.0.event_type" in body["error"]
        status, body = call(url, {"items": ["a1"], "n": 0})
        assert status == 400 and body["error"].startswith("n")
        status, body = call(url, {"n": 3})
        assert status == 400 and "items" in body["error"]
        # Nothing the model knows: the popular list.
        status, body = call(url, {"items": ["nobody"], "n": 3})
        assert (status, body["source"], body["unknown_items"]) == (200, "popular", ["nobody"])

        # Category filters, on a session and on a stored list.
        status, body = call(url, {"items": ["a1", "a2"], "category": ["odd"], "n": 5})
        assert status == 200 and len(body["items"]) == 5
        assert all(int(i["item_id"][1:]) % 2 == 1 for i in body["items"])
        status, body = call(f"{url}/u3?category=even&n=20")
        assert status == 200 and body["items"]
        assert all(int(i["item_id"][1:]) % 2 == 0 for i in body["items"])
        status, body = call(f"{url}/u3?n=20")
        stored = [i["item_id"] for i in body["items"]]

        # Diversity reorders the stored list's items; 0 keeps the list.
        status, body = call(f"{url}/u3?diversity=0&n=3")
        assert [i["item_id"] for i in body["items"]] == stored[:3]
        status, body = call(f"{url}/u3?diversity=1&n=3")
        mixed = [i["item_id"] for i in body["items"]]
        assert len(set(mixed)) == 3 and set(mixed) <= set(stored) and mixed[0] == stored[0]
        status, body = call(f"{url}/u3?diversity=2")
        assert status == 400 and "diversity" in body["error"]

        # Explanations of a known user come from the stream's state of them.
        status, body = call(f"{url}/u3?explain=true&n=3")
        assert status == 200
        known = [i for i in body["items"] if i["model_score"] is not None]
        assert known and all(
            {s["item_id"] for s in i["because"]} <= {"a1", "a2", "a4"} for i in known
        )
        status, body = call(f"{url}/u3?explain=maybe")
        assert status == 400 and "explain" in body["error"]

    # Nothing about a session is stored.
    assert sorted(redis_client.scan_iter(match=f"{prefix}:*")) == keys_before


def state_of(ratings: dict[str, float], index: dict[str, int]) -> Any:
    return UserState(weights=ratings).interactions(index)
