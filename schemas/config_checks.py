"""The config's value checks, one function per section: each gives (ok, message naming the key)
pairs; ``check_values`` raises ``ConfigError`` naming the file for the first that fails."""

from __future__ import annotations

from streamrec.errors import ConfigError
from streamrec.schemas.config import (
    FAMILIES,
    KAFKA_SASL_MECHANISMS,
    KAFKA_SECURITY_PROTOCOLS,
    VALUE_SCALES,
    Config,
)

Check = tuple[bool, str]


def _kafka(cfg: Config) -> list[Check]:
    return [
        (cfg.kafka.partitions >= 1, "kafka.partitions must be at least 1"),
        (cfg.kafka.replication_factor >= 1, "kafka.replication_factor must be at least 1"),
        (
            cfg.kafka.security_protocol in KAFKA_SECURITY_PROTOCOLS,
            f"kafka.security_protocol must be one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}",
        ),
        (
            cfg.kafka.sasl_mechanism in KAFKA_SASL_MECHANISMS,
            f"kafka.sasl_mechanism must be one of {', '.join(KAFKA_SASL_MECHANISMS)}",
        ),
        (
            not cfg.kafka.security_protocol.startswith("SASL")
            or bool(cfg.kafka.sasl_username and cfg.kafka.sasl_password),
            "kafka.security_protocol SASL_* needs kafka.sasl_username and KAFKA_SASL_PASSWORD",
        ),
        (1 <= cfg.kafka.controller_port <= 65535, "kafka.controller_port must be a TCP port"),
        (":" in cfg.kafka.bootstrap_servers, "kafka.bootstrap_servers must be host:port[,...]"),
        (
            cfg.kafka.events_topic != cfg.kafka.dead_letter_topic,
            "kafka.dead_letter_topic must differ from kafka.events_topic",
        ),
    ]


def _redis(cfg: Config) -> list[Check]:
    return [
        (1 <= cfg.redis.port <= 65535, "redis.port must be a TCP port (1..65535)"),
        (
            bool(cfg.redis.key_prefix) and not cfg.redis.key_prefix.endswith(":"),
            "redis.key_prefix must be non-empty and not end with ':'",
        ),
        (
            "{" not in cfg.redis.key_prefix and "}" not in cfg.redis.key_prefix,
            "redis.key_prefix must not contain '{' or '}': braces would move the Redis Cluster "
            "hash tag of every key (docs/redis-layout.md)",
        ),
        (
            not (cfg.redis.cluster and cfg.redis.db != 0),
            "redis.db must be 0 with redis.cluster: true (Redis Cluster has one database)",
        ),
        (
            not (cfg.redis.tls_cert_file or cfg.redis.tls_key_file)
            or bool(cfg.redis.tls and cfg.redis.tls_cert_file and cfg.redis.tls_key_file),
            "redis.tls_cert_file and redis.tls_key_file go together, with redis.tls: true",
        ),
        (not cfg.redis.tls_ca_file or cfg.redis.tls, "redis.tls_ca_file needs redis.tls: true"),
        (cfg.redis.socket_timeout_s > 0, "redis.socket_timeout_s must be > 0"),
        (cfg.redis.retry_window_s >= 0, "redis.retry_window_s must be >= 0"),
    ]


def _streaming(cfg: Config) -> list[Check]:
    return [
        (cfg.streaming.trigger_seconds >= 0, "streaming.trigger_seconds must be >= 0"),
        (
            cfg.streaming.archive_trigger_seconds >= 0,
            "streaming.archive_trigger_seconds must be >= 0",
        ),
        (cfg.streaming.list_partitions >= 0, "streaming.list_partitions must be >= 0"),
        (cfg.streaming.metrics_kept >= 1, "streaming.metrics_kept must be >= 1"),
        (
            cfg.streaming.max_offsets_per_trigger >= 1,
            "streaming.max_offsets_per_trigger must be >= 1",
        ),
        (
            cfg.streaming.starting_offsets in ("earliest", "latest"),
            "streaming.starting_offsets must be 'earliest' or 'latest'",
        ),
        (cfg.streaming.top_n >= 1, "streaming.top_n must be >= 1"),
        (cfg.streaming.state_max_items >= 1, "streaming.state_max_items must be >= 1"),
        (cfg.streaming.state_max_ids >= 0, "streaming.state_max_ids must be >= 0"),
        (cfg.streaming.max_event_time_ahead_s > 0, "streaming.max_event_time_ahead_s must be > 0"),
    ]


def _batch(cfg: Config) -> list[Check]:
    return [
        (cfg.batch.rank >= 1, "batch.rank must be >= 1"),
        (cfg.batch.reg_param >= 0, "batch.reg_param must be >= 0"),
        (cfg.batch.alpha > 0, "batch.alpha must be > 0"),
        (cfg.batch.max_iter >= 1, "batch.max_iter must be >= 1"),
        (cfg.batch.top_n >= 1, "batch.top_n must be >= 1"),
        (cfg.batch.similar_max_items >= 0, "batch.similar_max_items must be >= 0"),
        (cfg.batch.keep_versions >= 1, "batch.keep_versions must be >= 1"),
        (0 <= cfg.batch.holdout_share < 1, "batch.holdout_share must be in [0, 1)"),
        (cfg.batch.eval_k >= 1, "batch.eval_k must be >= 1"),
        (cfg.batch.promote_margin >= 0, "batch.promote_margin must be >= 0"),
        (cfg.batch.tune_every >= 0, "batch.tune_every must be >= 0 (0: never tune)"),
        (cfg.batch.tune_candidates >= 1, "batch.tune_candidates must be >= 1"),
        (min(cfg.batch.tune_ranks) >= 1, "batch.tune_ranks must all be >= 1"),
        (min(cfg.batch.tune_reg_params) > 0, "batch.tune_reg_params must all be > 0"),
        (min(cfg.batch.tune_alphas) > 0, "batch.tune_alphas must all be > 0"),
        (cfg.batch.family in FAMILIES, f"batch.family must be one of {FAMILIES}"),
        (cfg.batch.ease_l2 > 0, "batch.ease_l2 must be > 0"),
        (cfg.batch.ease_max_items >= 1, "batch.ease_max_items must be >= 1"),
        (
            bool(cfg.batch.tune_families) and set(cfg.batch.tune_families) <= set(FAMILIES),
            f"batch.tune_families must be a non-empty list of {FAMILIES}",
        ),
        (min(cfg.batch.tune_ease_l2s) > 0, "batch.tune_ease_l2s must all be > 0"),
    ]


def _lists(cfg: Config) -> list[Check]:
    return [
        (cfg.lists.ttl_seconds >= 1, "lists.ttl_seconds must be >= 1"),
    ]


def _feedback(cfg: Config) -> list[Check]:
    return [
        (cfg.feedback.half_life_days >= 0, "feedback.half_life_days must be >= 0 (0: no decay)"),
        (
            cfg.feedback.value_scale in VALUE_SCALES,
            f"feedback.value_scale must be one of {', '.join(VALUE_SCALES)}",
        ),
    ]


def _spark(cfg: Config) -> list[Check]:
    return [
        (cfg.spark.shuffle_partitions >= 1, "spark.shuffle_partitions must be >= 1"),
    ]


def _segments(cfg: Config) -> list[Check]:
    return [
        (cfg.segments.method in ("kmeans", "gmm"), "segments.method must be 'kmeans' or 'gmm'"),
        (cfg.segments.k_min >= 2, "segments.k_min must be >= 2"),
        (cfg.segments.k_max >= cfg.segments.k_min, "segments.k_max must be >= segments.k_min"),
        (
            0 < cfg.segments.explained_variance <= 1,
            "segments.explained_variance must be in (0, 1]",
        ),
        (cfg.segments.max_iter >= 1, "segments.max_iter must be >= 1"),
        (cfg.segments.gmm_restarts >= 1, "segments.gmm_restarts must be >= 1"),
        (cfg.segments.top_n >= 1, "segments.top_n must be >= 1"),
        (cfg.segments.behaviour_weight > 0, "segments.behaviour_weight must be > 0"),
        (0 < cfg.segments.validation_share < 1, "segments.validation_share must be in (0, 1)"),
        (cfg.segments.report_items >= 1, "segments.report_items must be >= 1"),
    ]


def _serve(cfg: Config) -> list[Check]:
    return [
        (1 <= cfg.serve.port <= 65535, "serve.port must be a TCP port (1..65535)"),
        (cfg.serve.default_n >= 1, "serve.default_n must be >= 1"),
        (cfg.serve.max_n >= cfg.serve.default_n, "serve.max_n must be >= serve.default_n"),
        (cfg.serve.workers >= 0, "serve.workers must be >= 0 (0: one per core)"),
        (cfg.serve.idle_timeout_s >= 1, "serve.idle_timeout_s must be >= 1"),
        (cfg.serve.max_connections >= 1, "serve.max_connections must be >= 1"),
        (cfg.serve.redis_timeout_s > 0, "serve.redis_timeout_s must be > 0"),
        (cfg.serve.max_events >= 1, "serve.max_events must be >= 1"),
        (cfg.serve.max_body_bytes >= 1024, "serve.max_body_bytes must be >= 1024"),
        (cfg.serve.kafka_timeout_s > 0, "serve.kafka_timeout_s must be > 0"),
        (cfg.serve.max_session_items >= 1, "serve.max_session_items must be >= 1"),
        (cfg.serve.explain_top >= 1, "serve.explain_top must be >= 1"),
    ]


def _feedback_types(cfg: Config) -> list[Check]:
    from streamrec.schemas.events import event_contract

    known_types = set(event_contract().event_types)
    return [
        (
            name in known_types,
            f"feedback.weights.{name} is not an event type of the contract {sorted(known_types)}",
        )
        for name in cfg.feedback.weights
    ]


def check_values(cfg: Config) -> None:
    """ConfigError naming the file and the key of the first value out of its range."""
    for section in (
        _kafka,
        _redis,
        _streaming,
        _batch,
        _lists,
        _feedback,
        _spark,
        _segments,
        _serve,
        _feedback_types,
    ):
        for ok, message in section(cfg):
            if not ok:
                raise ConfigError(f"{cfg.source or '<defaults>'}: {message}")
