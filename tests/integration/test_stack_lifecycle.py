"""`streamrec stack up | down | status` on a throwaway stack of its own (own home, free ports),
never the session's test stack: up is idempotent, down stops only what up started, and the
errors say what to fix.

One Kafka start/stop cycle for the whole module: the tests up to ``test_down_*`` share the stack
``throwaway`` started, and ``test_down_*`` stops it (the fixture stops it too, on any failure).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from streamrec.errors import ServiceUnavailable, StackError
from streamrec.kafka_topics import admin_client
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import with_overrides
from streamrec.stack import kafka_broker, manager, redis_server
from streamrec.stack.process import port_open
from tests.conftest import base_test_config

pytestmark = pytest.mark.integration


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports nothing listens on now (all held open until all are picked)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def throwaway_config(home: Path) -> Config:
    """A stack of its own under ``home`` on free ports; the jar cache is the test stack's."""
    kafka_port, controller_port, redis_port = free_ports(3)
    return with_overrides(
        base_test_config(),  # what the session's stack_cfg is built from: same stack.cache_dir
        stack=dict(home=str(home)),
        kafka=dict(bootstrap_servers=f"127.0.0.1:{kafka_port}", controller_port=controller_port),
        redis=dict(port=redis_port),
    )


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def started_pid(what: str) -> int:
    match = re.fullmatch(r"started \(pid (\d+)\)", what)
    assert match, what
    return int(match.group(1))


def status_lines(cfg: Config) -> dict[str, str]:
    return {line.split()[0]: line for line in manager.status_text(cfg).splitlines()}


def ping(port: int) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    try:
        return bool(client.ping())
    finally:
        client.close()


@pytest.fixture(scope="module")
def throwaway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Config, dict[str, str]]]:
    """A throwaway stack, up: its config and what the first ``up`` returned."""
    cfg = throwaway_config(tmp_path_factory.mktemp("stack"))
    try:
        yield cfg, manager.up(cfg)
    finally:
        manager.down(cfg)  # stops whatever of ours is still running, even after a failed up


def test_up_starts_both_and_status_shows_them_running(
    throwaway: tuple[Config, dict[str, str]],
) -> None:
    cfg, first = throwaway
    pids = {name: started_pid(what) for name, what in first.items()}
    assert pids["kafka"] == kafka_broker.process(cfg).pid()
    assert pids["redis"] == redis_server.process(cfg).pid()
    lines = status_lines(cfg)
    host, port = kafka_broker.host_port(cfg.kafka.bootstrap_servers)
    assert lines["kafka"].split()[1] == "running"
    assert f"pid {pids['kafka']} " in lines["kafka"] and f"{host}:{port}" in lines["kafka"]
    assert lines["redis"].split()[1] == "running"
    assert f"pid {pids['redis']} " in lines["redis"] and f":{cfg.redis.port}" in lines["redis"]


def test_second_up_leaves_the_running_stack_alone(
    throwaway: tuple[Config, dict[str, str]],
) -> None:
    cfg, first = throwaway
    assert manager.up(cfg) == {"redis": "already running", "kafka": "already running"}
    assert kafka_broker.process(cfg).pid() == started_pid(first["kafka"])
    assert redis_server.process(cfg).pid() == started_pid(first["redis"])


def test_kafka_and_redis_answer(throwaway: tuple[Config, dict[str, str]]) -> None:
    cfg, _ = throwaway
    servers = cfg.kafka.bootstrap_servers
    topic = f"lifecycle.{uuid.uuid4().hex[:8]}"
    admin = admin_client(cfg.kafka)
    try:
        assert {cfg.kafka.events_topic, cfg.kafka.dead_letter_topic} <= set(admin.list_topics())
        admin.create_topics([NewTopic(topic, 1, 1)], wait_for_metadata=True)
    finally:
        admin.close()

    producer = KafkaProducer(bootstrap_servers=servers)
    try:
        producer.send(topic, key=b"k", value=b"hello").get(timeout=20)
    finally:
        producer.close()
    consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        records: list[Any] = []
        deadline = time.monotonic() + 20
        while not records and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    assert [(r.key, r.value) for r in records] == [(b"k", b"hello")]

    assert ping(cfg.redis.port)


def test_down_stops_both_and_a_second_down_has_nothing_to_stop(
    throwaway: tuple[Config, dict[str, str]],
) -> None:
    cfg, first = throwaway
    pids = {name: started_pid(what) for name, what in first.items()}
    assert all(alive(pid) for pid in pids.values())

    assert manager.down(cfg) == {"kafka": True, "redis": True}

    assert not any(alive(pid) for pid in pids.values())
    host, port = kafka_broker.host_port(cfg.kafka.bootstrap_servers)
    assert not port_open(host, port)
    assert not port_open(cfg.redis.host, cfg.redis.port)
    lines = status_lines(cfg)
    assert lines["kafka"].split()[1] == "stopped"
    assert lines["redis"].split()[1] == "stopped"
    assert manager.down(cfg) == {"kafka": False, "redis": False}


def test_down_stops_only_what_up_started(tmp_path: Path) -> None:
    cfg = throwaway_config(tmp_path / "stack")
    port = cfg.redis.port
    foreign = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not port_open("127.0.0.1", port):
            assert foreign.poll() is None, "the foreign redis-server exited"
            assert time.monotonic() < deadline, "the foreign redis-server did not start"
            time.sleep(0.05)

        assert manager.down(cfg) == {"kafka": False, "redis": False}
        assert foreign.poll() is None
        assert ping(port)
        lines = status_lines(cfg)
        assert lines["redis"].split()[1:3] == ["not", "ours"]
        assert lines["kafka"].split()[1] == "stopped"
        with pytest.raises(StackError, match=rf"port 127\.0\.0\.1:{port} is already taken"):
            redis_server.start(cfg)
        assert foreign.poll() is None
        assert redis_server.process(cfg).pid() is None
    finally:
        foreign.terminate()
        try:
            foreign.wait(timeout=10)
        except subprocess.TimeoutExpired:
            foreign.kill()
            foreign.wait()


def test_missing_redis_server_binary_gives_the_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = throwaway_config(tmp_path / "stack")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    path_before = os.environ["PATH"]
    with monkeypatch.context() as patched:
        patched.setenv("PATH", str(empty))
        with pytest.raises(ServiceUnavailable, match=r"apt-get install -y redis-server"):
            redis_server.start(cfg)
    assert os.environ["PATH"] == path_before  # restored on leaving the block
    assert redis_server.process(cfg).pid() is None
    assert not port_open(cfg.redis.host, cfg.redis.port)


def test_a_failed_kafka_start_leaves_no_redis_behind(tmp_path: Path) -> None:
    cfg = throwaway_config(tmp_path / "stack")
    _, kafka_port = kafka_broker.host_port(cfg.kafka.bootstrap_servers)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", kafka_port))
    squatter.listen()
    try:
        with pytest.raises(StackError, match="already taken"):
            manager.up(cfg)
        # The Redis this `up` started is stopped again: its port is free for the next `up`.
        assert redis_server.process(cfg).pid() is None
        assert not port_open(cfg.redis.host, cfg.redis.port)
    finally:
        squatter.close()
        manager.down(cfg)
