"""The one frozen config of streamrec: a dataclass per section, every key with its default
(shown in ``config/streamrec.example.yaml``).

``schemas/config_loader.py`` builds it from a YAML file and the environment (the only place
streamrec reads the environment for settings); ``schemas/config_checks.py`` checks its values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
