"""`streamrec stack up | down | status`: the local Kafka + Redis stack.

``up`` is idempotent (a running service of ours is left alone), ``down`` stops only the
processes whose PID files ``up`` wrote, ``status`` says what runs where.
"""

from __future__ import annotations

import logging

from streamrec.kafka_topics import ensure_topics
from streamrec.schemas.config import Config
from streamrec.stack import kafka_broker, maven, redis_server
from streamrec.stack.process import port_open

log = logging.getLogger(__name__)


def fetch(cfg: Config) -> dict[str, str]:
    """Resolve the broker's and the Spark connector's jars into the cache (no process starts)."""
    return {
        "kafka-broker": str(maven.resolve(maven.KAFKA_BROKER, cfg.stack.cache_dir)),
        "spark-kafka-connector": str(
            maven.resolve(maven.SPARK_KAFKA_CONNECTOR, cfg.stack.cache_dir)
        ),
    }


def up(cfg: Config) -> dict[str, str]:
    """Start Redis and Kafka, create the topics, and resolve the Spark connector jars. When
    Kafka fails to start, a Redis this call started is stopped again: a half-up stack would
    hold its port and make the next `up` fail on it."""
    result = {"redis": redis_server.start(cfg)}
    try:
        result["kafka"] = kafka_broker.start(cfg)
    except BaseException:
        if result["redis"] != "already running":
            redis_server.process(cfg).stop()
        raise
    ensure_topics(cfg.kafka)
    maven.spark_connector_jars(cfg.stack.cache_dir)
    for name, what in result.items():
        log.info("%s: %s", name, what)
    return result


def down(cfg: Config) -> dict[str, bool]:
    # Kafka first: it may still be flushing while Redis goes.
    return {"kafka": kafka_broker.process(cfg).stop(), "redis": redis_server.process(cfg).stop()}


def status_text(cfg: Config) -> str:
    kafka_host, kafka_port = kafka_broker.host_port(cfg.kafka.bootstrap_servers)
    rows = [
        ("kafka", kafka_broker.process(cfg), kafka_host, kafka_port),
        ("redis", redis_server.process(cfg), cfg.redis.host, cfg.redis.port),
    ]
    lines = []
    for name, proc, host, port in rows:
        pid = proc.pid()
        if pid is not None:
            state = f"running  pid {pid:<7} {host}:{port}  log {proc.log_file}"
        elif port_open(host, port):
            state = f"not ours {host}:{port} answers, but not a process this stack started"
        else:
            state = f"stopped  ({host}:{port})"
        lines.append(f"{name:<6} {state}")
    return "\n".join(lines)
