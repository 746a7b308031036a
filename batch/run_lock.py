"""One batch run at a time: a lock in Redis, the store both runs share.

The lock expires ``LOCK_TTL_S`` after its holder last renewed it (a thread renews it every
third of that), so a run killed with SIGKILL blocks the next one for at most that long, and a
run never loses the lock while it is alive.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.lock import Lock

from streamrec.errors import StreamrecError
from streamrec.redis_lists import RedisClient
from streamrec.schemas import redis_layout as L

log = logging.getLogger(__name__)

LOCK_TTL_S = 60.0


class RunLocked(StreamrecError):
    """Another batch run holds the lock."""


@contextmanager
def exclusive_run(client: RedisClient, prefix: str, ttl_s: float = LOCK_TTL_S) -> Iterator[None]:
    """Hold the batch lock for the block, or raise ``RunLocked`` at once."""
    lock = Lock(client, L.batch_lock_key(prefix), timeout=ttl_s, thread_local=False)
    if not lock.acquire(blocking=False):
        left = client.pttl(L.batch_lock_key(prefix))
        raise RunLocked(
            "another batch run holds the lock "
            f"({L.batch_lock_key(prefix)}; it expires in {max(left, 0) / 1000:.0f} s unless "
            "that run is alive): wait for it to finish"
        )
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl_s / 3):
            try:
                lock.reacquire()
            except (redis.RedisError, redis.exceptions.LockError) as exc:
                log.warning("batch: could not renew the run lock: %r", exc)

    renewer = threading.Thread(target=renew, name="batch-lock", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        try:
            lock.release()
        except redis.exceptions.LockError:
            log.warning("batch: the run lock had expired before the run released it")
