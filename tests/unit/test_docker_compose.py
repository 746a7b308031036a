"""Structure of docker-compose.yml and the Dockerfile of its image. No Docker engine runs here, so
this checks what can be checked without one: the services and their wiring, that names and ports
equal the config defaults the local stack and the example config use, and that the image is
built from the wheel's sources with the connector jars where the config looks for them."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamrec.schemas.config import Config, load_config

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
EXAMPLE_CONFIG = ROOT / "config" / "streamrec.example.yaml"
CFG = Config()
JOBS = ("streaming", "batch")
# Every service that runs the streamrec image.
STREAMREC = (*JOBS, "serve")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text("utf-8"))
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = compose["services"]
    return result


_COMPOSE_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):-([^}]*)\}")


def env_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, compose's ${VAR:-default} read as with VAR unset on the host."""
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


def host_and_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def listeners(value: str) -> dict[str, str]:
    """'NAME://host:port,...' -> {NAME: 'host:port'}."""
    out = {}
    for item in value.split(","):
        name, _, address = item.partition("://")
        out[name.strip()] = address
    return out


def script_commands(service: dict[str, Any]) -> list[list[str]]:
    """The shell commands of a `sh -c` service, line continuations joined, compose's `$$`
    unescaped, each split into words."""
    command = service["command"]
    assert command[0] == "sh" and command[1].startswith("-") and "c" in command[1]
    script = command[2].replace("$$", "$").replace("\\\n", " ")
    return [shlex.split(line) for line in script.splitlines() if line.strip()]


# --- services and wiring ---------------------------------------------------------------------


def test_services_exist(services: dict[str, Any]) -> None:
    assert set(services) == {"kafka", "kafka-init", "redis", "streaming", "batch", "serve"}


def test_healthchecks_on_kafka_and_redis(services: dict[str, Any]) -> None:
    kafka_test = services["kafka"]["healthcheck"]["test"]
    assert kafka_test[0] == "CMD"
    assert kafka_test[1] == "/opt/kafka/bin/kafka-broker-api-versions.sh"
    assert "--bootstrap-server" in kafka_test
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_depends_on_conditions(services: dict[str, Any]) -> None:
    def deps(name: str) -> dict[str, str]:
        return {k: v["condition"] for k, v in services[name]["depends_on"].items()}

    assert deps("kafka-init") == {"kafka": "service_healthy"}
    assert deps("streaming") == {
        "kafka": "service_healthy",
        "kafka-init": "service_completed_successfully",
        "redis": "service_healthy",
    }
    assert deps("batch") == {
        "kafka-init": "service_completed_successfully",
        "redis": "service_healthy",
    }
    assert deps("serve") == {"redis": "service_healthy"}  # lookups need Redis only


def test_depends_on_conditions_are_satisfiable(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for dep, spec in service.get("depends_on", {}).items():
            assert dep in services, (name, dep)
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], (name, dep)
            if spec["condition"] == "service_completed_successfully":
                # A one-shot: restarting it would never let it complete.
                assert services[dep].get("restart", "no") == "no", (name, dep)


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for spec in service.get("volumes", []):
            source = str(spec).split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, (name, source)


# --- Kafka -----------------------------------------------------------------------------------


def test_kafka_image_is_apache_kafka_kraft(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    assert kafka["image"] == "apache/kafka:4.3.1"
    env = env_of(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id = env["KAFKA_NODE_ID"]
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    voter_id, _, voter_address = voters.partition("@")
    assert voter_id == node_id
    assert "ZOOKEEPER" not in " ".join(env)
    # The voter is this node's controller listener.
    _, voter_port = host_and_port(voter_address)
    _, controller_port = host_and_port(listeners(env["KAFKA_LISTENERS"])[controller])
    assert voter_port == controller_port


def test_kafka_listeners_for_containers_and_host(services: dict[str, Any]) -> None:
    env = env_of(services["kafka"])
    bound = listeners(env["KAFKA_LISTENERS"])
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocol_map = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert set(protocol_map) == set(bound)
    assert controller in bound and controller not in advertised
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    assert len(advertised) == 2
    # One for containers at kafka:9092 ...
    assert "kafka:9092" in advertised.values()
    # ... one for the host, on the port of the config's default bootstrap_servers.
    host, port = host_and_port(CFG.kafka.bootstrap_servers)
    assert f"{host}:{port}" in advertised.values()
    # Each advertised listener is bound on the same port.
    for name, address in advertised.items():
        assert host_and_port(bound[name])[1] == host_and_port(address)[1], name


def test_kafka_host_port_matches_config(services: dict[str, Any]) -> None:
    _, port = host_and_port(CFG.kafka.bootstrap_servers)
    assert published(services["kafka"]) == {port: port}


def test_kafka_replication_factors_are_one(services: dict[str, Any]) -> None:
    env = env_of(services["kafka"])
    factors = {k: v for k, v in env.items() if k.endswith(("_REPLICATION_FACTOR", "_MIN_ISR"))}
    assert {
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    } <= set(factors)
    assert set(factors.values()) == {"1"}


def test_kafka_does_not_auto_create_topics(services: dict[str, Any]) -> None:
    assert env_of(services["kafka"])["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


# --- topic creation --------------------------------------------------------------------------


def _created_topics(services: dict[str, Any]) -> dict[str, dict[str, Any]]:
    topics: dict[str, dict[str, Any]] = {}
    for words in script_commands(services["kafka-init"]):
        if "--create" not in words:
            continue
        assert words[0].endswith("kafka-topics.sh") or words[0] == "$topics"
        assert "--if-not-exists" in words  # re-running `up` must not fail
        name = words[words.index("--topic") + 1]
        configs = [words[i + 1] for i, w in enumerate(words) if w == "--config"]
        topics[name] = {
            "partitions": int(words[words.index("--partitions") + 1]),
            "replication_factor": int(words[words.index("--replication-factor") + 1]),
            "configs": dict(c.split("=", 1) for c in configs),
            "bootstrap": words[words.index("--bootstrap-server") + 1],
        }
    return topics


def test_kafka_init_creates_the_config_topics(services: dict[str, Any]) -> None:
    topics = _created_topics(services)
    assert set(topics) == {CFG.kafka.events_topic, CFG.kafka.dead_letter_topic}
    for spec in topics.values():
        assert spec["partitions"] == CFG.kafka.partitions
        assert spec["replication_factor"] == 1
        assert spec["bootstrap"] == "kafka:9092"
    assert topics[CFG.kafka.events_topic]["configs"] == {"message.timestamp.type": "LogAppendTime"}
    assert topics[CFG.kafka.dead_letter_topic]["configs"] == {"cleanup.policy": "compact"}


# kafka-python, imported by kafka_topics, warns about its own use of importlib.resources.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_kafka_init_matches_what_the_jobs_would_create(services: dict[str, Any]) -> None:
    from streamrec.kafka_topics import DEAD_LETTER_TOPIC_CONFIG, EVENTS_TOPIC_CONFIG

    topics = _created_topics(services)
    assert topics[CFG.kafka.dead_letter_topic]["configs"] == DEAD_LETTER_TOPIC_CONFIG
    assert topics[CFG.kafka.events_topic]["configs"] == EVENTS_TOPIC_CONFIG


def test_kafka_init_is_a_one_shot_on_the_kafka_image(services: dict[str, Any]) -> None:
    init = services["kafka-init"]
    assert init["image"] == services["kafka"]["image"]
    assert init.get("restart", "no") == "no"
    assert init["command"][1] == "-ec"  # the first failing command fails the service


# --- Redis -----------------------------------------------------------------------------------


def test_redis_image_and_port(services: dict[str, Any]) -> None:
    redis = services["redis"]
    assert redis["image"] == "redis:7"
    assert published(redis) == {6379: CFG.redis.port}


# --- the jobs --------------------------------------------------------------------------------


@pytest.mark.parametrize("job", STREAMREC)
def test_jobs_use_the_streamrec_image_and_the_example_config(
    services: dict[str, Any], job: str
) -> None:
    service = services[job]
    assert service["image"] == "streamrec:latest"
    # `docker compose build` builds it from this repository's Dockerfile.
    assert service["build"] == {"context": ".", "dockerfile": DOCKERFILE.name}
    env = env_of(service)
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in service["volumes"]}
    assert mounts[env["STREAMREC_CONFIG"]] == "./config/streamrec.example.yaml"
    assert EXAMPLE_CONFIG.is_file()


@pytest.mark.parametrize("job", STREAMREC)
def test_jobs_point_the_example_config_at_the_containers(
    services: dict[str, Any], job: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = env_of(services[job])
    kafka_env = env_of(services["kafka"])
    assert (
        env["KAFKA_BOOTSTRAP_SERVERS"]
        in listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"]).values()
    )
    assert env["REDIS_HOST"] == "redis"
    assert int(env["REDIS_PORT"]) in published(services["redis"])
    # The example config, read with this environment, reaches those containers.
    monkeypatch.delenv("REDIS_PASSWORD", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cfg = load_config(ROOT / "config" / "streamrec.example.yaml")
    assert cfg.kafka.bootstrap_servers == env["KAFKA_BOOTSTRAP_SERVERS"]
    assert (cfg.redis.host, cfg.redis.port) == ("redis", int(env["REDIS_PORT"]))


def _state_volume(service: dict[str, Any]) -> tuple[str, str]:
    """(volume, mount point) of the service's named volume."""
    (mount,) = [
        str(v).split(":")[:2] for v in service["volumes"] if not str(v).startswith((".", "/"))
    ]
    return mount[0], mount[1]


def test_jobs_share_the_state_volume_that_holds_the_config_paths(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    volume, mount = _state_volume(services["streaming"])
    assert _state_volume(services["batch"]) == (volume, mount)
    working_dir = services["streaming"]["working_dir"]
    assert services["batch"]["working_dir"] == working_dir
    # Every relative path of the example config resolves inside that volume: the batch job
    # trains on the event store the streaming job writes, and models outlive containers.
    monkeypatch.delenv("REDIS_PASSWORD", raising=False)
    cfg = load_config(EXAMPLE_CONFIG)
    relative = mount.removeprefix(working_dir.rstrip("/") + "/")
    assert relative != mount, (mount, working_dir)
    for path in (
        cfg.paths.event_store,
        cfg.paths.stream_checkpoint,
        cfg.paths.model_store,
        cfg.spark.checkpoint_dir,
        cfg.stack.home,
    ):
        assert not Path(path).is_absolute() and Path(path).parts[0] == relative, path


def test_streaming_runs_the_stream_command(services: dict[str, Any]) -> None:
    assert services["streaming"]["command"] == ["streamrec", "stream"]


def test_batch_runs_periodically(services: dict[str, Any]) -> None:
    commands = script_commands(services["batch"])
    assert ["streamrec", "batch", "run"] in commands
    assert any(words and words[0] == "sleep" for words in commands)
    assert commands[0][:2] == ["while", "true;"]


# --- the lookup server -----------------------------------------------------------------------


def test_serve_listens_on_the_config_port_on_every_interface(services: dict[str, Any]) -> None:
    serve = services["serve"]
    command = serve["command"]
    assert command[:2] == ["streamrec", "serve"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    # The port is the config's serve.port (no --port), published on the host's loopback.
    assert "--port" not in command
    assert published(serve) == {CFG.serve.port: CFG.serve.port}
    assert str(serve["ports"][0]).startswith("127.0.0.1:")


def test_serve_healthcheck_gets_health_on_the_config_port(services: dict[str, Any]) -> None:
    test = services["serve"]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python" and test[2] == "-c"
    # urlopen raises on any status but 2xx, so a 503 (Redis down) fails the check.
    (url,) = re.findall(r"'(http://[^']+)'", test[3])
    assert url == f"http://127.0.0.1:{CFG.serve.port}/health"
    assert "urllib.request.urlopen(" in test[3] and "timeout=" in test[3]
    assert services["serve"].get("restart") == "unless-stopped"


def test_example_config_serve_port_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_PASSWORD", raising=False)
    monkeypatch.delenv("STREAMREC_API_KEY", raising=False)
    assert load_config(EXAMPLE_CONFIG).serve.port == CFG.serve.port


# --- the image -------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each a list of (INSTRUCTION, arguments), continuations joined."""
    text = DOCKERFILE.read_text("utf-8")
    lines = [
        line
        for line in text.replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    stages: list[list[tuple[str, str]]] = []
    for line in lines:
        word, _, rest = line.strip().partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word.upper(), rest.strip()))
    return stages


def test_dockerfile_is_python_311_slim_with_java_17() -> None:
    text = DOCKERFILE.read_text("utf-8")
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, flags=re.M)
    # bookworm, because Debian 13 (the plain slim tag) has no Java 17.
    assert base == "python:3.11-slim-bookworm"
    runtime = dockerfile_stages()[0]
    assert runtime[0] == ("FROM", "${PYTHON_IMAGE} AS runtime")
    assert any(i == "RUN" and "openjdk-17-jre-headless" in a for i, a in runtime)


def test_dockerfile_builds_and_installs_the_wheel_with_the_connector_jars() -> None:
    build, final = dockerfile_stages()[1], dockerfile_stages()[-1]
    assert build[0][1] == "runtime AS build"
    runs = " ".join(a for i, a in build if i == "RUN")
    assert "pip wheel" in runs and "--no-deps" in runs
    # the wheel with its `jobs` extra: the image runs the jobs, not only the lookup client
    assert re.search(r"pip install \S* ?\"\$\(ls /wheels/streamrec-\*\.whl\)\[jobs\]\"", runs), runs
    # The connector jars come from streamrec's own resolver (Maven, at build time), into the
    # cache the example config names, relative to the working directory of the services.
    assert "spark_connector_jars('.cache')" in runs
    workdirs = [a for i, a in build if i == "WORKDIR"]
    assert workdirs[-1] == "/opt/streamrec"
    assert final[0] == ("FROM", "runtime")
    copies = [a for i, a in final if i == "COPY"]
    assert "--from=build /opt/venv /opt/venv" in copies
    assert "--from=build /opt/streamrec/.cache/maven /opt/streamrec/.cache/maven" in copies
    assert ("WORKDIR", "/opt/streamrec") in final
    assert any(i == "ENV" and a.startswith("PATH=/opt/venv/bin:") for i, a in final)


def test_image_paths_match_the_compose_services_and_config(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    final = dockerfile_stages()[-1]
    (workdir,) = [a for i, a in final if i == "WORKDIR"]
    monkeypatch.delenv("REDIS_PASSWORD", raising=False)
    cfg = load_config(EXAMPLE_CONFIG)
    for name in STREAMREC:
        assert services[name]["working_dir"] == workdir
    assert cfg.stack.cache_dir == ".cache"  # /opt/streamrec/.cache/maven: the image's jars
    # The state volume's mount point exists in the image, owned by the user the image runs as.
    _, mount = _state_volume(services["streaming"])
    (user,) = [a for i, a in final if i == "USER"]
    setup = " ".join(a for i, a in final if i == "RUN")
    folder = mount.removeprefix(workdir + "/")
    assert f"mkdir {folder}" in setup and f"chown {user} {folder}" in setup


def test_docker_build_context_holds_every_package_of_the_wheel() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    folders = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    copied = [
        a.split()[:-1]
        for stage in dockerfile_stages()
        for i, a in stage
        if i == "COPY" and not a.startswith("--from")
    ]
    copies = {source for sources in copied for source in sources}
    ignore = (ROOT / ".dockerignore").read_text("utf-8").splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore  # everything else (the venv, caches, dist/) stays out of the context
    for folder in folders:
        assert folder in copies and folder in allowed, folder
    for needed in ("pyproject.toml", pyproject["project"]["readme"]):
        assert needed in copies and needed in allowed, needed
