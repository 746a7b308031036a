"""A real ``redis-server`` (Debian package) on loopback, without persistence: the lists in it are
derived data that the batch and streaming jobs rewrite."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import redis

from streamrec.errors import ServiceUnavailable, StackError
from streamrec.schemas.config import Config
from streamrec.stack.process import ManagedProcess, port_open, wait_until

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "redis-server is not installed. On Debian/Ubuntu: `sudo apt-get install -y redis-server` "
    "(the service it enables is not needed: `streamrec stack up` runs its own on redis.port)."
)


def home(cfg: Config) -> Path:
    return Path(cfg.stack.home).resolve() / "redis"


def process(cfg: Config) -> ManagedProcess:
    h = home(cfg)
    return ManagedProcess(
        "redis", h / "redis.pid", h / "redis.log", marker=f"{cfg.redis.host}:{cfg.redis.port}"
    )


def _ready(cfg: Config) -> bool:
    try:
        client = redis.Redis(
            host=cfg.redis.host,
            port=cfg.redis.port,
            password=cfg.redis.password or None,
            socket_timeout=1,
        )
        return bool(client.ping())
    except redis.RedisError:
        return False


def server_command(binary: str, host: str, port: int, folder: Path) -> list[str]:
    """A redis-server in the foreground on ``host:port``, without persistence, in ``folder``."""
    return [
        *(binary, "--bind", host, "--port", str(port), "--dir", str(folder)),
        *("--save", "", "--appendonly", "no", "--daemonize", "no"),
    ]


def start(cfg: Config) -> str:
    proc = process(cfg)
    if proc.pid() is not None:
        return "already running"
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceUnavailable(INSTALL_HINT)
    if port_open(cfg.redis.host, cfg.redis.port):
        raise StackError(
            f"port {cfg.redis.host}:{cfg.redis.port} is already taken by another process; stop "
            f"it or change redis.port in {cfg.source or 'the config'}"
        )
    h = home(cfg)
    h.mkdir(parents=True, exist_ok=True)
    cmd = server_command(binary, cfg.redis.host, cfg.redis.port, h)
    if cfg.redis.password:
        cmd += ["--requirepass", cfg.redis.password]
    pid = proc.start(cmd)
    wait_until(lambda: _ready(cfg), proc, pid, cfg.stack.start_timeout_s, "redis-server")
    log.info("redis-server ready at %s:%d (pid %d)", cfg.redis.host, cfg.redis.port, pid)
    return f"started (pid {pid})"
