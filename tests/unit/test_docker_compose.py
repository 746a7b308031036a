"""What docker-compose.yml and its image's Dockerfile must get right, checked without a Docker
engine: every service can start (what it waits for exists and can become ready), the jobs reach
the broker and Redis through the example config, the topics are the ones the jobs would create,
the jobs share the state their config paths point into, and the image holds the wheel and the
connector jars where the config looks. The file's wording is free to change."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import load_config

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
EXAMPLE_CONFIG = ROOT / "config" / "streamrec.example.yaml"
DEFAULTS = Config()
# compose's ${VAR:-default}, read as with VAR unset on the host.
_COMPOSE_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):-([^}]*)\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text("utf-8"))
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = compose["services"]
    return result


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): _COMPOSE_VAR.sub(lambda m: m.group(2), str(v)) for k, v in env.items()}


def published(service: dict[str, Any]) -> dict[int, int]:
    """{container port: host port} of the short-syntax port mappings."""
    out = {}
    for spec in service.get("ports", []):
        parts = str(spec).split(":")
        out[int(parts[-1])] = int(parts[-2])
    return out


def listeners(value: str) -> dict[str, str]:
    """'NAME://host:port,...' -> {NAME: 'host:port'}."""
    return {
        name.strip(): address for name, _, address in (i.partition("://") for i in value.split(","))
    }


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def streamrec_services(services: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run streamrec itself (from the image the Dockerfile builds)."""
    return {name: s for name, s in services.items() if s.get("build", {}).get("dockerfile")}


def config_seen_by(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Config:
    """The config the service loads: the file mounted at STREAMREC_CONFIG, read with the
    service's environment."""
    env = env_of(service)
    mounts = dict(reversed(str(v).split(":")[:2]) for v in service.get("volumes", []))
    source = mounts[env["STREAMREC_CONFIG"]]
    for name in ("REDIS_PASSWORD", "STREAMREC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_config(ROOT / source)


def test_every_service_can_start(compose: dict[str, Any], services: dict[str, Any]) -> None:
    commands = [s["command"] for s in streamrec_services(services).values()]
    for job in ("stream", "serve"):  # the batch job runs in a loop of shell commands
        assert sum(job in command for command in commands) == 1, job
    assert any("streamrec batch run" in " ".join(command) for command in commands)
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for dep, spec in service.get("depends_on", {}).items():
            assert dep in services, (name, dep)
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], (name, dep)
            if spec["condition"] == "service_completed_successfully":
                # a one-shot: restarted, it would never complete
                assert services[dep].get("restart", "no") == "no", (name, dep)
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            assert source.startswith((".", "/")) or source in declared, (name, source)


def test_the_broker_is_one_kraft_node_reachable_from_containers_and_host(
    services: dict[str, Any],
) -> None:
    (broker,) = [s for s in services.values() if "KAFKA_PROCESS_ROLES" in env_of(s)]
    env = env_of(broker)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    bound = listeners(env["KAFKA_LISTENERS"])
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")[2]
    assert port_of(voter) == port_of(bound[env["KAFKA_CONTROLLER_LISTENER_NAMES"]])
    for name, address in advertised.items():  # every advertised listener is bound
        assert port_of(bound[name]) == port_of(address), name
    # the host reaches it on the config's default bootstrap port
    host_port = port_of(DEFAULTS.kafka.bootstrap_servers)
    assert published(broker) == {host_port: host_port}
    assert DEFAULTS.kafka.bootstrap_servers in advertised.values()
    # a single node: every internal topic with one replica, and no topic created by accident
    factors = {k: v for k, v in env.items() if k.endswith(("_REPLICATION_FACTOR", "_MIN_ISR"))}
    assert factors and set(factors.values()) == {"1"}
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def created_topics(services: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The topics some one-shot service creates with kafka-topics.sh --create."""
    topics: dict[str, dict[str, Any]] = {}
    for service in services.values():
        command = service.get("command")
        if not (isinstance(command, list) and command[0] == "sh"):
            continue
        script = command[2].replace("$$", "$").replace("\\\n", " ")
        for words in (shlex.split(line) for line in script.splitlines() if line.strip()):
            if "--create" not in words:
                continue
            assert "--if-not-exists" in words  # a second `up` must not fail
            configs = [words[i + 1] for i, w in enumerate(words) if w == "--config"]
            topics[words[words.index("--topic") + 1]] = {
                "num_partitions": int(words[words.index("--partitions") + 1]),
                "replication_factor": int(words[words.index("--replication-factor") + 1]),
                "configs": dict(c.split("=", 1) for c in configs),
            }
    return topics


# kafka-python, imported by kafka_topics, warns about its own use of importlib.resources.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_topics_are_the_ones_the_jobs_would_create(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamrec.kafka_topics import wanted_topics

    (stream,) = [s for s in streamrec_services(services).values() if "stream" in s["command"]]
    assert created_topics(services) == wanted_topics(config_seen_by(stream, monkeypatch).kafka)


def test_the_jobs_reach_the_broker_and_redis_through_the_example_config(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    advertised = {
        address
        for s in services.values()
        if "KAFKA_ADVERTISED_LISTENERS" in env_of(s)
        for address in listeners(env_of(s)["KAFKA_ADVERTISED_LISTENERS"]).values()
    }
    for name, service in streamrec_services(services).items():
        cfg = config_seen_by(service, monkeypatch)
        assert cfg.kafka.bootstrap_servers in advertised, name
        assert cfg.redis.host in services, name
        redis = services[cfg.redis.host]
        assert cfg.redis.port in published(redis) and "healthcheck" in redis, name
        assert service["depends_on"][cfg.redis.host]["condition"] == "service_healthy", name


def test_the_jobs_share_the_state_their_config_paths_point_into(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, service in streamrec_services(services).items():
        cfg = config_seen_by(service, monkeypatch)
        named = [str(v).split(":")[:2] for v in service["volumes"] if not str(v).startswith(".")]
        if "serve" in service["command"]:
            continue  # lookups read Redis only
        ((volume, mount),) = named
        base = Path(service["working_dir"])
        # every path the job writes lands in the shared volume, so the batch job trains on
        # what the stream stored and models outlive containers
        for path in (
            cfg.paths.event_store,
            cfg.paths.stream_checkpoint,
            cfg.paths.model_store,
            cfg.spark.checkpoint_dir,
        ):
            assert (base / path).is_relative_to(mount), (name, path, mount)
        assert volume == "streamrec-state"


def test_serve_is_published_and_checked_on_its_config_port(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    (serve,) = [s for s in streamrec_services(services).values() if "serve" in s["command"]]
    port = config_seen_by(serve, monkeypatch).serve.port
    assert published(serve) == {port: port}
    assert serve["command"][serve["command"].index("--host") + 1] == "0.0.0.0"
    (url,) = re.findall(r"'(http://[^']+)'", serve["healthcheck"]["test"][-1])
    assert url == f"http://127.0.0.1:{port}/health"  # a 503 (Redis down) fails the check


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each a list of (INSTRUCTION, arguments), continuations joined."""
    text = DOCKERFILE.read_text("utf-8").replace("\\\n", " ")
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        word, _, rest = line.strip().partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word.upper(), rest.strip()))
    return stages


def test_the_image_runs_the_jobs_with_their_jars_where_the_config_looks(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    stages = dockerfile_stages()
    everything = " ".join(a for stage in stages for i, a in stage if i == "RUN")
    assert "openjdk-17-jre-headless" in everything  # Spark's Java
    assert re.search(r"streamrec-\*\.whl\)\[jobs\]", everything)  # the jobs, not the client
    final = stages[-1]
    (workdir,) = [a for i, a in final if i == "WORKDIR"]
    jars = [a.split()[-1] for i, a in final if i == "COPY" and "maven" in a]
    for name, service in streamrec_services(services).items():
        assert service["working_dir"] == workdir, name
        cache = Path(workdir) / config_seen_by(service, monkeypatch).stack.cache_dir
        assert any(Path(j).is_relative_to(cache) for j in jars), (name, cache, jars)


def test_the_build_context_holds_every_package_of_the_wheel() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    folders = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    copied = {
        source
        for stage in dockerfile_stages()
        for i, a in stage
        if i == "COPY" and not a.startswith("--from")
        for source in a.split()[:-1]
    }
    ignore = (ROOT / ".dockerignore").read_text("utf-8").splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore  # the venv, caches and dist/ stay out of the context
    for needed in (*folders, "pyproject.toml", pyproject["project"]["readme"]):
        assert needed in copied and needed in allowed, needed
