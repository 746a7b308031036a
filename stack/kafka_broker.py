"""A real Apache Kafka broker in KRaft mode (combined broker + controller) on loopback, run from
the jars Maven resolved. Data and logs live under ``stack.home/kafka``."""

from __future__ import annotations

import base64
import logging
import subprocess
import uuid
from pathlib import Path

from kafka.errors import KafkaError

from streamrec.errors import StackError
from streamrec.kafka_topics import jaas_quoted
from streamrec.schemas.config import Config
from streamrec.stack import maven
from streamrec.stack.process import ManagedProcess, port_open, wait_until

log = logging.getLogger(__name__)


def host_port(bootstrap_servers: str) -> tuple[str, int]:
    first = bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return host or "127.0.0.1", int(port)


def home(cfg: Config) -> Path:
    return Path(cfg.stack.home).resolve() / "kafka"


def process(cfg: Config) -> ManagedProcess:
    h = home(cfg)
    return ManagedProcess(
        "kafka", h / "kafka.pid", h / "kafka.log", marker=str(h / "server.properties")
    )


def server_properties(cfg: Config) -> str:
    host, port = host_port(cfg.kafka.bootstrap_servers)
    cport = cfg.kafka.controller_port
    data = home(cfg) / "data"
    kafka = cfg.kafka
    name = kafka.security_protocol  # the clients' listener: PLAINTEXT or SASL_PLAINTEXT here
    if name not in ("PLAINTEXT", "SASL_PLAINTEXT") or (
        name == "SASL_PLAINTEXT" and kafka.sasl_mechanism != "PLAIN"
    ):
        raise StackError(
            "the local stack's broker speaks PLAINTEXT, or SASL_PLAINTEXT with PLAIN; "
            f"kafka.security_protocol {name} / kafka.sasl_mechanism {kafka.sasl_mechanism} "
            "need a broker of your own"
        )
    lines = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"{host}:{cport}",
        "listeners": f"{name}://{host}:{port},CONTROLLER://{host}:{cport}",
        "advertised.listeners": f"{name}://{host}:{port},CONTROLLER://{host}:{cport}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": name,
        "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{name}:{name}",
        "log.dirs": str(data),
        "num.partitions": str(cfg.kafka.partitions),
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        # Compaction of the dead-letter topic should not wait for the default 7 days of segments.
        "log.cleaner.min.compaction.lag.ms": "0",
    }
    if name == "SASL_PLAINTEXT":
        # One account, the config's own: the broker's clients and the broker itself use it.
        user, secret = jaas_quoted(kafka.sasl_username), jaas_quoted(kafka.sasl_password)
        lines.update(
            {
                "sasl.enabled.mechanisms": "PLAIN",
                "sasl.mechanism.inter.broker.protocol": "PLAIN",
                "listener.name.sasl_plaintext.plain.sasl.jaas.config": (
                    "org.apache.kafka.common.security.plain.PlainLoginModule required "
                    f"username={user} password={secret} user_{kafka.sasl_username}={secret};"
                ),
            }
        )
    return "".join(f"{k}={properties_escaped(v)}\n" for k, v in lines.items())


def properties_escaped(value: str) -> str:
    """``value`` as a Java .properties value: the broker reads the file as ISO-8859-1 and
    takes backslashes as escapes, so backslashes are doubled and other characters beyond
    ASCII written as \\uXXXX (UTF-16 units)."""
    out = []
    for char in value.replace("\\", "\\\\"):
        if ord(char) < 128:
            out.append(char)
        else:
            units = char.encode("utf-16-be")
            out += [f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2)]
    return "".join(out)


def _java_cmd(cfg: Config, libs: Path, main: list[str]) -> list[str]:
    log4j = Path(__file__).parent / "log4j2.properties"
    return [
        "java",
        "-Xms256m",
        f"-Xmx{cfg.stack.kafka_heap}",
        "-XX:+UseG1GC",
        f"-Dkafka.logs.dir={home(cfg) / 'logs'}",
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        f"{libs}/*",
        *main,
    ]


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding, never starting
    with "-" (the storage tool would read it as an option; Kafka's Uuid.randomUuid redraws
    such ids too)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _format_storage(cfg: Config, libs: Path, props: Path) -> None:
    id_file = home(cfg) / "cluster.id"
    # An id starting with "-" never formatted anything (the tool refused it): draw a new one.
    if not id_file.exists() or id_file.read_text().startswith("-"):
        id_file.write_text(new_cluster_id())
    cmd = _java_cmd(
        cfg,
        libs,
        [
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            id_file.read_text().strip(),
            "-c",
            str(props),
            "--ignore-formatted",
        ],
    )
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise StackError(f"formatting Kafka storage failed:\n{proc.stdout}\n{proc.stderr}")


def _ready(cfg: Config) -> bool:
    host, port = host_port(cfg.kafka.bootstrap_servers)
    if not port_open(host, port):
        return False
    from streamrec.kafka_topics import admin_client

    try:
        admin = admin_client(cfg.kafka, timeout_ms=3000)
        try:
            admin.describe_cluster()
        finally:
            admin.close()
        return True
    except (KafkaError, OSError, Exception):
        return False


def start(cfg: Config) -> str:
    """Start the broker unless ours already runs; returns what happened."""
    proc = process(cfg)
    if proc.pid() is not None:
        return "already running"
    host, port = host_port(cfg.kafka.bootstrap_servers)
    for p in (port, cfg.kafka.controller_port):
        if port_open(host, p):
            raise StackError(
                f"port {host}:{p} is already taken by another process; stop it or change "
                f"kafka.bootstrap_servers / kafka.controller_port in {cfg.source or 'the config'}"
            )
    libs = maven.resolve(maven.KAFKA_BROKER, cfg.stack.cache_dir)
    h = home(cfg)
    (h / "data").mkdir(parents=True, exist_ok=True)
    (h / "logs").mkdir(parents=True, exist_ok=True)
    props = h / "server.properties"
    props.write_text(server_properties(cfg))
    props.chmod(0o600)  # with SASL it holds the account's password
    _format_storage(cfg, libs, props)
    pid = proc.start(_java_cmd(cfg, libs, ["kafka.Kafka", str(props)]))
    wait_until(lambda: _ready(cfg), proc, pid, cfg.stack.start_timeout_s, "Kafka broker")
    log.info("kafka broker ready at %s (pid %d)", cfg.kafka.bootstrap_servers, pid)
    return f"started (pid {pid})"
