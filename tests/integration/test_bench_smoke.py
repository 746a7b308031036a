"""The benchmarks run end to end on tiny data (structure only: no timing is asserted)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import redis
from pyspark.sql import SparkSession

from streamrec.batch.bayes import BayesParams
from streamrec.bench.quality import QualityParams, run_quality, table, write
from streamrec.bench.replay import STRATEGIES, ReplayParams, run_replay
from streamrec.bench.replay import table as replay_table
from streamrec.bench.scoring import run_scoring
from streamrec.bench.tuning import run_tuning_bench
from streamrec.bench.tuning import table as tuning_table
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import with_overrides

pytestmark = pytest.mark.integration


def test_scoring_bench_scores_every_user(spark: SparkSession) -> None:
    result = run_scoring(spark, users=300, items=120, rank=8, seen=5, k=10)
    assert result["users_scored"] == 300
    assert result["ratio_vs_implicit"] > 0 and result["streamrec_users_per_s"] > 0


def _planted_ratings(tmp_path: Path) -> tuple[Path, Path]:
    """A MovieLens-shaped folder (ua.base, ua.test, u.data) and a Steam-shaped one (plays.tsv
    with a header): three taste groups of 20 items each, so every model has something to find."""
    rng = random.Random(1)
    base, test, plays = [], [], ["user\titem\thours"]
    for u in range(1, 61):
        group = u % 3
        items = [group * 20 + i for i in range(1, 21)]
        rng.shuffle(items)
        base += [
            f"{u}\t{i}\t{rng.choice([4, 5])}\t{881250949 + n}" for n, i in enumerate(items[:12])
        ]
        test += [f"{u}\t{i}\t{rng.choice([3, 4, 5])}\t881260999" for i in items[12:16]]
        plays += [f"{u}\tgame {i}\t{rng.lognormvariate(1.5, 1.5):.1f}" for i in items[:14]]
    ml, steam = tmp_path / "ml", tmp_path / "steam"
    ml.mkdir()
    steam.mkdir()
    (ml / "ua.base").write_text("\n".join(base) + "\n")
    (ml / "ua.test").write_text("\n".join(test) + "\n")
    (ml / "u.data").write_text("\n".join(base + test) + "\n")
    (steam / "plays.tsv").write_text("\n".join(plays) + "\n")
    return ml, steam


def test_quality_bench_compares_tuned_peers_on_every_dataset_shape(
    spark: SparkSession, tmp_path: Path
) -> None:
    ml, steam = _planted_ratings(tmp_path)
    cfg = with_overrides(
        Config(),
        batch=dict(
            rank=4,
            max_iter=4,
            tune_candidates=2,
            tune_ranks=(4,),
            tune_ease_l2s=(20.0, 200.0),
        ),
    )
    params = QualityParams(
        rank=4,
        max_iter=5,
        explicit_rank=4,
        explicit_iter=5,
        seeds=(1, 2),
        bayes=BayesParams(rank=4, sweeps=12, burn_in=4, keep=4),
        clicks_users=150,
        clicks_items=60,
        clicks_events=6000,
    )
    result = run_quality(
        spark, cfg, str(ml), params, steam_dir=str(steam), work_dir=str(tmp_path / "work")
    )
    tuned = {row["dataset"]: row for row in result["tuned"]}
    assert list(tuned) == [
        "ml-100k ua",
        "ml-100k 75/25",
        "steam hours 80/20",
        "synthetic clicks 80/20",
    ]
    for row in tuned.values():
        # streamrec and the peer were each chosen by a search, scored on the same test users
        assert row["tuning"] and row["peer_tuning"]
        assert row["streamrec"]["users"] == row["implicit_tuned"]["users"]
        assert row["streamrec"]["users"] == row["popularity"]["users"] > 0
        assert row["implicit_tuned"]["params"]["rank"] == 4
        assert isinstance(row["above_popularity"], bool)
    assert tuned["ml-100k 75/25"]["target"] == 0.42
    assert isinstance(tuned["ml-100k ua"]["met"], bool)
    assert tuned["synthetic clicks 80/20"]["met"] is None
    # the 75/25 split holds every u.data row once, a quarter of each user's in test
    train = (tmp_path / "work" / "ml-100k-75-25" / "train.tsv").read_text().splitlines()
    test = (tmp_path / "work" / "ml-100k-75-25" / "test.tsv").read_text().splitlines()
    assert len(train) == 60 * 12 and len(test) == 60 * 4
    one = result["one_setting"]
    assert one["streamrec_als"]["users"] == one["implicit_library_als"]["users"] > 0
    assert len(one["streamrec_als"]["per_seed"]) == 2
    assert one["streamrec_als"]["precision"] == pytest.approx(
        sum(run["precision"] for run in one["streamrec_als"]["per_seed"]) / 2
    )
    assert result["explicit"]["rmse"] is not None
    assert result["explicit_plain_als"]["rmse"] is not None
    bayes = result["explicit_bayes"]
    assert bayes["rmse"] is not None and bayes["params"]["sweeps"] == 12
    assert 0 < bayes["rmse"] < 2 and bayes["users"] > 0
    assert result["speed"]["fit_ratio_vs_implicit"] > 0
    printed = table(result)
    assert "ml-100k 75/25" in printed and "synthetic clicks" in printed
    write(result, str(tmp_path / "quality.json"))
    saved = json.loads((tmp_path / "quality.json").read_text())
    assert saved["params"]["bayes"]["sweeps"] == 12
    assert saved["explicit_bayes"]["rmse"] == pytest.approx(bayes["rmse"])


def test_quality_bench_needs_no_dataset(spark: SparkSession, tmp_path: Path) -> None:
    cfg = with_overrides(
        Config(), batch=dict(rank=4, max_iter=4, tune_candidates=2, tune_ranks=(4,))
    )
    params = QualityParams(clicks_users=150, clicks_items=60, clicks_events=6000)
    result = run_quality(spark, cfg, None, params)
    assert [row["dataset"] for row in result["tuned"]] == ["synthetic clicks 80/20"]
    assert "one_setting" not in result and "explicit" not in result
    assert "synthetic clicks" in table(result)


def test_freshness_bench_times_probes_end_to_end(stack_cfg: Config) -> None:
    from streamrec.bench.freshness import FreshnessParams, run_freshness
    from streamrec.bench.freshness import table as freshness_table

    params = FreshnessParams(
        rates=(200.0,),
        duration_s=4.0,
        users=200,
        items=100,
        warmup_events=2000,
        probe_every_s=0.05,
        settle_s=2.0,
    )
    result = run_freshness(stack_cfg, params)
    (rate,) = result["rates"]
    assert result["settle"]["events"] > 0 and result["settle"]["rate_asked"] == 200.0
    assert rate["probes_sent"] > 10 and rate["probes_seen"] == rate["probes_sent"]
    assert 0 < rate["p50_ms"] <= rate["p95_ms"] <= rate["p99_ms"]
    assert rate["events"] > 0 and rate["rate_achieved"] > 0
    assert "kept up" in freshness_table(result) and "unmeasured" in freshness_table(result)


def test_lookup_bench_measures_client_http_and_redis_benchmark(stack_cfg: Config) -> None:
    from streamrec.bench.lookup import LookupParams, run_lookup
    from streamrec.bench.lookup import table as lookup_table

    params = LookupParams(
        users=300,
        duration_s=0.4,
        http_rate=100.0,
        ramp_rates=(200.0,),
        http_connections=2,
        redis_benchmark_requests=2000,
    )
    result = run_lookup(stack_cfg, params)
    py = result["python_client"]
    assert py["lookup"]["calls"] > 10 and py["plain_get"]["calls"] > 10
    assert set(py["lookup"]["sources"]) == {"batch", "segment", "popular"}
    assert py["lookup_vs_get_throughput"] > 0 and py["lookup_many"]["users_per_s"] > 0
    assert 0 < py["lookup"]["p50_ms"] <= py["lookup"]["p99_ms"]
    web = result["http"]
    assert web["at_rate"]["requests"] == 40 and web["at_rate"]["errors"] == 0
    assert len(web["ramp"]) == 1 and web["ramp"][0]["requests"] == 80
    similar = web["similar_at_rate"]  # GET /similar at the same rate, on the new server
    assert similar["requests"] == 40 and similar["errors"] == 0
    baseline = result["http_threaded"]  # the same load on the threaded server, same run
    assert baseline["at_rate"]["requests"] == 40 and baseline["at_rate"]["errors"] == 0
    assert len(baseline["ramp"]) == 1 and baseline["ramp"][0]["requests"] == 80
    # Who used the cores meanwhile: the generator (its own process), the servers, Redis.
    for step in (web["at_rate"], *web["ramp"], baseline["at_rate"]):
        assert set(step["cores"]) == {"generator", "server", "redis", "machine", "others"}
        assert min(step["cores"].values()) >= 0  # 10 ms ticks: a short step may show 0
    assert web["server_processes"] > baseline["server_processes"] == 1
    assert web["every_rate_held_up_to"] <= web["highest_rate_held"]
    assert "threaded" in lookup_table(result)
    assert result["redis_benchmark"]["get_c1"]["per_s"] > 0
    assert "redis-benchmark GET" in lookup_table(result)


def test_session_bench_answers_sessions_and_options_on_a_real_server(
    spark: SparkSession, stack_cfg: Config, redis_client: redis.Redis
) -> None:
    from streamrec.bench.session import SessionParams, run_session
    from streamrec.bench.session import table as session_table

    params = SessionParams(
        families=("als", "ease"),
        rate=40.0,
        duration_s=0.5,
        connections=2,
        sessions=50,
        synthetic_users=150,
        synthetic_items=120,
        synthetic_events=4000,
    )
    result = run_session(spark, stack_cfg, None, params)
    assert result["data"] == "synthetic" and result["events"] == 4000
    runs = ("get_list", "post_session", "post_session_explain_diversity")
    for family in ("als", "ease"):
        measured = result["families"][family]
        assert measured["items"] > 0 and measured["model_version"]
        for name in (*runs, "get_list_explain_diversity"):
            run = measured[name]
            assert run["requests"] == 20 and run["errors"] == 0, (family, name, run)
            assert 0 < run["p50_ms"] <= run["p99_ms"] and run["p99_vs_get_list"] > 0
    assert "post_session" in session_table(result)
    # The bench clears its namespace when done.
    prefix = f"{stack_cfg.redis.key_prefix}-bench-session"
    assert not list(redis_client.scan_iter(match=f"{prefix}:*"))


def test_costs_bench_measures_every_unit_and_extrapolates(
    spark: SparkSession, stack_cfg: Config, redis_client: redis.Redis
) -> None:
    from streamrec.bench.costs import CostParams, Target, run_costs
    from streamrec.bench.costs import table as costs_table

    params = CostParams(
        als_users=200,
        als_items=60,
        als_ratings_per_user=8,
        als_iterations=(1, 2),
        catalogues=(100, 2000),
        stream_users=20,
        state_items=10,
        state_ids=8,
        publish_users=300,
    )
    result = run_costs(spark, stack_cfg, params, Target(users=1000, items=4000))
    assert result["als"]["ratings"] > 0 and result["als"]["core_s_per_rating_iteration"] > 0
    stream = result["stream"]
    assert stream["users"] == 20 and set(stream["foldin_topn_s_per_user"]) == {"100", "2000"}
    assert stream["redis_write_s_per_user"] > 0 and result["scoring"]["items"] == 2000
    assert result["publish"]["users"] == 300 and result["publish"]["spark_s_per_user"] > 0
    memory = result["memory"]
    assert memory["user_lists_sampled"] >= 300 and memory["user_list_bytes"] > 100
    assert memory["user_states_sampled"] == 20 and memory["user_state_bytes"] > 100
    x = result["extrapolated"]
    assert x["item_factors_mib"] == pytest.approx(4000 * stack_cfg.batch.rank * 4 / 1024**2)
    # Linear in the units: the large catalogue's fold-in cost, scaled to the target's items.
    measured = stream["foldin_topn_s_per_user"]["2000"] * 2 + stream["redis_write_s_per_user"]
    assert x["stream_core_s_per_event"] == pytest.approx(measured)
    assert "extrapolated to 1,000 users x 4,000 items" in costs_table(result)
    # Everything it wrote is gone.
    prefix = f"{stack_cfg.redis.key_prefix}-bench-costs"
    assert not list(redis_client.scan_iter(match=f"{prefix}:*", count=1000))


def test_tuning_bench_runs_the_batch_job_untuned_then_tuned(
    spark: SparkSession, isolated_cfg: Config, tmp_path: Path
) -> None:
    rng = random.Random(2)
    lines, t = [], 881_250_000
    for _ in range(8):
        for u in range(1, 61):
            group = u % 3
            item = group * 20 + rng.randrange(1, 21)
            t += 1
            lines.append(f"{u}\t{item}\t{rng.choice([3, 4, 5])}\t{t}")
    data = tmp_path / "u.data"
    data.write_text("\n".join(lines) + "\n")
    cfg = with_overrides(
        isolated_cfg,
        batch=dict(
            tune_every=1,
            tune_candidates=3,
            tune_ranks=(2, 4),
            tune_reg_params=(0.1,),
            tune_alphas=(1.0, 10.0),
            holdout_share=0.2,
        ),
    )
    result = run_tuning_bench(spark, cfg, str(data))
    assert result["events"] == len(lines) and result["event_type"] == "rating"
    assert result["untuned"]["trials"] == 0 and result["tuned"]["trials"] >= 3
    assert result["untuned"]["params"]["rank"] == cfg.batch.rank
    assert result["tuned"]["params"]["rank"] in (2, 4, cfg.batch.rank)  # the grid or the start
    assert result["time_ratio_tuned_vs_untuned"] > 0
    assert "tuned retrain costs" in tuning_table(result)
    client = redis.Redis(host=cfg.redis.host, port=cfg.redis.port)
    assert not list(client.scan_iter(match="bench-tuning-*"))  # its own prefix, cleaned up
    client.close()


def _replay_ratings(tmp_path: Path) -> tuple[Path, int]:
    """A u.data-shaped file: 40 users in 4 taste groups rate in rounds, then 10 newcomers."""
    rng = random.Random(3)
    lines, t = [], 881_250_000
    for _ in range(10):
        for u in range(1, 41):
            group = u % 4
            t += 1
            lines.append(f"{u}\t{group * 15 + rng.randrange(15)}\t{rng.choice([3, 4, 5])}\t{t}")
    for u in range(41, 51):  # users who arrive in the replayed half
        for _ in range(4):
            t += 1
            lines.append(f"{u}\t{(u % 4) * 15 + rng.randrange(15)}\t5\t{t}")
    data = tmp_path / "u.data"
    data.write_text("\n".join(lines) + "\n")
    return data, len(lines)


def test_replay_bench_checks_each_relevant_event_against_every_strategy(
    spark: SparkSession, isolated_cfg: Config, tmp_path: Path
) -> None:
    data, n_lines = _replay_ratings(tmp_path)
    params = ReplayParams(k=5, trending_window=100, retrain_every=100)
    result = run_replay(spark, isolated_cfg, str(data), params)
    assert result["trained_on"] == n_lines // 2
    assert result["replayed"] == n_lines - n_lines // 2
    groups = result["results"]
    strategies = STRATEGIES
    for strategy in strategies:
        total = groups["all"][strategy]["events"]
        assert total > 0 and total == (
            groups["known"][strategy]["events"] + groups["new"][strategy]["events"]
        )
        assert groups["new"][strategy]["events"] > 0
        assert 0 <= groups["all"][strategy]["ndcg"] <= groups["all"][strategy]["hr"] <= 1
    # Every strategy is checked on the same events.
    assert len({groups["all"][s]["events"] for s in strategies}) == 1
    assert result["retrain_s"] > 0  # the replayed half of 220 events: retrained twice
    assert "fold_in" in replay_table(result)


def test_live_replay_goes_through_kafka_the_stream_and_redis_and_agrees_offline(
    stack_cfg: Config, tmp_path: Path
) -> None:
    from streamrec.bench.replay_live import run_live_replay
    from streamrec.bench.replay_live import table as live_table

    data, n_lines = _replay_ratings(tmp_path)
    # EASE ranks a user the same from the same history wherever it runs: lists must be equal.
    cfg = with_overrides(stack_cfg, batch=dict(family="ease", ease_l2=10.0, holdout_share=0.0))
    result = run_live_replay(cfg, str(data), ReplayParams(k=5), slice_events=120)
    assert result["trained_on"] == n_lines // 2 and result["replayed"] == 120
    assert result["params"]["family"] == "ease"
    assert result["live"]["events"] == result["offline"]["events"] == result["lists_compared"] > 0
    assert result["lists_identical"] == result["lists_compared"]
    assert result["live"]["hr"] == result["offline"]["hr"]
    assert "identical top-5 lists" in live_table(result)


def test_faults_bench_short_form_loses_doubles_and_halts_nothing(stack_cfg: Config) -> None:
    from streamrec.bench.fault_counts import SHORT
    from streamrec.bench.faults import run_faults
    from streamrec.bench.faults import table as faults_table

    result = run_faults(stack_cfg, SHORT)
    outcomes = {o["fault"]: o for o in result["outcomes"]}
    assert set(outcomes) == {
        "poison",
        "redis_restart",
        "redis_freeze",
        "broker_stop",
        "stream_kill",
        "batch_switch",
    }
    for name, o in outcomes.items():
        assert (o["lost"], o["doubled"], o["halted"]) == (0, 0, False), (name, o)
        assert o["state_doubled"] == 0, (name, o)
    poison = outcomes["poison"]
    assert poison["malformed"] == SHORT.malformed and poison["detail"]["kinds"] >= 30
    assert (poison["dead_lettered"], poison["bad_lost"], poison["bad_doubled"]) == (
        SHORT.malformed,
        0,
        0,
    )
    # Every user's state holds their whole history in the end: a freeze loses nothing, and
    # what a restart without persistence lost comes back from the event store.
    for name in ("redis_restart", "redis_freeze", "broker_stop", "stream_kill", "batch_switch"):
        assert outcomes[name]["detail"]["state_short"] == 0, outcomes[name]
    assert len(outcomes["stream_kill"]["detail"]["killed_at_s"]) == SHORT.stream_kills
    assert outcomes["redis_restart"]["states_rebuilt"] > 0
    # The second batch run published, and every user whose list was fresher under the old version
    # than the new version's batch list saw a list as fresh under the new one (how soon is
    # the bench's figure, not a timed assert).
    switch = outcomes["batch_switch"]["detail"]
    assert switch["batch_exit_code"] == 0
    assert switch["switched_to"] and switch["switched_to"] != switch["switched_from"]
    assert switch["fresher_before_switch"] > 0 and switch["never_visible"] == 0
    assert "redis_restart" in faults_table(result)
