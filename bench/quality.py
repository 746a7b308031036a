"""`streamrec bench quality --data DIR --json OUT`: MovieLens 100K ua.base/ua.test.

- explicit mode: RMSE of ALS on baseline-bias residuals (the seed notebook: 0.959 at rank 10),
  of plain explicit ALS, and of Bayesian ALS (batch/bayes.py, Gibbs sampled);
- implicit mode: precision@10 / NDCG@10 of streamrec's implicit ALS against the `implicit`
  library's ALS with the same rank, regularization, alpha and iterations, and popularity, both
  on the confidences the batch job makes of the ratings as `rating` events;
- speed as ratios in the same run: ALS fit time vs `implicit`'s fit, and streamrec's top-k
  for all users (the publishing path) vs `implicit`'s batched BLAS top-k and Spark's own
  ``recommendForAllUsers``.

Note on conventions: Spark scales regParam by each user's interaction count (ALS-WR) and uses
confidence 1 + alpha*r; `implicit` uses a plain regularization and confidence alpha*r, so "the
same parameters" are the same numbers, not the same objective.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from streamrec.batch.bayes import BayesParams
from streamrec.batch.evaluate import make_split, score_als, score_bayes, score_popularity
from streamrec.batch.ids import ITEM_INDEX, USER_INDEX
from streamrec.batch.metrics import ranking_metrics
from streamrec.batch.rating_files import RATING, file_interactions, read_ratings
from streamrec.batch.scoring import FEATURES, SEEN, dense_item_factors, rank_users
from streamrec.batch.train import train_als
from streamrec.errors import InputError
from streamrec.schemas import events as E
from streamrec.schemas.config import BatchConfig, FeedbackConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QualityParams:
    rank: int = 32
    reg_param: float = 0.05
    alpha: float = 10.0
    max_iter: int = 15
    k: int = 10
    relevant_min: float = 4.0
    explicit_rank: int = 50
    explicit_reg: float = 0.15
    explicit_iter: int = 20
    # rank 30, 400 sweeps, 60 burn-in: about 3 min here
    bayes: BayesParams = field(default_factory=BayesParams)
    # Both ALS implementations start from random factors: one seed decides ties of a few hits
    # either way, so the comparison is made on the mean over several seeds.
    seeds: tuple[int, ...] = (42, 43, 44)


def implicit_library(split: Any, params: QualityParams, seed: int) -> dict[str, Any]:
    """Fit and score `implicit`'s ALS on exactly the training matrix streamrec uses."""
    import scipy.sparse as sp
    from implicit.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    rows = split.train.select(USER_INDEX, ITEM_INDEX, RATING).collect()
    n_users = split.users.count()
    matrix = sp.csr_matrix(
        ([float(r[RATING]) for r in rows],
         ([r[USER_INDEX] for r in rows], [r[ITEM_INDEX] for r in rows])),
        shape=(n_users, split.item_count), dtype=np.float32,
    )  # fmt: skip
    with threadpool_limits(1, "blas"):  # implicit's advice: its own threads, single-threaded BLAS
        model = AlternatingLeastSquares(
            factors=params.rank, regularization=params.reg_param, alpha=params.alpha,
            iterations=params.max_iter, random_state=seed, calculate_training_loss=False,
        )  # fmt: skip
        t = time.monotonic()
        model.fit(matrix, show_progress=False)
        fit_s = time.monotonic() - t
        users = np.arange(n_users)
        t = time.monotonic()
        ids, _ = model.recommend(users, matrix[users], N=params.k, filter_already_liked_items=True)
        topk_s = time.monotonic() - t
    item_of = {r[ITEM_INDEX]: r[E.ITEM_ID] for r in split.items.collect()}
    user_of = {r[USER_INDEX]: r[E.USER_ID] for r in split.users.collect()}
    lists = {user_of[u]: [item_of[int(i)] for i in ids[u] if i >= 0] for u in range(n_users)}
    evaluated = sorted(split.relevant)
    ranking = ranking_metrics([lists.get(u, []) for u in evaluated],
                              [split.relevant[u] for u in evaluated], params.k,
                              split.item_count)  # fmt: skip
    return {"ranking": ranking.as_dict(), "fit_s": fit_s, "topk_all_users_s": topk_s}


def _time_scoring(spark: SparkSession, split: Any, cfg: BatchConfig, k: int) -> dict[str, float]:
    """Top-k for every user: streamrec's publishing path vs Spark's recommendForAllUsers."""
    model = train_als(split.train, cfg, 2)
    factors = dense_item_factors(model, split.item_count)
    item_ids = [str(i) for i in range(split.item_count)]
    seen = split.train.groupBy(E.USER_ID).agg(F.collect_list(ITEM_INDEX).alias(SEEN))
    users = (
        model.userFactors.join(split.users, model.userFactors.id == split.users[USER_INDEX])
        .select(E.USER_ID, F.col("features").alias(FEATURES)).join(seen, E.USER_ID).cache()
    )  # fmt: skip
    users.count()
    t = time.monotonic()
    n = rank_users(users, item_ids, factors, k).count()
    ours_s = time.monotonic() - t
    t = time.monotonic()
    model.recommendForAllUsers(k).count()
    spark_s = time.monotonic() - t
    users.unpersist()
    return {"users": float(n), "streamrec_topk_s": ours_s, "spark_recommend_for_all_s": spark_s}


def run_quality(spark: SparkSession, data_dir: str, params: QualityParams) -> dict[str, Any]:
    base, test = Path(data_dir) / "ua.base", Path(data_dir) / "ua.test"
    if not base.exists() or not test.exists():
        raise InputError(f"{data_dir} must hold MovieLens 100K's ua.base and ua.test")
    # Implicit mode trains on what the batch job would make of the ratings as events; the
    # explicit models fit the ratings themselves.
    base_rows, test_rows = read_ratings(spark, str(base)), read_ratings(spark, str(test))
    split = make_split(
        file_interactions(base_rows, "rating", FeedbackConfig()), test_rows, params.relevant_min
    )
    explicit_split = make_split(base_rows, test_rows, params.relevant_min)
    implicit_cfg = BatchConfig(rank=params.rank, reg_param=params.reg_param, alpha=params.alpha,
                               max_iter=params.max_iter, implicit=True)  # fmt: skip
    explicit_cfg = replace(implicit_cfg, rank=params.explicit_rank, reg_param=params.explicit_reg,
                           max_iter=params.explicit_iter, implicit=False)  # fmt: skip
    ours, theirs = [], []
    for seed in params.seeds:
        log.info("bench quality: streamrec implicit ALS, seed %d", seed)
        ours.append(score_als(split, replace(implicit_cfg, seed=seed), params.k, 2))
        log.info("bench quality: implicit library ALS, seed %d", seed)
        theirs.append(implicit_library(split, params, seed))
    log.info("bench quality: popularity, explicit ALS, scoring speed")
    popularity = score_popularity(split, params.k)
    explicit = score_als(explicit_split, explicit_cfg, params.k, 2)
    plain_cfg = replace(explicit_cfg, rank=10, reg_param=0.1, max_iter=10)
    plain = score_als(explicit_split, plain_cfg, params.k, 2, biases=False)
    log.info("bench quality: Bayesian ALS, %d sweeps", params.bayes.sweeps)
    bayes = score_bayes(explicit_split, params.bayes, params.k, 2)
    speed = _time_scoring(spark, split, implicit_cfg, params.k)
    streamrec_als = _mean_over_seeds([{**o.ranking.as_dict(), "fit_s": o.train_s} for o in ours])
    library_als = _mean_over_seeds([{**t["ranking"], "fit_s": t["fit_s"]} for t in theirs])
    fit_s = min(o.train_s for o in ours)
    library_fit_s = min(t["fit_s"] for t in theirs)
    library_topk_s = min(t["topk_all_users_s"] for t in theirs)
    return {
        "data": str(Path(data_dir).resolve()),
        "params": {**asdict(params), "seeds": list(params.seeds)},
        "implicit": {
            "streamrec_als": streamrec_als,
            "implicit_library_als": library_als,
            "popularity": popularity.ranking.as_dict(),
        },
        "implicit_verdict": {
            "precision_vs_library": streamrec_als["precision"] / library_als["precision"],
            "ndcg_vs_library": streamrec_als["ndcg"] / library_als["ndcg"],
            "precision_vs_popularity": streamrec_als["precision"] / popularity.ranking.precision,
            "at_least_equal": streamrec_als["precision"] >= library_als["precision"]
            and streamrec_als["ndcg"] >= library_als["ndcg"],
        },
        "explicit": {
            "rmse": explicit.rmse,
            "params": explicit.params,
            **explicit.ranking.as_dict(),
        },
        "explicit_plain_als": {
            "rmse": plain.rmse,
            "params": plain.params,
            **plain.ranking.as_dict(),
        },
        "explicit_bayes": {
            "rmse": bayes.rmse,
            "params": bayes.params,
            "fit_s": bayes.train_s,
            **bayes.ranking.as_dict(),
        },
        "speed": {
            **speed,
            "streamrec_fit_s": fit_s,
            "implicit_fit_s": library_fit_s,
            "implicit_topk_all_users_s": library_topk_s,
            "fit_ratio_vs_implicit": fit_s / library_fit_s,
            "topk_ratio_vs_implicit": speed["streamrec_topk_s"] / library_topk_s,
            "spark_recommend_ratio_vs_implicit": speed["spark_recommend_for_all_s"]
            / library_topk_s,
        },
    }


def _mean_over_seeds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Every metric's mean over the seeds, and each seed's run as it was."""
    mean = {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}
    mean["users"] = runs[0]["users"]
    mean["k"] = runs[0]["k"]
    return {**mean, "per_seed": runs}


def table(result: dict[str, Any]) -> str:
    imp, k = result["implicit"], result["params"]["k"]
    lines = [f"{'implicit mode':<24} {'P@' + str(k):>8} {'NDCG@' + str(k):>8} {'fit s':>8}"]
    for name, m in imp.items():  # ALS rows: means over the seeds
        fit = f"{m['fit_s']:8.2f}" if "fit_s" in m else f"{'-':>8}"
        lines.append(f"{name:<24} {m['precision']:8.4f} {m['ndcg']:8.4f} {fit}")
    verdict = result["implicit_verdict"]
    lines.append(f"streamrec vs implicit (mean of {len(result['params']['seeds'])} seeds): "
                 f"P@{k} {verdict['precision_vs_library']:.3f}x, "
                 f"NDCG@{k} {verdict['ndcg_vs_library']:.3f}x")  # fmt: skip
    ex, plain = result["explicit"], result["explicit_plain_als"]
    lines.append(f"explicit ALS + biases (rank {ex['params']['rank']}): RMSE {ex['rmse']:.4f}, "
                 f"P@{k} {ex['precision']:.4f}; plain explicit ALS (rank "
                 f"{plain['params']['rank']}): RMSE {plain['rmse']:.4f}")  # fmt: skip
    by = result["explicit_bayes"]
    lines.append(f"explicit Bayesian ALS (rank {by['params']['rank']}, "
                 f"{by['params']['sweeps']} sweeps): RMSE {by['rmse']:.4f}, "
                 f"P@{k} {by['precision']:.4f}, fit {by['fit_s']:.0f} s")  # fmt: skip
    sp_ = result["speed"]
    lines.append(
        f"fit time vs implicit: {sp_['fit_ratio_vs_implicit']:.1f}x; top-{k} for all users vs "
        f"implicit: streamrec {sp_['topk_ratio_vs_implicit']:.1f}x, "
        f"Spark recommendForAllUsers {sp_['spark_recommend_ratio_vs_implicit']:.1f}x"
    )
    return "\n".join(lines)


def write(result: dict[str, Any], path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2))
