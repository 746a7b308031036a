"""`evaluate` on planted data: ALS finds the structure popularity cannot, metrics are sane."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import SparkSession

from streamrec.batch.evaluate import EvalOptions, evaluate, training_input, write_json
from streamrec.batch.interactions import RATING, to_interactions
from streamrec.batch.rating_files import read_ratings
from streamrec.model.feedback import event_weights
from streamrec.schemas import events as E
from streamrec.schemas.config import BatchConfig, FeedbackConfig

pytestmark = pytest.mark.integration


def _planted(tmp_path: Path) -> tuple[Path, Path]:
    """Three groups of users, each liking its own 10 items (plus a popular item everyone has);
    each user's held-out items are more items of their group."""
    rng = random.Random(0)
    train, test = [], []
    for u in range(90):
        group = u % 3
        own = [group * 10 + i for i in range(10)]
        rng.shuffle(own)
        for i in own[:6]:
            train.append(f"u{u},i{i},5,{1_700_000_000 + u}")
        train.append(f"u{u},i99,3,{1_700_000_000}")
        for i in own[6:9]:
            test.append(f"u{u},i{i},5,{1_700_000_100}")
        test.append(f"u{u},i{own[9]},2,{1_700_000_100}")  # not relevant (< 4)
    (tmp_path / "train.csv").write_text("\n".join(train) + "\n")
    (tmp_path / "test.csv").write_text("\n".join(test) + "\n")
    return tmp_path / "train.csv", tmp_path / "test.csv"


def test_als_beats_popularity_on_planted_groups(spark: SparkSession, tmp_path: Path) -> None:
    train, test = _planted(tmp_path)
    opts = EvalOptions(train=str(train), test=str(test), fmt="delimited", k=5, tune=False)
    cfg = BatchConfig(rank=4, reg_param=0.05, alpha=5.0, max_iter=10)
    report = evaluate(spark, opts, cfg, parallelism=2)
    als, pop = report.models
    assert (als.name, pop.name) == ("als-implicit", "popularity")
    assert als.ranking.users == pop.ranking.users == 90
    # 3 relevant held-out items among the 4 unseen items of the group: ALS finds them
    # (the fourth unseen group item, rated 2, is not relevant but ranks among them)
    assert als.ranking.recall > 0.9 and als.ranking.ndcg > 0.8
    assert pop.ranking.ndcg < als.ranking.ndcg - 0.3
    out = tmp_path / "eval.json"
    write_json(report, str(out))
    data = json.loads(out.read_text())
    assert [m["name"] for m in data["models"]] == ["als-implicit", "popularity"]
    assert data["catalogue"] == 31 and data["options"]["k"] == 5
    from streamrec.batch.plots import plot_models

    png = tmp_path / "eval.png"
    plot_models(report, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_explicit_mode_reports_rmse_and_tuning_uses_training_data_only(
    spark: SparkSession, tmp_path: Path
) -> None:
    train, test = _planted(tmp_path)
    opts = EvalOptions(
        train=str(train),
        test=str(test),
        fmt="delimited",
        k=5,
        mode="explicit",
        tune=True,
        validation_share=0.25,
    )
    space = BatchConfig(
        max_iter=5,
        tune_candidates=4,
        tune_ranks=(2, 4),
        tune_reg_params=(0.05, 0.1),
        tune_alphas=(1.0, 40.0),
    )
    report = evaluate(spark, opts, space, parallelism=2)
    als = report.models[0]
    assert als.name == "als-explicit" and als.rmse is not None and als.rmse >= 0
    # The batch job's search: the configured setting first, then the grid (explicit mode does
    # not search alpha), halved on RMSE until one is left.
    first_round = [t for t in report.tuning if t["round"] == 1]
    assert (first_round[0]["rank"], first_round[0]["reg_param"]) == (space.rank, space.reg_param)
    assert {t["alpha"] for t in report.tuning} == {space.alpha}
    assert len(first_round) == 4 and {t["max_iter"] for t in first_round} == {2}
    last = [t for t in report.tuning if t["round"] == 2]
    best = min(last, key=lambda t: t["rmse"])
    assert (als.params["rank"], als.params["reg_param"]) == (best["rank"], best["reg_param"])


def test_evaluate_tunes_as_production_does_unless_told() -> None:
    assert EvalOptions(train="a", test="b").tune is None  # follows batch.tune_every


def _low_rank_ratings(tmp_path: Path, noise_sd: float) -> tuple[Path, Path]:
    """r = 3 + x_u·y_i + noise at rank 2 for 60 users x 40 items, half of the pairs rated;
    five of each user's ratings held out."""
    import numpy as np

    rng = np.random.default_rng(5)
    users, items = rng.normal(0, 0.8, (60, 2)), rng.normal(0, 0.8, (40, 2))
    train, test = [], []
    for u in range(60):
        rated = rng.choice(40, size=20, replace=False)
        for n, i in enumerate(rated):
            r = 3.0 + users[u] @ items[i] + rng.normal(0, noise_sd)
            (test if n < 5 else train).append(f"u{u},i{i},{r:.4f},{1_700_000_000 + n}")
    (tmp_path / "train.csv").write_text("\n".join(train) + "\n")
    (tmp_path / "test.csv").write_text("\n".join(test) + "\n")
    return tmp_path / "train.csv", tmp_path / "test.csv"


def test_bayes_estimator_recovers_low_rank_ratings_and_their_noise(
    spark: SparkSession, tmp_path: Path
) -> None:
    from streamrec.batch.bayes import BayesParams

    noise_sd = 0.3
    train, test = _low_rank_ratings(tmp_path, noise_sd)
    bayes = BayesParams(rank=4, sweeps=40, burn_in=15, keep=5, seed=3)
    opts = EvalOptions(
        train=str(train),
        test=str(test),
        fmt="delimited",
        k=5,
        mode="explicit",
        estimator="bayes",
        bayes=bayes,
    )
    report = evaluate(spark, opts, BatchConfig(), parallelism=2)
    model, pop = report.models
    assert (model.name, pop.name) == ("bayes-explicit", "popularity")
    als_opts = EvalOptions(
        train=str(train), test=str(test), fmt="delimited", k=5, mode="explicit", tune=False
    )
    als_cfg = BatchConfig(rank=4, reg_param=0.1, max_iter=15)
    als = evaluate(spark, als_opts, als_cfg, parallelism=2).models[0]
    assert model.rmse is not None and als.rmse is not None
    # the test ratings' own spread is about 1; the noise floor is 0.3
    assert model.rmse < 0.45
    assert model.rmse <= als.rmse + 0.01
    # the sampled noise precision finds 1/σ² (about 11), within the fit's optimism
    assert 8 < model.params["alpha_mean"] < 20
    assert model.ranking.users > 0 and 0 <= model.ranking.ndcg <= 1


def test_bayes_estimator_options_are_checked() -> None:
    with pytest.raises(ValueError, match="--mode explicit"):
        EvalOptions(train="a", test="b", estimator="bayes")
    with pytest.raises(ValueError, match="nothing to tune"):
        EvalOptions(train="a", test="b", mode="explicit", estimator="bayes", tune=True)
    with pytest.raises(ValueError, match="unknown estimator"):
        EvalOptions(train="a", test="b", estimator="svd")


@pytest.mark.parametrize(
    ("fmt", "event_type", "value_scale"),
    [("movielens", None, "log"), ("delimited", None, "log"), ("delimited", "view", "binary")],
)
def test_evaluate_trains_on_the_batch_jobs_own_confidences(
    spark: SparkSession, tmp_path: Path, fmt: str, event_type: str | None, value_scale: str
) -> None:
    # A file's rows are events of one type: evaluate's training input is exactly what the batch
    # job's transform makes of those events, and what the stream's per-user state makes of them.
    sep = "\t" if fmt == "movielens" else ","
    rows = [
        ("u1", "a", 5.0, 1_700_000_000),
        ("u1", "b", 2.0, 1_700_000_050),
        ("u1", "a", 3.0, 1_700_000_100),
        ("u2", "b", 0.0, 1_700_000_000),
        ("u2", "c", 600.0, 1_700_000_200),
    ]
    path = tmp_path / "rows.txt"
    path.write_text("".join(f"{u}{sep}{i}{sep}{v:g}{sep}{t}\n" for u, i, v, t in rows))
    opts = EvalOptions(train=str(path), test=str(path), fmt=fmt, event_type=event_type)
    feedback = FeedbackConfig(value_scale=value_scale, half_life_days=1.0)
    raw = read_ratings(spark, str(path), fmt, sep)
    got = {
        (r[E.USER_ID], r[E.ITEM_ID]): r[RATING]
        for r in training_input(raw, opts, feedback, implicit=True).collect()
    }
    kind = event_type or {"movielens": "rating", "delimited": "play"}[fmt]
    assert opts.events_of == kind
    events = [
        {
            E.EVENT_ID: f"e{n}",
            E.USER_ID: u,
            E.ITEM_ID: i,
            E.EVENT_TYPE: kind,
            E.EVENT_TIME: t * 1000,
            E.VALUE: v,
        }
        for n, (u, i, v, t) in enumerate(rows)
    ]
    frame = spark.createDataFrame(
        [tuple(e[f] for f in E.event_contract().field_names) for e in events],
        E.spark_event_schema(),
    )
    newest = max(t for *_, t in rows) * 1000
    batch = {
        (r[E.USER_ID], r[E.ITEM_ID]): r[RATING]
        for r in to_interactions(frame, feedback, newest).collect()
    }
    assert got.keys() == batch.keys() and got == pytest.approx(batch)
    pdf = pd.DataFrame(events)
    pdf["w"] = event_weights(feedback, pdf[E.EVENT_TYPE], pdf[E.VALUE], pdf[E.EVENT_TIME], newest)
    stream = pdf.groupby([E.USER_ID, E.ITEM_ID])["w"].sum()
    assert got == pytest.approx({key: w for key, w in stream.items() if w != 0})


def test_an_event_type_is_refused_in_explicit_mode_and_when_unknown() -> None:
    with pytest.raises(ValueError, match="explicit mode fits the ratings"):
        EvalOptions(train="a", test="b", mode="explicit", event_type="play")
    with pytest.raises(ValueError, match="unknown event type 'listen'"):
        EvalOptions(train="a", test="b", event_type="listen")


def test_the_implicit_peer_is_tuned_by_the_same_search_on_the_same_split(
    spark: SparkSession, tmp_path: Path
) -> None:
    from streamrec.bench.peers import implicit_peer

    train, test = _planted(tmp_path)
    opts = EvalOptions(train=str(train), test=str(test), fmt="delimited", k=5, tune=True)
    space = BatchConfig(
        rank=2,
        max_iter=4,
        tune_candidates=3,
        tune_ranks=(2, 4),
        tune_reg_params=(0.05,),
        tune_alphas=(1.0, 10.0),
    )
    ours = evaluate(spark, opts, space, parallelism=2)
    peer, trials = implicit_peer(spark, opts, space, FeedbackConfig())
    assert peer.name == "implicit-lib" and peer.ranking.users == ours.models[0].ranking.users
    # The same candidates, in the same order, in the first round of both searches.
    first = [(t["rank"], t["reg_param"], t["alpha"]) for t in trials if t["round"] == 1]
    assert first == [
        (t["rank"], t["reg_param"], t["alpha"]) for t in ours.tuning if t.get("round") == 1
    ]
    assert (peer.params["rank"], peer.params["alpha"]) in {(r, a) for r, _, a in first}
    assert peer.ranking.ndcg > ours.models[1].ranking.ndcg  # above popularity here
