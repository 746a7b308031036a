"""A local Redis Cluster: three (or more) ``redis-server --cluster-enabled yes`` masters on
consecutive loopback ports, joined by ``redis-cli --cluster create``, without replicas or
persistence (the lists are derived data the jobs rewrite).

Each master has its own folder under ``home`` (``<port>/``: ``nodes.conf``, ``redis.log``,
``redis.pid``). ``start`` is idempotent: masters already running are left alone, a master that
died is started again and rejoins the cluster from its ``nodes.conf``; the cluster is created
only when every master is new. ``stop`` stops the masters and removes their ``nodes.conf``, so
the next ``start`` creates a new, empty cluster. Point streamrec at it with ``redis.cluster:
true`` and ``redis.port`` set to the first port.

    python -m streamrec.stack.redis_cluster start --home .streamrec/redis-cluster --port 7001
    python -m streamrec.stack.redis_cluster stop --home .streamrec/redis-cluster --port 7001
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from streamrec.errors import ServiceUnavailable, StackError
from streamrec.stack.process import ManagedProcess, port_open, wait_until
from streamrec.stack.redis_server import server_command

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "redis-server and redis-cli are needed for a local Redis Cluster. On Debian/Ubuntu: "
    "`sudo apt-get install -y redis-server` (it brings redis-cli; the service it enables is not "
    "needed)."
)


@dataclass(frozen=True)
class LocalCluster:
    home: Path
    first_port: int = 7001
    masters: int = 3
    host: str = "127.0.0.1"
    password: str = field(default="", repr=False)
    node_timeout_ms: int = 5000

    def ports(self) -> list[int]:
        return [self.first_port + i for i in range(self.masters)]

    def process(self, port: int) -> ManagedProcess:
        folder = self.home / str(port)
        return ManagedProcess(
            f"redis-cluster-{port}",
            folder / "redis.pid",
            folder / "redis.log",
            marker=f"{self.host}:{port}",
        )

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(
            host=self.host, port=port, password=self.password or None, socket_timeout=2
        )

    def info(self, port: int) -> dict[str, str]:
        """The master's CLUSTER INFO fields ({} when it does not answer)."""
        try:
            with self.client(port) as client:
                raw = client.execute_command("CLUSTER INFO")
        except redis.RedisError:
            return {}
        # redis-py parses the reply into a dict of strings.
        return {str(key): str(value) for key, value in dict(raw).items()}

    def is_ok(self) -> bool:
        """Every master sees the cluster whole: all slots served, state ok."""
        return all(self.info(port).get("cluster_state") == "ok" for port in self.ports())

    def start(self, timeout_s: float = 30.0) -> str:
        """Start the masters not running, create the cluster if they are all new, and wait for
        ``cluster_state:ok`` on every one. Says what it did."""
        binaries = [shutil.which("redis-server"), shutil.which("redis-cli")]
        if None in binaries:
            raise ServiceUnavailable(INSTALL_HINT)
        server, cli = str(binaries[0]), str(binaries[1])
        started = [port for port in self.ports() if self._start_master(server, port, timeout_s)]
        fresh = [port for port in self.ports() if self._is_new(port)]
        if fresh and len(fresh) < self.masters:
            raise StackError(
                f"the Redis Cluster in {self.home} is half made: masters {fresh} belong to no "
                f"cluster while the others do. Stop it (`python -m streamrec.stack.redis_cluster "
                f"stop --home {self.home} --port {self.first_port}`) and start it again"
            )
        if fresh:
            self._create(cli, timeout_s)
        self._wait_ok(timeout_s)
        if not started:
            return "already running"
        what = "created" if fresh else "rejoined"
        return f"{what} on {self.host}:{self.first_port}-{self.ports()[-1]} (started {started})"

    def stop(self) -> list[int]:
        """Stop every master of ours and forget the cluster (``nodes.conf``); the ports of the
        masters stopped."""
        stopped = [port for port in self.ports() if self.process(port).stop()]
        for port in self.ports():
            (self.home / str(port) / "nodes.conf").unlink(missing_ok=True)
        return stopped

    def _start_master(self, server: str, port: int, timeout_s: float) -> bool:
        proc = self.process(port)
        if proc.pid() is not None:
            return False
        if port_open(self.host, port):
            raise StackError(
                f"port {self.host}:{port} is already taken by another process: stop it or pick "
                f"other ports for the Redis Cluster (its masters use {self.ports()})"
            )
        folder = self.home / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [
            *server_command(server, self.host, port, folder),
            *("--cluster-enabled", "yes", "--cluster-config-file", str(folder / "nodes.conf")),
            *("--cluster-node-timeout", str(self.node_timeout_ms)),
        ]
        if self.password:
            cmd += ["--requirepass", self.password, "--masterauth", self.password]
        pid = proc.start(cmd)
        wait_until(lambda: self._answers(port), proc, pid, timeout_s, f"redis-server on {port}")
        log.info("redis cluster master ready at %s:%d (pid %d)", self.host, port, pid)
        return True

    def _answers(self, port: int) -> bool:
        try:
            with self.client(port) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def _is_new(self, port: int) -> bool:
        info = self.info(port)
        return info.get("cluster_known_nodes") == "1" and info.get("cluster_slots_assigned") == "0"

    def _create(self, cli: str, timeout_s: float) -> None:
        nodes = [f"{self.host}:{port}" for port in self.ports()]
        cmd = [cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"]
        env = dict(os.environ, REDISCLI_AUTH=self.password) if self.password else None
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout_s, env=env, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise StackError(f"`{' '.join(cmd)}` did not finish in {timeout_s:.0f} s") from exc
        if done.returncode != 0:
            raise StackError(
                f"`{' '.join(cmd)}` failed (exit {done.returncode}):\n{done.stdout}{done.stderr}"
            )

    def _wait_ok(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.is_ok():
            if time.monotonic() > deadline:
                states = {port: self.info(port).get("cluster_state") for port in self.ports()}
                raise StackError(
                    f"the Redis Cluster in {self.home} is not ok after {timeout_s:.0f} s "
                    f"(cluster_state per port: {states}); see the redis.log files there"
                )
            time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streamrec.stack.redis_cluster",
        description="Start or stop a local Redis Cluster of masters on consecutive ports.",
    )
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--home", default=".streamrec/redis-cluster", help="the masters' folder")
    parser.add_argument("--port", type=int, default=7001, help="the first master's port")
    parser.add_argument("--masters", type=int, default=3, help="how many masters (at least 3)")
    args = parser.parse_args(argv)
    if args.masters < 3:
        parser.error("--masters: Redis Cluster needs at least 3 masters")
    cluster = LocalCluster(Path(args.home).resolve(), args.port, args.masters)
    if args.action == "start":
        print(f"redis cluster: {cluster.start()}")
    else:
        print(f"redis cluster: stopped masters {cluster.stop() or 'none (none was running)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
