"""The one frozen config of streamrec, loaded from YAML.

``load_config(path)`` reads the file, expands ``${VAR}`` and ``${VAR:-default}`` from the
environment (the only place streamrec reads the environment for settings), and builds these frozen
dataclasses. Unknown keys and bad values raise ``ConfigError`` naming the key and the file.
Every key and its default is shown in ``config/streamrec.example.yaml``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from streamrec.errors import ConfigError

ENV_CONFIG_PATH = "STREAMREC_CONFIG"


@dataclass(frozen=True)
class StackConfig:
    """Where the local stack keeps its processes' data, logs and pid files."""

    home: str = ".streamrec/stack"
    cache_dir: str = ".cache"
    kafka_heap: str = "768m"
    start_timeout_s: float = 90.0


KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str = "127.0.0.1:19092"
    controller_port: int = 19093
    events_topic: str = "streamrec.events"
    dead_letter_topic: str = "streamrec.events.dead-letter"
    partitions: int = 2
    # Copies of each partition the topics are created with (a production cluster: 3).
    replication_factor: int = 1
    # How every client (producer, stream, dead letters, admin) talks to the brokers:
    # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL; SASL as PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str = ""
    # Never logged or printed, and only read from the environment: ${KAFKA_SASL_PASSWORD}.
    sasl_password: str = field(default="", repr=False)
    # PEM bundle of the CA that signed the brokers' certificates (SSL, SASL_SSL).
    ssl_ca_file: str = ""


@dataclass(frozen=True)
class RedisConfig:
    host: str = "127.0.0.1"
    port: int = 16379
    db: int = 0
    # Never logged or printed: kept out of repr. Set it from the environment: ${REDIS_PASSWORD}.
    password: str = field(default="", repr=False)
    key_prefix: str = "streamrec"
    # ACL user ("" for the default user); TLS with an optional CA bundle and client certificate.
    username: str = ""
    tls: bool = False
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # No command waits on Redis longer than this (lookups, /health, the jobs).
    socket_timeout_s: float = 2.0
    # The jobs (stream, batch) retry a command whose connection failed or timed out, with
    # exponential backoff, for about this long: a Redis restart or a short freeze does not stop
    # them. Lookups retry once; a job's start-up check does not wait.
    retry_window_s: float = 60.0
    # Redis Cluster: host:port is one startup node, the client finds the others (db must be 0).
    cluster: bool = False


@dataclass(frozen=True)
class SparkConfig:
    master: str = "local[2]"
    app_name: str = "streamrec"
    driver_memory: str = "2g"
    shuffle_partitions: int = 4
    checkpoint_dir: str = ".streamrec/spark-checkpoints"
    conf: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PathsConfig:
    event_store: str = ".streamrec/data/events"
    stream_checkpoint: str = ".streamrec/checkpoints/stream"
    model_store: str = ".streamrec/models"


@dataclass(frozen=True)
class StreamingConfig:
    # The lists query checks for new events this often, and starts a micro-batch at once when
    # the previous one took longer (0 would poll Kafka non-stop: a third of a core when idle);
    # the archive query (event store, dead letters) batches up more events per write.
    trigger_seconds: float = 0.25
    archive_trigger_seconds: float = 5.0
    max_offsets_per_trigger: int = 100_000
    # Spark partitions of the per-user step (0: one per Kafka partition; more splits each
    # Kafka partition's share of a micro-batch, the Kafka source's minPartitions).
    list_partitions: int = 0
    # Per-micro-batch metrics kept in Redis (a Redis stream, oldest trimmed).
    metrics_kept: int = 10_000
    starting_offsets: str = "earliest"
    top_n: int = 20
    # Per-user state bounds (model/user_state.py): items kept for the fold-in, event ids kept
    # to drop a producer's retried duplicates.
    state_max_items: int = 1000
    state_max_ids: int = 256
    # An event dated more than this after the broker received it is a dead letter (its time
    # would fence the user's lists until then). Late events are always accepted.
    max_event_time_ahead_s: float = 3600.0


@dataclass(frozen=True)
class BatchConfig:
    rank: int = 32
    reg_param: float = 0.05
    alpha: float = 10.0
    max_iter: int = 10
    top_n: int = 20
    seed: int = 42
    implicit: bool = True
    keep_versions: int = 3
    # Promotion guard: the newest share of events is held out to judge each retrain; 0 = off.
    holdout_share: float = 0.1
    eval_k: int = 10
    # A retrain whose holdout NDCG@k falls below the current model's by more than this
    # (absolute) is saved but not promoted.
    promote_margin: float = 0.02
    # Self-tuning: every `tune_every` runs (0: never, and the parameters above are used as they
    # are) the job chooses rank, regParam and alpha by successive halving on the newest of its
    # training events, never on the holdout it reports. `tune_candidates` settings, the
    # current model's first, start at a quarter of max_iter; the best third go on with twice
    # the iterations, until one is left. Between tunings a run keeps the current model's.
    tune_every: int = 1
    tune_candidates: int = 6
    tune_ranks: tuple[int, ...] = (16, 32, 64)
    tune_reg_params: tuple[float, ...] = (0.01, 0.05, 0.1, 0.5)
    tune_alphas: tuple[float, ...] = (1.0, 5.0, 10.0, 40.0)
    # The model family that ranks users' lists: "als" (the factors above) or "ease" (an
    # item-item matrix, EASE: Steck 2019, with L2 penalty `ease_l2`, over binarised feedback
    # when `ease_binary`). Segments always use ALS's factors. Tuning chooses among
    # `tune_families` on its validation split; EASE is a candidate only for catalogues of at
    # most `ease_max_items` items (its matrix is items x items).
    family: str = "als"
    ease_l2: float = 500.0
    ease_binary: bool = True
    ease_max_items: int = 10_000
    # Each item's top_n most similar items are published per version (GET /similar) up to
    # this many items: an all-pairs pass, chunked, about items^2 x rank multiply-adds.
    similar_max_items: int = 50_000
    tune_families: tuple[str, ...] = ("als", "ease")
    tune_ease_l2s: tuple[float, ...] = (50.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)


# The model families that rank lists (BatchConfig.family).
FAMILIES = ("als", "ease")


# The ways an event's value can scale its weight (FeedbackConfig.value_scale).
VALUE_SCALES = ("log", "linear", "binary")


@dataclass(frozen=True)
class FeedbackConfig:
    """How events become implicit feedback: a weight per event type, times the event's scaled
    value, times an age decay (model/feedback.py)."""

    weights: dict[str, float] = field(
        default_factory=lambda: {
            "play": 1.0,
            "click": 0.5,
            "view": 0.3,
            "like": 2.0,
            "add_to_cart": 2.0,
            "purchase": 4.0,
            "skip": -0.5,
            "rating": 1.0,
        }
    )
    # How an event's value becomes its strength: "log" (log1p: a 600 s play is not 600 one-second
    # plays), "linear" (the value as it is) or "binary" (1 for any positive value).
    value_scale: str = "log"
    # Age decay: an event `half_life_days` older than the newest one counts half. 0 = off.
    half_life_days: float = 0.0


@dataclass(frozen=True)
class ListsConfig:
    """Redis lists: how long they live."""

    ttl_seconds: int = 7 * 24 * 3600


@dataclass(frozen=True)
class SegmentsConfig:
    """User segments: the features, the Spark ML pipeline that clusters them (scaler, PCA,
    KMeans or a Gaussian mixture), and the validation report."""

    enabled: bool = True
    method: str = "kmeans"
    k_min: int = 2
    k_max: int = 8
    explained_variance: float = 0.9
    max_iter: int = 50
    gmm_restarts: int = 3
    seed: int = 42
    top_n: int = 20
    activity: bool = True
    recency: bool = True
    event_mix: bool = True
    categories: bool = True
    factors: bool = True
    normalize_factors: bool = True
    behaviour_weight: float = 0.5
    validation_share: float = 0.2
    report_items: int = 10


@dataclass(frozen=True)
class ServeConfig:
    """The lookup HTTP server (`streamrec serve`)."""

    host: str = "127.0.0.1"
    port: int = 8080
    # Required in the X-API-Key header (or Authorization: Bearer) when not empty. Never logged
    # or printed, and only read from the environment: ${STREAMREC_API_KEY}.
    api_key: str = field(default="", repr=False)
    default_n: int = 10
    max_n: int = 100
    # Worker processes (0: one per core), each with its own event loop and Redis connections.
    workers: int = 0
    # A keep-alive connection idle this long is closed.
    idle_timeout_s: int = 5
    # Connections plus requests in flight per worker; beyond it new requests get 503.
    max_connections: int = 10_000
    # The longest a request waits on Redis, retries included, before it answers 503.
    redis_timeout_s: float = 1.0
    # POST /events: at most this many events and bytes a request; the broker must acknowledge
    # them within kafka_timeout_s, else 503 (and the client sends them again).
    max_events: int = 1000
    max_body_bytes: int = 1_048_576
    kafka_timeout_s: float = 10.0
    # Item id -> categories for `category=` filters: JSON lines {"item_id", "categories"} or
    # MovieLens u.item ("" for none: a category filter is then refused).
    item_categories: str = ""
    # POST /recommendations: at most this many items in a session; explanations name at most
    # `explain_top` of the user's items per recommended item.
    max_session_items: int = 500
    explain_top: int = 3


@dataclass(frozen=True)
class Config:
    stack: StackConfig = field(default_factory=StackConfig)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    lists: ListsConfig = field(default_factory=ListsConfig)
    segments: SegmentsConfig = field(default_factory=SegmentsConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    # The file this config came from ("" for defaults); used in messages only.
    source: str = ""


_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class EnvText(str):
    """A string that came from the environment: typed by the key it fills, never re-read as
    YAML (so a password "0123" stays "0123" and "p #x" keeps its "#")."""


def expand_env(text: str, env: dict[str, str], where: str) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in one YAML string value. As in the shell, an
    unset or empty VAR takes the default; unset without a default is an error."""

    def repl(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if value:
            return value
        if default is not None:
            return default
        if value is not None:
            return value
        raise ConfigError(f"{where}: environment variable {name} is not set and has no default")

    return _ENV_PATTERN.sub(repl, text)


def _expand_tree(data: Any, env: dict[str, str], source: str) -> Any:
    # Expansion runs on parsed values, not on the raw text: comments are never expanded and a
    # value cannot change the YAML structure around it.
    if isinstance(data, dict):
        return {k: _expand_tree(v, env, source) for k, v in data.items()}
    if isinstance(data, list):
        return [_expand_tree(v, env, source) for v in data]
    if isinstance(data, str) and _ENV_PATTERN.search(data):
        return EnvText(expand_env(data, env, source))
    return data


def _from_env_text(value: EnvText, hint: Any, key: str, source: str) -> Any:
    text = value.strip()
    try:
        if hint is bool:
            if text.lower() in ("true", "false"):
                return text.lower() == "true"
            raise ValueError(text)
        if hint is int:
            return int(text)
        if hint is float:
            return float(text)
    except ValueError:
        kind = {bool: "true or false", int: "an integer", float: "a number"}[hint]
        raise ConfigError(
            f"{source}: {key} must be {kind}, got {str(value)!r} from the environment"
        ) from None
    return str(value)


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    origin = get_origin(hint)
    if isinstance(value, EnvText) and hint in (bool, int, float, str):
        return _from_env_text(value, hint, key, source)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key, source)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        _, vtype = get_args(hint)
        return {str(k): _coerce(v, vtype, f"{key}.{k}", source) for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{source}: {key} must be a non-empty list, got {value!r}")
        (item_type, _) = get_args(hint)
        return tuple(_coerce(v, item_type, f"{key}[{i}]", source) for i, v in enumerate(value))
    if origin in (Union, types.UnionType):
        raise ConfigError(f"{source}: {key}: union types are not supported in config")
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{source}: {key}: unsupported config type {hint!r}")


def _build(cls: Any, data: Any, prefix: str, source: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix or 'the top level'} must be a mapping, got {data!r}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    for key in data:
        if key not in names:
            full = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(
                f"{source}: unknown key {full!r} (known here: {', '.join(sorted(names))})"
            )
    kwargs = {
        k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k, source) for k, v in data.items()
    }
    return cls(**kwargs)


def _check_values(cfg: Config) -> None:
    src = cfg.source or "<defaults>"
    checks: list[tuple[bool, str]] = [
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
        (1 <= cfg.redis.port <= 65535, "redis.port must be a TCP port (1..65535)"),
        (1 <= cfg.kafka.controller_port <= 65535, "kafka.controller_port must be a TCP port"),
        (":" in cfg.kafka.bootstrap_servers, "kafka.bootstrap_servers must be host:port[,...]"),
        (
            cfg.kafka.events_topic != cfg.kafka.dead_letter_topic,
            "kafka.dead_letter_topic must differ from kafka.events_topic",
        ),
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
        (cfg.lists.ttl_seconds >= 1, "lists.ttl_seconds must be >= 1"),
        (cfg.feedback.half_life_days >= 0, "feedback.half_life_days must be >= 0 (0: no decay)"),
        (cfg.spark.shuffle_partitions >= 1, "spark.shuffle_partitions must be >= 1"),
        (cfg.segments.method in ("kmeans", "gmm"), "segments.method must be 'kmeans' or 'gmm'"),
        (cfg.streaming.max_event_time_ahead_s > 0, "streaming.max_event_time_ahead_s must be > 0"),
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
        (
            cfg.feedback.value_scale in VALUE_SCALES,
            f"feedback.value_scale must be one of {', '.join(VALUE_SCALES)}",
        ),
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
    from streamrec.schemas.events import event_contract

    known_types = set(event_contract().event_types)
    for name in cfg.feedback.weights:
        checks.append(
            (
                name in known_types,
                f"feedback.weights.{name} is not an event type of the contract "
                f"{sorted(known_types)}",
            )
        )
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{src}: {message}")


# Secrets that may only come from the environment, never be written in a (committed) file.
_ENV_ONLY_SECRETS = (
    ("serve", "api_key", "STREAMREC_API_KEY"),
    ("kafka", "sasl_password", "KAFKA_SASL_PASSWORD"),
)


def _check_secrets_from_env(data: Any, source: str) -> None:
    if not isinstance(data, dict):
        return
    for section, key, example in _ENV_ONLY_SECRETS:
        values = data.get(section)
        value = values.get(key) if isinstance(values, dict) else None
        if value and not isinstance(value, EnvText):
            raise ConfigError(
                f"{source}: {section}.{key} must come from the environment, not be written in the "
                f"file: use {section}.{key}: '${{{example}}}'"
            )


# Every key can be set from the environment as STREAMREC_<SECTION>__<KEY> (a list as comma-
# separated values); these well-known names (the example config's and docker-compose's) too.
ENV_OVERRIDE_PREFIX = "STREAMREC_"
ENV_ALIASES = {
    "KAFKA_BOOTSTRAP_SERVERS": ("kafka", "bootstrap_servers"),
    "REDIS_HOST": ("redis", "host"),
    "REDIS_PORT": ("redis", "port"),
    "REDIS_USERNAME": ("redis", "username"),
    "REDIS_PASSWORD": ("redis", "password"),
    "STREAMREC_API_KEY": ("serve", "api_key"),
    "KAFKA_SASL_PASSWORD": ("kafka", "sasl_password"),
}


def env_override_name(section: str, key: str) -> str:
    return f"{ENV_OVERRIDE_PREFIX}{section.upper()}__{key.upper()}"


def env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The keys the environment sets: aliases first, then STREAMREC_<SECTION>__<KEY>, which
    win. Empty variables set nothing. A variable that names no key, or a value the key cannot
    take, is an error naming the variable."""
    hints = get_type_hints(Config)
    found: dict[str, dict[str, Any]] = {}
    named = [(var, *ENV_ALIASES[var]) for var in ENV_ALIASES if env.get(var)]
    for var in sorted(env):
        if var.startswith(ENV_OVERRIDE_PREFIX) and "__" in var and env[var]:
            section, _, key = var[len(ENV_OVERRIDE_PREFIX) :].lower().partition("__")
            named.append((var, section, key))
    for var, section, key in named:
        where = f"environment variable {var}"
        if section not in hints or not dataclasses.is_dataclass(hints[section]):
            raise ConfigError(f"{where}: no config section {section!r}")
        fields = get_type_hints(hints[section])
        if key not in fields:
            known = ", ".join(env_override_name(section, k) for k in sorted(fields))
            raise ConfigError(f"{where}: no key {section}.{key} (known here: {known})")
        hint = fields[key]
        if get_origin(hint) is dict:
            raise ConfigError(f"{where}: {section}.{key} is a mapping: set it in a config file")
        if get_origin(hint) is tuple:
            value: Any = [EnvText(part) for part in env[var].split(",")]
        else:
            value = EnvText(env[var])
        _coerce(value, hint, f"{section}.{key}", where)  # the error names the variable
        found.setdefault(section, {})[key] = value
    return found


def _with_env(data: Any, env: Mapping[str, str], source: str) -> Any:
    overrides = env_overrides(env)
    if not overrides:
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {data!r}")
    merged = dict(data)
    for section, values in overrides.items():
        inner = merged.get(section)
        merged[section] = {**(inner if isinstance(inner, dict) else {}), **values}
    return merged


def parse_config(text: str, source: str, env: Mapping[str, str] | None = None) -> Config:
    env = dict(os.environ) if env is None else env
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    data = _expand_tree(data, dict(env), source)
    _check_secrets_from_env(data, source)
    data = _with_env(data, env, source)
    cfg = _build(Config, data, "", source)
    cfg = dataclasses.replace(cfg, source=source)
    _check_values(cfg)
    return cfg


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load the config from ``path``, else from $STREAMREC_CONFIG, else the built-in defaults;
    then the environment's overrides (``env_overrides``) on top, with or without a file."""
    env = os.environ if env is None else env
    path = path or env.get(ENV_CONFIG_PATH)
    if not path:
        data = _with_env(None, env, "<defaults>")
        cfg = _build(Config, data, "", "the environment") if data else Config()
        _check_values(cfg)
        return cfg
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {file} does not exist")
    try:
        text = file.read_text("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    return parse_config(text, str(file), env)


# Where a dumped config (dump_config) reads each secret from: never written in its text.
SECRET_ENV = {
    ("redis", "password"): "REDIS_PASSWORD",
    ("serve", "api_key"): "STREAMREC_API_KEY",
    ("kafka", "sasl_password"): "KAFKA_SASL_PASSWORD",
}


def dump_config(cfg: Config) -> tuple[str, dict[str, str]]:
    """YAML text that loads back to ``cfg`` (to hand a config to a child process), with every
    secret written as ``${VAR:-}``; the secrets come back in an environment mapping instead."""
    data = {
        f.name: dataclasses.asdict(getattr(cfg, f.name))
        for f in dataclasses.fields(cfg)
        if f.name != "source"
    }
    env = {}
    for (section, key), var in SECRET_ENV.items():
        env[var] = str(data[section][key])
        data[section][key] = f"${{{var}:-}}"
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True), env


def with_overrides(cfg: Config, **sections: dict[str, Any]) -> Config:
    """A copy of ``cfg`` with some keys of some sections replaced (used by tests and the demo)."""
    changes = {}
    for section, values in sections.items():
        changes[section] = dataclasses.replace(getattr(cfg, section), **values)
    return dataclasses.replace(cfg, **changes)
