"""`streamrec bench quality [--data ML100K_DIR] [--steam STEAM_DIR] --json OUT`.

- tuned comparison, one per dataset of a different shape: streamrec with its defaults (tuned on
  each user's newest training rows, the family chosen there) beside the `implicit` library's
  ALS tuned by the same search on the same validation split (bench/peers.py) and popularity,
  scored on a test file nothing was chosen on. Datasets: MovieLens 100K ``ua`` (ratings, rated
  >= 4 relevant), ``u.data`` split 75/25 per user (every test item relevant), Steam play hours
  split 80/20 per user (heavy-tailed plays), and sparse clicks from the synthetic generator
  (always run, no download needed). Each has the issue's target where there is one, and
  popularity as the floor;
- with MovieLens: explicit-mode RMSE of ALS on baseline-bias residuals (the seed notebook: 0.959
  at rank 10), of plain explicit ALS and of Bayesian ALS (batch/bayes.py, Gibbs sampled);
- with MovieLens: an implementation check and speed at one setting: streamrec's Spark ALS and
  the `implicit` library's at the same numbers on ``ua`` (means over seeds), fit and top-k time
  as ratios in the same run, and Spark's own ``recommendForAllUsers``. This compares code, not
  recommenders: the quality comparison is the tuned one.

Note on conventions: Spark scales regParam by each user's interaction count (ALS-WR) and uses
confidence 1 + alpha*r; `implicit` uses a plain regularization and confidence alpha*r, so "the
same parameters" are the same numbers, not the same objective.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from streamrec.batch.bayes import BayesParams
from streamrec.batch.evaluate import EvalOptions, evaluate
from streamrec.bench.peers import implicit_peer
from streamrec.bench.quality_checks import movielens_checks
from streamrec.bench.splits import per_user_split, split_file
from streamrec.errors import InputError
from streamrec.producer.synthetic import SyntheticWorld
from streamrec.schemas import events as E
from streamrec.schemas.config import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QualityParams:
    # The implementation check at one setting (rank, reg_param, alpha, max_iter).
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
    # either way, so the implementation check is made on the mean over several seeds.
    seeds: tuple[int, ...] = (42, 43, 44)
    # The per-user splits of u.data and the Steam plays, and of the synthetic clicks.
    split_seed: int = 42
    # The synthetic sparse-click world: clicks only, a few per user over a large catalogue.
    clicks_users: int = 3000
    clicks_items: int = 1500
    clicks_events: int = 120_000


@dataclass(frozen=True)
class QualityDataset:
    """One dataset of the tuned comparison: its files, what counts as relevant, the metric the
    target is on, and the target (None: popularity is the only bar)."""

    name: str
    shape: str
    train: Path
    test: Path
    fmt: str
    relevant_min: float
    metric: str
    target: float | None
    event_type: str | None = None


def synthetic_clicks(params: QualityParams, out_dir: Path) -> tuple[Path, Path]:
    """The click events of a seeded synthetic world (producer/synthetic.py: planted segments,
    Zipf popularity, repeats), as user, item, 1, time-ms rows split per user, train and test."""
    world = SyntheticWorld(
        users=params.clicks_users, items=params.clicks_items, seed=params.split_seed
    )
    rows = [
        (e[E.USER_ID], e[E.ITEM_ID], "1", str(e[E.EVENT_TIME]))
        for e in world.events(params.clicks_events)
        if e[E.EVENT_TYPE] == "click"
    ]
    train, test = per_user_split(rows, 0.8, params.split_seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / "train.tsv", out_dir / "test.tsv"
    for path, part in zip(paths, (train, test), strict=True):
        path.write_text("".join("\t".join(row) + "\n" for row in part), encoding="utf-8")
    return paths


def quality_datasets(
    ml_dir: Path | None, steam_dir: Path | None, work: Path, params: QualityParams
) -> list[QualityDataset]:
    """The tuned comparison's datasets that are at hand, their splits written under ``work``."""
    datasets = []
    if ml_dir is not None:
        for name in ("ua.base", "ua.test", "u.data"):
            if not (ml_dir / name).exists():
                raise InputError(f"{ml_dir} must hold MovieLens 100K's {name}")
        datasets.append(
            QualityDataset(
                "ml-100k ua",
                "ratings",
                ml_dir / "ua.base",
                ml_dir / "ua.test",
                "movielens",
                4.0,
                "precision",
                0.18,
            )
        )
        train, test = split_file(ml_dir / "u.data", work / "ml-100k-75-25", 0.75, params.split_seed)
        datasets.append(
            QualityDataset(
                "ml-100k 75/25", "ratings", train, test, "movielens", 0.0, "precision", 0.42
            )
        )
    if steam_dir is not None:
        plays = steam_dir / "plays.tsv"
        if not plays.exists():
            raise InputError(f"{steam_dir} must hold the Steam plays.tsv (user, item, hours)")
        train, test = split_file(plays, work / "steam-80-20", 0.8, params.split_seed, header=True)
        datasets.append(
            QualityDataset(
                "steam hours 80/20", "play hours", train, test, "delimited", 0.0, "ndcg", 0.22
            )
        )
    train, test = synthetic_clicks(params, work / "synthetic-clicks")
    datasets.append(
        QualityDataset(
            "synthetic clicks 80/20",
            "sparse clicks",
            train,
            test,
            "delimited",
            0.0,
            "ndcg",
            None,
            event_type="click",
        )
    )
    return datasets


def compare_tuned(
    spark: SparkSession, cfg: Config, dataset: QualityDataset, k: int
) -> dict[str, Any]:
    """streamrec with ``cfg``'s defaults (tuned as the batch job tunes), the `implicit` library
    tuned by the same search on the same validation split, and popularity, on one dataset."""
    opts = EvalOptions(
        train=str(dataset.train),
        test=str(dataset.test),
        fmt=dataset.fmt,
        sep="\t",
        relevant_min=dataset.relevant_min,
        k=k,
        event_type=dataset.event_type,
    )
    log.info("bench quality: %s, streamrec with its defaults", dataset.name)
    t = time.monotonic()
    report = evaluate(spark, opts, cfg.batch, cfg.spark.shuffle_partitions, cfg.feedback)
    ours_s = time.monotonic() - t
    log.info("bench quality: %s, the implicit library tuned the same way", dataset.name)
    t = time.monotonic()
    peer, peer_trials = implicit_peer(spark, opts, cfg.batch, cfg.feedback)
    peer_s = time.monotonic() - t
    ours, popularity = report.models[0], report.models[1]

    def scored(model: Any, seconds: float | None) -> dict[str, Any]:
        timing = {} if seconds is None else {"tune_and_score_s": round(seconds, 1)}
        return {"params": model.params, **model.ranking.as_dict(), **timing}

    value = {
        name: float(getattr(model.ranking, dataset.metric))
        for name, model in (("streamrec", ours), ("implicit", peer), ("popularity", popularity))
    }
    return {
        "dataset": dataset.name,
        "shape": dataset.shape,
        "train_rows": report.train_rows,
        "test_rows": report.test_rows,
        "catalogue": report.catalogue,
        "metric": dataset.metric,
        "target": dataset.target,
        "streamrec": scored(ours, ours_s),
        "implicit_tuned": scored(peer, peer_s),
        "popularity": scored(popularity, None),
        "met": None if dataset.target is None else value["streamrec"] >= dataset.target,
        "above_popularity": value["streamrec"] > value["popularity"],
        "vs_implicit": value["streamrec"] / value["implicit"] if value["implicit"] else None,
        "tuning": report.tuning,
        "peer_tuning": peer_trials,
    }


def run_quality(
    spark: SparkSession,
    cfg: Config,
    ml_dir: str | None,
    params: QualityParams,
    steam_dir: str | None = None,
    work_dir: str | None = None,
) -> dict[str, Any]:
    """The tuned comparison on every dataset at hand; with MovieLens also the explicit models
    and the implementation check at one setting. Splits are written under ``work_dir`` (default:
    a temporary folder, removed afterwards)."""
    ml = Path(ml_dir) if ml_dir else None
    with tempfile.TemporaryDirectory(prefix="streamrec-quality-") as scratch:
        work = Path(work_dir or scratch)
        datasets = quality_datasets(ml, Path(steam_dir) if steam_dir else None, work, params)
        result: dict[str, Any] = {
            "data": str(ml.resolve()) if ml else None,
            "steam": str(Path(steam_dir).resolve()) if steam_dir else None,
            "params": {**asdict(params), "seeds": list(params.seeds)},
            "tuned": [compare_tuned(spark, cfg, dataset, params.k) for dataset in datasets],
        }
    if ml is not None:
        result.update(movielens_checks(spark, ml, params))
    return result


def _family(params: dict[str, Any]) -> str:
    if params.get("family") == "ease":
        return f"EASE l2 {params['ease_l2']:g}{' binary' if params['ease_binary'] else ''}"
    if "regularization" in params:
        return f"rank {params['rank']} reg {params['regularization']:g} alpha {params['alpha']:g}"
    return f"ALS rank {params['rank']} reg {params['reg_param']:g} alpha {params['alpha']:g}"


def table(result: dict[str, Any]) -> str:
    k = result["params"]["k"]
    head = (
        f"{'dataset (tuned on validation)':<24} {'metric':>8} {'streamrec':>10} "
        f"{'implicit':>9} {'popular':>8} {'target':>7}  chosen"
    )
    lines = [head]
    for row in result["tuned"]:
        metric = row["metric"]
        name = ("P@" if metric == "precision" else "NDCG@") + str(k)
        target = "-" if row["target"] is None else f"{row['target']:.2f}"
        verdict = "" if row["met"] is None else (" met" if row["met"] else " NOT met")
        lines.append(
            f"{row['dataset']:<24} {name:>8} {row['streamrec'][metric]:10.4f} "
            f"{row['implicit_tuned'][metric]:9.4f} {row['popularity'][metric]:8.4f} "
            f"{target:>7}{verdict}  {_family(row['streamrec']['params'])}; implicit "
            f"{_family(row['implicit_tuned']['params'])}"
        )
    if "one_setting" not in result:
        return "\n".join(lines)
    one = result["one_setting"]
    lines.append(
        f"implementation check at one setting (mean of {len(result['params']['seeds'])} seeds, "
        f"ua): streamrec ALS P@{k} {one['streamrec_als']['precision']:.4f}, implicit "
        f"{one['implicit_library_als']['precision']:.4f} ({one['precision_vs_library']:.3f}x)"
    )
    ex, plain = result["explicit"], result["explicit_plain_als"]
    lines.append(
        f"explicit ALS + biases (rank {ex['params']['rank']}): RMSE {ex['rmse']:.4f}, "
        f"P@{k} {ex['precision']:.4f}; plain explicit ALS (rank "
        f"{plain['params']['rank']}): RMSE {plain['rmse']:.4f}"
    )
    by = result["explicit_bayes"]
    lines.append(
        f"explicit Bayesian ALS (rank {by['params']['rank']}, "
        f"{by['params']['sweeps']} sweeps): RMSE {by['rmse']:.4f}, "
        f"P@{k} {by['precision']:.4f}, fit {by['fit_s']:.0f} s"
    )
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
