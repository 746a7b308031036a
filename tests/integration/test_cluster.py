"""Both jobs on a real Spark standalone cluster, submitted the way docs/cluster.md says.

A master and one worker (1 core, 1 GB) run from pyspark's own distribution (``bin/spark-class``)
on free ports. ``scripts/package`` builds the artifacts; ``spark-submit`` runs the entry scripts
(dist/submit_stream.py, dist/submit_batch.py) in client mode with the connector jars (``--jars``)
and the executors' Python environment (``--archives dist/streamrec-pyenv.tar.gz#environment``,
``spark.pyspark.python=./environment/bin/python``). Stores are ``file://`` URIs, as a cluster's
shared file system would be.

The same events (valid and malformed) go through local mode (in this process, ``local[2]``) in
one Redis prefix and folder, and through the cluster in another. What is compared, and why:

- stream: the counts in each prefix's metrics, the event store's event ids, the dead letters'
  source offsets, and every user's stream state (ratings, counts): all exactly equal, since
  they are sums of the same events;
- batch: the same users, items and interactions; every user's list. Both runs train ALS with
  the same seed, the same ids (sorted) and the same block count (``spark.shuffle_partitions``),
  so they start from the same factors and solve the same equations: the lists agree except
  for float summation order (one executor core against two local threads), which can only
  swap near ties. The test asserts identical lists for at least 95% of users, top-10 overlap
  of at least 0.9 for every user, and scores within 1e-3.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyspark
import pytest
import redis
from pyspark.sql import SparkSession

from streamrec.batch.job import run_batch
from streamrec.model import store
from streamrec.model.user_state import decode_state
from streamrec.producer.invalid import KINDS, malformed
from streamrec.producer.run import publish_events
from streamrec.producer.synthetic import SyntheticWorld
from streamrec.redis_lists import read_lists
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import dump_config, with_overrides
from streamrec.streaming.job import run_stream
from streamrec.streaming.metrics import ARCHIVE, LISTS
from tests.conftest import REPO, read_topic
from tests.support import read_recent

pytestmark = pytest.mark.integration

SPARK_HOME = Path(pyspark.__file__).resolve().parent
DIST = REPO / "dist"
START_TIMEOUT_S = 90.0
SUBMIT_TIMEOUT_S = 240.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def spark_env() -> dict[str, str]:
    """The environment of the cluster's daemons and of spark-submit: this pyspark's Spark, on
    loopback, and no interpreter inherited from this test process (the `spark` fixture sets
    PYSPARK_PYTHON here): spark-submit's own settings must decide it."""
    inherited = ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "PYSPARK_SUBMIT_ARGS")
    env = {k: v for k, v in os.environ.items() if k not in inherited}
    env.update(SPARK_HOME=str(SPARK_HOME), SPARK_LOCAL_IP="127.0.0.1")
    return env


class Daemon:
    """One Spark daemon (master or worker) run with spark-class, in its own process group so
    that the executors a worker launches are stopped with it."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.name, self.log = name, log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(SPARK_HOME / "bin" / "spark-class"), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text("utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM to the process group this daemon leads, then SIGKILL if it lingers."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=timeout_s)
                return
            except subprocess.TimeoutExpired:
                continue


def _alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as reply:
            return int(json.load(reply)["aliveworkers"])
    except (OSError, ValueError, KeyError):
        return 0


@dataclass
class Cluster:
    url: str
    ui_port: int
    work_dir: Path
    daemons: list[Daemon]

    def wait_ready(self) -> None:
        """Until the worker has registered with the master (the daemons boot meanwhile)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while _alive_workers(self.ui_port) < 1:
            for daemon in self.daemons:
                if not daemon.alive():
                    pytest.fail(f"Spark {daemon.name} exited:\n{daemon.tail()}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"no worker registered in {START_TIMEOUT_S:.0f}s:\n"
                    + "\n".join(d.tail() for d in self.daemons)
                )
            time.sleep(0.5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A standalone master and one worker (1 core, 1 GB), started here and stopped at the end
    even on failure; ``wait_ready`` before submitting."""
    home = tmp_path_factory.mktemp("spark-cluster")
    port, ui_port, worker_ui = free_port(), free_port(), free_port()
    env = spark_env()
    # No REST submission server: it would take the fixed port 6066.
    env["SPARK_MASTER_OPTS"] = "-Dspark.master.rest.enabled=false"
    env["SPARK_DAEMON_MEMORY"] = "512m"
    url = f"spark://127.0.0.1:{port}"
    daemons: list[Daemon] = []
    try:
        daemons.append(
            Daemon(
                "master",
                [
                    "org.apache.spark.deploy.master.Master",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--webui-port",
                    str(ui_port),
                ],
                home / "master.log",
                env,
            )
        )
        daemons.append(
            Daemon(
                "worker",
                [
                    "org.apache.spark.deploy.worker.Worker",
                    url,
                    "--host",
                    "127.0.0.1",
                    "--cores",
                    "1",
                    "--memory",
                    "1g",
                    "--webui-port",
                    str(worker_ui),
                    "--work-dir",
                    str(home / "work"),
                ],
                home / "worker.log",
                env,
            )
        )
        yield Cluster(url, ui_port, home / "work", daemons)
    finally:
        for daemon in reversed(daemons):
            daemon.stop()


@pytest.fixture(scope="module")
def dist() -> Path:
    """scripts/package's output (the executors' venv and archive are reused when unchanged)."""
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "package"), str(DIST)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return DIST


class Submission:
    """A running spark-submit of an entry script to the cluster, as docs/cluster.md shows."""

    def __init__(
        self, cluster: Cluster, dist: Path, script: str, config: Path, *options: str, log: Path
    ) -> None:
        jars = ",".join(str(j) for j in sorted((dist / "jars").glob("*.jar")))
        cmd = [
            str(SPARK_HOME / "bin" / "spark-submit"),
            "--master",
            cluster.url,
            "--deploy-mode",
            "client",
            "--driver-memory",
            "1g",
            "--driver-java-options",
            "-Xss16m",
            # One worker with one core and 1 GB: one executor that fits it.
            "--executor-memory",
            "1g",
            "--executor-cores",
            "1",
            "--total-executor-cores",
            "1",
            "--jars",
            jars,
            "--archives",
            f"{dist / 'streamrec-pyenv.tar.gz'}#environment",
            "--conf",
            "spark.pyspark.python=./environment/bin/python",
            "--conf",
            f"spark.pyspark.driver.python={sys.executable}",
            "--conf",
            "spark.ui.enabled=false",
            str(dist / script),
            "--config",
            str(config),
            *options,
        ]
        self.script, self.log = script, log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=spark_env(), cwd=log.parent
            )

    def stop(self) -> None:
        """Kill it if it still runs (the test failed meanwhile)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def wait(self) -> str:
        """Its output, once it has exited 0."""
        try:
            code = self.proc.wait(timeout=SUBMIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.stop()
            code = None
        output = self.log.read_text("utf-8", errors="replace")
        assert code == 0, f"{self.script} exited {code}:\n{output[-4000:]}"
        return output


def cluster_config(local: Config, cluster: Cluster, root: Path) -> Config:
    """The local run's config with the cluster's master, its own Redis prefix and folders; the
    stores as file:// URIs, as on a shared file system."""
    return with_overrides(
        local,
        redis=dict(key_prefix=f"{local.redis.key_prefix}c"),
        spark=dict(master=cluster.url, checkpoint_dir=str(root / "spark-checkpoints")),
        paths=dict(
            event_store=(root / "events").as_uri(),
            stream_checkpoint=(root / "checkpoint").as_uri(),
            model_store=(root / "models").as_uri(),
        ),
    )


def write_config(cfg: Config, path: Path) -> Path:
    text, _ = dump_config(cfg)  # no secrets in the test stack
    path.write_text(text, "utf-8")
    return path


def _states(client: redis.Redis, prefix: str, users: list[str]) -> dict[str, tuple]:  # type: ignore[type-arg]
    out = {}
    for user in users:
        state = decode_state(client.hget(L.user_state_key(prefix, user), "state"))
        out[user] = (
            state.events,
            state.types,
            state.last_ms,
            {k: round(v, 9) for k, v in state.weights.items()},
        )
    return out


def _counts(client: redis.Redis, prefix: str) -> dict[str, tuple[int, int]]:
    totals: dict[str, tuple[int, int]] = {}
    for entry in read_recent(client, prefix, count=1000):
        valid, invalid = totals.get(entry["query"], (0, 0))
        totals[entry["query"]] = (valid + int(entry["valid"]), invalid + int(entry["invalid"]))
    return totals


def _event_ids(spark: SparkSession, location: str) -> list[str]:
    return sorted(r[E.EVENT_ID] for r in spark.read.parquet(location).select(E.EVENT_ID).collect())


def test_both_jobs_on_a_standalone_cluster_match_local_mode(
    isolated_cfg: Config,
    spark: SparkSession,
    redis_client: redis.Redis,
    cluster: Cluster,
    dist: Path,
    tmp_path: Path,
) -> None:
    # The holdout evaluation trains a second ALS: not what this test is about.
    local = with_overrides(isolated_cfg, batch=dict(holdout_share=0.0))
    world = SyntheticWorld(users=80, items=60, segments=3, seed=5, new_user_share=0.0)
    events = list(world.events(1500))
    invalid = [malformed(kind, events[i * 31], i) for i, kind in enumerate(KINDS)]
    records: list[object] = list(events)
    for i, bad in enumerate(invalid):
        records.insert(i * 34 + 3, bad)
    sent = publish_events(local, records)  # type: ignore[arg-type]
    assert (sent.sent, sent.injected_invalid) == (len(events), len(invalid))
    users = sorted({e[E.USER_ID] for e in events})

    # The cluster reads the same topic from the beginning, with spark-submit, while local mode
    # runs in this process: the cluster's fixed costs (JVMs, unpacking the Python archive)
    # overlap the local runs instead of adding to them.
    remote = cluster_config(local, cluster, tmp_path / "cluster")
    config = write_config(remote, tmp_path / "cluster.yaml")
    cluster.wait_ready()
    jobs: list[Submission] = []
    started = time.monotonic()
    try:
        jobs.append(
            Submission(
                cluster,
                dist,
                "submit_stream.py",
                config,
                "--available-now",
                log=tmp_path / "submit-stream.log",
            )
        )
        local_stream = run_stream(local, available_now=True, spark=spark)
        assert (local_stream.valid, local_stream.invalid) == (len(events), len(invalid))
        local_batch = run_batch(local, spark=spark)
        assert local_batch.lists_written == len(users)
        local_s = time.monotonic() - started
        stream_log = jobs[0].wait()
        stream_s = time.monotonic() - started
        jobs.append(
            Submission(cluster, dist, "submit_batch.py", config, log=tmp_path / "submit-batch.log")
        )
        jobs[1].wait()
        print(
            f"\nlocal stream + batch {local_s:.0f}s; cluster stream {stream_s:.0f}s, then "
            f"batch {time.monotonic() - started - stream_s:.0f}s"
        )

        # The executors ran the packaged environment: the driver told them to, and each
        # application's executor unpacked the archive in its working directory.
        assert "executors' Python: ./environment/bin/python" in stream_log
        unpacked = sorted(cluster.work_dir.glob("app-*/*/environment/bin/python"))
        assert len(unpacked) >= 2, unpacked

        # Stream: the same counts, event store, dead letters and per-user states.
        prefix_l, prefix_c = local.redis.key_prefix, remote.redis.key_prefix
        assert (
            _counts(redis_client, prefix_c)
            == _counts(redis_client, prefix_l)
            == {LISTS: (len(events), len(invalid)), ARCHIVE: (len(events), len(invalid))}
        )
        assert _event_ids(spark, remote.paths.event_store) == _event_ids(
            spark, local.paths.event_store
        )
        dead = read_topic(local, local.kafka.dead_letter_topic)
        assert len(dead) == 2 * len(invalid)  # each run sent its own, keyed by source offset
        assert set(Counter(r.key for r in dead).values()) == {2}
        assert _states(redis_client, prefix_c, users) == _states(redis_client, prefix_l, users)

        # Batch: the same model inputs and, up to float summation order, the same lists.
        version_c = store.current_version(remote.paths.model_store)
        assert version_c is not None
        meta_c = store.read_meta(remote.paths.model_store, version_c)
        assert (meta_c["users"], meta_c["items"], meta_c["interactions"]) == (
            local_batch.users,
            local_batch.items,
            local_batch.interactions,
        )
        pointer_c, _, lists_c = read_lists(redis_client, prefix_c, users)
        _, _, lists_l = read_lists(redis_client, prefix_l, users)
        assert pointer_c == version_c
        same, overlaps, score_gap = 0, [], 0.0
        for user in users:
            mine, theirs = lists_c[user], lists_l[user]
            assert mine is not None and theirs is not None, user
            assert mine.source == L.SOURCE_BATCH and mine.model_version == version_c
            items_c, items_l = [i for i, _ in mine.items], [i for i, _ in theirs.items]
            same += items_c == items_l
            overlaps.append(len(set(items_c) & set(items_l)) / len(items_l))
            for (item, score), (other, other_score) in zip(mine.items, theirs.items, strict=True):
                if item == other:
                    score_gap = max(score_gap, abs(score - other_score))
        print(
            f"cluster vs local: {same}/{len(users)} identical lists, min overlap "
            f"{min(overlaps):.2f}, max score difference {score_gap:.2e}"
        )
        assert same >= 0.95 * len(users), (same, len(users))
        assert min(overlaps) >= 0.9, overlaps
        assert score_gap <= 1e-3, score_gap
    finally:
        for job in jobs:
            job.stop()
        keys = list(redis_client.scan_iter(match=f"{remote.redis.key_prefix}:*", count=1000))
        if keys:
            redis_client.delete(*keys)
