"""Unit tests of ``streamrec.schemas.config``: the example file, env expansion, and every error
naming the key and the file."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamrec.errors import ConfigError, StreamrecError
from streamrec.schemas.config import ENV_CONFIG_PATH, Config
from streamrec.schemas.config_loader import load_config, parse_config, with_overrides

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "streamrec.example.yaml"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def _example_env_vars() -> set[str]:
    return set(_ENV_REF.findall(EXAMPLE.read_text("utf-8")))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No variable the example file reads, and no $STREAMREC_CONFIG, is set."""
    for name in {*_example_env_vars(), ENV_CONFIG_PATH}:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def write(tmp_path: Path, text: str, name: str = "streamrec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> tuple[str, Path]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value), path


def _leaves(obj: Any, prefix: str = "") -> dict[str, Any]:
    if dataclasses.is_dataclass(obj):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            out.update(_leaves(getattr(obj, f.name), f"{prefix}{f.name}."))
        return out
    return {prefix.rstrip("."): obj}


# --- the example file ------------------------------------------------------------------------


def test_example_file_loads_to_exactly_the_defaults(clean_env: pytest.MonkeyPatch) -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.source == str(EXAMPLE)
    assert dataclasses.replace(cfg, source="") == Config()
    # Equal and of the same type: 90 == 90.0 would hide an int where a float is expected.
    loaded, default = _leaves(cfg), _leaves(Config())
    for key, value in default.items():
        if key != "source":
            assert type(loaded[key]) is type(value), key


def test_example_file_lists_every_key(clean_env: pytest.MonkeyPatch) -> None:
    raw = yaml.safe_load(EXAMPLE.read_text("utf-8"))
    defaults = Config()
    sections = [f.name for f in dataclasses.fields(Config) if f.name != "source"]
    assert list(raw) == sections
    for section in sections:
        fields = [f.name for f in dataclasses.fields(getattr(defaults, section))]
        assert list(raw[section]) == fields, section
    # The weights mapping spells out one weight per event type, in the default order.
    assert list(raw["feedback"]["weights"]) == list(defaults.feedback.weights)


def test_example_file_comments_every_key() -> None:
    lines = EXAMPLE.read_text("utf-8").splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^( {0,2})([a-z_]+):", line)
        if not match:
            continue
        commented = "#" in line or lines[i - 1].lstrip().startswith("#")
        assert commented, f"line {i + 1} has no comment: {line!r}"


def test_example_file_reads_hosts_ports_and_password_from_env(
    clean_env: pytest.MonkeyPatch,
) -> None:
    # docker-compose.yml sets exactly these to point the jobs at its containers.
    clean_env.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    clean_env.setenv("REDIS_HOST", "redis")
    clean_env.setenv("REDIS_PORT", "6379")
    clean_env.setenv("REDIS_PASSWORD", "s3cret: #x")  # YAML punctuation survives the quoting
    cfg = load_config(EXAMPLE)
    assert cfg.kafka.bootstrap_servers == "kafka:9092"
    assert cfg.redis.host == "redis"
    assert cfg.redis.port == 6379
    assert cfg.redis.password == "s3cret: #x"


# --- loading ---------------------------------------------------------------------------------


def test_no_path_and_no_env_gives_defaults(clean_env: pytest.MonkeyPatch) -> None:
    assert load_config() == Config()


def test_path_from_streamrec_config_env(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  partitions: 3\n")
    clean_env.setenv(ENV_CONFIG_PATH, str(path))
    cfg = load_config()
    assert cfg.kafka.partitions == 3
    assert cfg.source == str(path)


def test_empty_file_and_empty_sections_give_defaults(tmp_path: Path) -> None:
    assert dataclasses.replace(load_config(write(tmp_path, "")), source="") == Config()
    cfg = load_config(write(tmp_path, "kafka:\nredis: {}\n", "sections.yaml"))
    assert dataclasses.replace(cfg, source="") == Config()


def test_keys_left_out_keep_their_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "batch:\n  rank: 8\nspark:\n  conf: {a.b: c}\n"))
    assert cfg.batch.rank == 8
    assert cfg.batch.reg_param == Config().batch.reg_param
    assert cfg.spark.conf == {"a.b": "c"}
    assert cfg.kafka == Config().kafka


def test_int_accepted_where_float_expected_and_stored_as_float(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "batch:\n  alpha: 5\n"))
    assert cfg.batch.alpha == 5.0
    assert isinstance(cfg.batch.alpha, float)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        load_config(missing)


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    message, path = load_error(tmp_path, "kafka:\n  partitions: [1, 2\n")
    assert str(path) in message
    assert "YAML" in message


def test_config_error_is_a_streamrec_error() -> None:
    assert issubclass(ConfigError, StreamrecError)


# --- env expansion ---------------------------------------------------------------------------


def test_env_var_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SR_TEST_TOPIC", "my.events")
    monkeypatch.setenv("SR_TEST_PARTITIONS", "6")
    path = write(
        tmp_path, "kafka:\n  events_topic: ${SR_TEST_TOPIC}\n  partitions: ${SR_TEST_PARTITIONS}\n"
    )
    cfg = load_config(path)
    assert cfg.kafka.events_topic == "my.events"
    assert cfg.kafka.partitions == 6


def test_env_default_used_when_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SR_TEST_HOST", raising=False)
    cfg = load_config(write(tmp_path, "redis:\n  host: ${SR_TEST_HOST:-redis.internal}\n"))
    assert cfg.redis.host == "redis.internal"


def test_env_value_wins_over_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SR_TEST_HOST", "10.0.0.7")
    cfg = load_config(write(tmp_path, "redis:\n  host: ${SR_TEST_HOST:-redis.internal}\n"))
    assert cfg.redis.host == "10.0.0.7"


def test_env_expansion_inside_a_longer_value() -> None:
    text = "kafka:\n  bootstrap_servers: ${SR_H:-a}:${SR_P}\n"
    cfg = parse_config(text, "inline.yaml", env={"SR_P": "9092"})
    assert cfg.kafka.bootstrap_servers == "a:9092"


def test_quoted_empty_default_gives_empty_string() -> None:
    cfg = parse_config("redis:\n  password: '${SR_PW:-}'\n", "inline.yaml", env={})
    assert cfg.redis.password == ""


def test_missing_env_var_without_default_names_variable_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SR_TEST_UNSET", raising=False)
    message, path = load_error(tmp_path, "redis:\n  password: ${SR_TEST_UNSET}\n")
    assert "SR_TEST_UNSET" in message
    assert str(path) in message


# --- unknown keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "full_key"),
    [
        ("kafkaa:\n  partitions: 2\n", "kafkaa"),
        ("source: x.yaml\n", "source"),  # set by the loader, never by the file
        ("kafka:\n  bootstrap_server: 127.0.0.1:9092\n", "kafka.bootstrap_server"),
        ("redis:\n  passwd: x\n", "redis.passwd"),
        ("feedback:\n  weight: {play: 1.0}\n", "feedback.weight"),
        ("streaming:\n  topN: 5\n", "streaming.topN"),
    ],
)
def test_unknown_key_names_full_path_and_file(tmp_path: Path, text: str, full_key: str) -> None:
    message, path = load_error(tmp_path, text)
    assert f"'{full_key}'" in message
    assert str(path) in message


# --- bad types -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("kafka:\n  partitions: two\n", "kafka.partitions"),  # string for int
        ("redis:\n  port: '16379'\n", "redis.port"),  # quoted string for int
        ("redis:\n  port: true\n", "redis.port"),  # bool for int
        ("batch:\n  rank: 8.0\n", "batch.rank"),  # float for int
        ("lists:\n  ttl_seconds:\n", "lists.ttl_seconds"),  # null for int
        ("batch:\n  alpha: high\n", "batch.alpha"),  # string for float
        ("batch:\n  reg_param: false\n", "batch.reg_param"),  # bool for float
        ("batch:\n  implicit: 1\n", "batch.implicit"),  # int for bool
        ("redis:\n  host: [a, b]\n", "redis.host"),  # list for string
        ("redis:\n  host: {a: 1}\n", "redis.host"),  # mapping for string
        ("redis:\n  key_prefix: true\n", "redis.key_prefix"),  # bool for string
        ("kafka: [a, b]\n", "kafka"),  # list for mapping
        ("kafka: 7\n", "kafka"),  # scalar for mapping
        ("feedback:\n  weights: [play, click]\n", "feedback.weights"),  # list for mapping
        ("spark:\n  conf: not-a-map\n", "spark.conf"),  # string for mapping
        ("feedback:\n  weights: {play: lots}\n", "feedback.weights.play"),  # bad mapping value
        ("spark:\n  conf: {spark.ui.enabled: [x]}\n", "spark.conf.spark.ui.enabled"),
    ],
)
def test_bad_type_names_key_and_file(tmp_path: Path, text: str, key: str) -> None:
    message, path = load_error(tmp_path, text)
    assert key in message
    assert str(path) in message


def test_top_level_not_a_mapping_names_file(tmp_path: Path) -> None:
    message, path = load_error(tmp_path, "- kafka\n- redis\n")
    assert "top level" in message
    assert str(path) in message


# --- bad values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("redis:\n  port: 0\n", "redis.port"),
        ("redis:\n  port: 65536\n", "redis.port"),
        ("kafka:\n  controller_port: 0\n", "kafka.controller_port"),
        ("kafka:\n  partitions: 0\n", "kafka.partitions"),
        ("kafka:\n  partitions: -1\n", "kafka.partitions"),
        ("kafka:\n  bootstrap_servers: localhost\n", "kafka.bootstrap_servers"),
        ("kafka:\n  events_topic: t\n  dead_letter_topic: t\n", "kafka.dead_letter_topic"),
        ("kafka:\n  dead_letter_topic: streamrec.events\n", "kafka.dead_letter_topic"),
        ("feedback:\n  weights: {play: 1.0, listen: 2.0}\n", "feedback.weights.listen"),
        ("redis:\n  key_prefix: 'streamrec:'\n", "redis.key_prefix"),
        ("redis:\n  key_prefix: ''\n", "redis.key_prefix"),
        ("redis:\n  cluster: true\n  db: 1\n", "redis.db"),
        ("streaming:\n  starting_offsets: middle\n", "streaming.starting_offsets"),
        ("streaming:\n  trigger_seconds: -1\n", "streaming.trigger_seconds"),
        ("streaming:\n  max_offsets_per_trigger: 0\n", "streaming.max_offsets_per_trigger"),
        ("streaming:\n  top_n: 0\n", "streaming.top_n"),
        ("batch:\n  rank: 0\n", "batch.rank"),
        ("batch:\n  reg_param: -0.1\n", "batch.reg_param"),
        ("batch:\n  alpha: 0\n", "batch.alpha"),
        ("batch:\n  max_iter: 0\n", "batch.max_iter"),
        ("batch:\n  top_n: 0\n", "batch.top_n"),
        ("lists:\n  ttl_seconds: 0\n", "lists.ttl_seconds"),
        ("spark:\n  shuffle_partitions: 0\n", "spark.shuffle_partitions"),
    ],
)
def test_bad_value_names_key_and_file(tmp_path: Path, text: str, key: str) -> None:
    message, path = load_error(tmp_path, text)
    assert key in message
    assert str(path) in message


def test_edge_values_are_accepted(tmp_path: Path) -> None:
    text = (
        "redis:\n  port: 65535\n  key_prefix: 'a:b'\n"
        "kafka:\n  partitions: 1\n  controller_port: 1\n"
        "streaming:\n  trigger_seconds: 0\n  starting_offsets: latest\n"
        "batch:\n  reg_param: 0\n"
        "feedback:\n  weights: {}\n"
    )
    cfg = load_config(write(tmp_path, text))
    assert cfg.redis.port == 65535
    assert cfg.redis.key_prefix == "a:b"
    assert cfg.feedback.weights == {}


# --- the object ------------------------------------------------------------------------------


def test_config_is_frozen() -> None:
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.kafka.partitions = 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.kafka = cfg.kafka
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.source = "x"


def test_password_never_in_repr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SR_TEST_PW", "hunter2-very-secret")
    cfg = load_config(write(tmp_path, "redis:\n  password: '${SR_TEST_PW}'\n"))
    assert cfg.redis.password == "hunter2-very-secret"
    for text in (repr(cfg), str(cfg), repr(cfg.redis), str(cfg.redis)):
        assert "hunter2-very-secret" not in text


def test_with_overrides_replaces_only_the_named_keys() -> None:
    base = Config()
    cfg = with_overrides(base, kafka={"events_topic": "t1"}, redis={"key_prefix": "p1"})
    assert cfg.kafka.events_topic == "t1"
    assert cfg.redis.key_prefix == "p1"
    assert cfg.kafka.partitions == base.kafka.partitions
    assert cfg.batch == base.batch
    assert base.kafka.events_topic == "streamrec.events"  # the original is untouched


# --- regressions: env expansion and encoding edge cases found in review ---------------------


# Regression (schemas/config.py, expand_env + parse_config): env expansion is textual, before YAML
# parsing. `password: ${REDIS_PASSWORD:-}` (the form the CLI --help epilog advertises) becomes
# `password: ` -> YAML null -> "redis.password must be a string, got None".
def test_unquoted_empty_default_gives_empty_string() -> None:
    cfg = parse_config("redis:\n  password: ${REDIS_PASSWORD:-}\n", "inline.yaml", env={})
    assert cfg.redis.password == ""


# Regression (schemas/config.py, expand_env + parse_config): the value of an env var is re-read
# as YAML,
# so REDIS_PASSWORD=0123 becomes the octal int 83 -> "83", and "p #x" is cut to "p" at the '#'.
@pytest.mark.parametrize("secret", ["0123", "p #x"])
def test_env_value_is_taken_verbatim(secret: str) -> None:
    env = {"REDIS_PASSWORD": secret}
    cfg = parse_config("redis:\n  password: ${REDIS_PASSWORD}\n", "inline.yaml", env=env)
    assert cfg.redis.password == secret


# Regression (schemas/config.py, expand_env): comments are expanded too, so a commented-out line
# that
# names a required variable makes the whole file fail to load when that variable is unset.
def test_env_reference_in_a_comment_is_ignored() -> None:
    text = "# redis:\n#   password: ${SR_TEST_UNSET_IN_COMMENT}\nkafka:\n  partitions: 2\n"
    cfg = parse_config(text, "inline.yaml", env={})
    assert cfg.kafka.partitions == 2


# Regression (schemas/config.py, expand_env line `if name in env`): `${VAR:-default}` keeps an empty
# VAR, where the shell and docker compose (whose syntax it borrows) use the default when VAR is
# unset *or empty*; REDIS_PORT= then gives "redis.port must be an integer, got None".
def test_env_default_used_when_set_but_empty() -> None:
    text = "redis:\n  port: ${REDIS_PORT:-16379}\n"
    cfg = parse_config(text, "inline.yaml", env={"REDIS_PORT": ""})
    assert cfg.redis.port == 16379


# Regression (schemas/config.py, load_config `file.read_text("utf-8")`): a file that is not UTF-8
# raises
# a bare UnicodeDecodeError that names neither the file nor the problem, not a ConfigError.
def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("# café\nkafka: {}\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_config(path)


# --- lookup: Redis auth/TLS, the serve section, hash-tag-safe prefixes ------------------------


@pytest.mark.parametrize("prefix", ["a{b", "a}b", "{app}"])
def test_braces_in_key_prefix_are_refused_naming_key_and_file(tmp_path: Path, prefix: str) -> None:
    message, path = load_error(tmp_path, f"redis:\n  key_prefix: '{prefix}'\n")
    assert "redis.key_prefix" in message and str(path) in message and "hash tag" in message


def test_api_key_written_in_the_file_is_refused(tmp_path: Path) -> None:
    message, path = load_error(tmp_path, "serve:\n  api_key: hunter2\n")
    assert "serve.api_key" in message and str(path) in message and "environment" in message
    assert "hunter2" not in message


def test_secrets_from_env_never_in_repr_or_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    monkeypatch.setenv("SR_TEST_KEY", "api-key-very-secret")
    monkeypatch.setenv("SR_TEST_PW", "redis-pw-very-secret")
    text = (
        "redis:\n  password: '${SR_TEST_PW}'\n  username: app\n"
        "serve:\n  api_key: '${SR_TEST_KEY}'\n"
    )
    cfg = load_config(write(tmp_path, text))
    assert cfg.serve.api_key == "api-key-very-secret" and cfg.redis.username == "app"
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("streamrec.test").info("config %s %r", cfg, cfg)
    for shown in (repr(cfg), str(cfg), caplog.text):
        assert "very-secret" not in shown
        assert "username='app'" in shown


def test_tls_files_need_tls(tmp_path: Path) -> None:
    message, _ = load_error(tmp_path, "redis:\n  tls_ca_file: ca.pem\n")
    assert "redis.tls_ca_file" in message
    message, _ = load_error(tmp_path, "redis:\n  tls: true\n  tls_cert_file: c.pem\n")
    assert "redis.tls_key_file" in message
    cfg = load_config(write(tmp_path, "redis:\n  tls: true\n  tls_ca_file: ca.pem\n"))
    assert cfg.redis.tls and cfg.redis.tls_ca_file == "ca.pem"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("serve:\n  port: 0\n", "serve.port"),
        ("serve:\n  default_n: 0\n", "serve.default_n"),
        ("serve:\n  default_n: 20\n  max_n: 10\n", "serve.max_n"),
    ],
)
def test_serve_values_checked(tmp_path: Path, text: str, key: str) -> None:
    message, path = load_error(tmp_path, text)
    assert key in message and str(path) in message


def test_dump_config_round_trips_with_secrets_only_in_the_environment() -> None:
    from streamrec.schemas.config_loader import dump_config

    cfg = with_overrides(
        Config(),
        redis={"password": "pw-0123 #x", "key_prefix": "p:ü", "port": 1234},
        serve={"api_key": "key-secret", "port": 9000},
        spark={"conf": {"spark.ui.enabled": "false"}},
    )
    text, env = dump_config(cfg)
    assert "pw-0123" not in text and "key-secret" not in text
    assert env == {
        "REDIS_PASSWORD": "pw-0123 #x",
        "STREAMREC_API_KEY": "key-secret",
        "KAFKA_SASL_PASSWORD": "",
    }
    assert dataclasses.replace(parse_config(text, "dumped.yaml", env=env), source="") == cfg


def test_the_environment_configures_without_a_file() -> None:
    env = {
        "REDIS_HOST": "redis.internal",
        "STREAMREC_REDIS__PORT": "6380",
        "STREAMREC_API_KEY": "key-secret",
        "STREAMREC_BATCH__TUNE_RANKS": "8,16",
        "STREAMREC_STREAMING__TRIGGER_SECONDS": "0.5",
    }
    cfg = load_config(None, env=env)
    assert (cfg.redis.host, cfg.redis.port) == ("redis.internal", 6380)
    assert cfg.serve.api_key == "key-secret"
    assert cfg.batch.tune_ranks == (8, 16)
    assert cfg.streaming.trigger_seconds == 0.5
    assert "key-secret" not in repr(cfg)  # secrets never reach a log line through the config


def test_the_environment_wins_over_the_file_and_the_prefixed_name_over_the_alias(
    tmp_path: Path,
) -> None:
    file = tmp_path / "streamrec.yaml"
    file.write_text("redis:\n  host: from-file\n  port: 7000\nkafka:\n  partitions: 3\n")
    env = {"REDIS_HOST": "alias", "STREAMREC_REDIS__HOST": "prefixed", "REDIS_PORT": ""}
    cfg = load_config(str(file), env=env)
    assert (cfg.redis.host, cfg.redis.port, cfg.kafka.partitions) == ("prefixed", 7000, 3)
    assert load_config(None, env={}) == Config()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STREAMREC_REDIS__PORTT": "1"}, "STREAMREC_REDIS__PORTT: no key redis.portt"),
        ({"STREAMREC_NOPE__X": "1"}, "STREAMREC_NOPE__X: no config section 'nope'"),
        ({"REDIS_PORT": "six"}, "REDIS_PORT: redis.port must be an integer"),
        ({"STREAMREC_FEEDBACK__WEIGHTS": "play=1"}, "is a mapping: set it in a config file"),
        ({"STREAMREC_REDIS__PORT": "70000"}, "redis.port must be a TCP port"),
    ],
)
def test_a_bad_environment_value_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, env=env)


def test_help_lists_every_environment_override() -> None:
    from typing import get_origin, get_type_hints

    from streamrec.cli import build_parser
    from streamrec.schemas.config_loader import ENV_ALIASES, env_override_name

    text = " ".join(build_parser().format_help().split())
    for section, section_type in get_type_hints(Config).items():
        if section == "source":
            continue
        for key, hint in get_type_hints(section_type).items():
            if get_origin(hint) is not dict:
                assert env_override_name(section, key) in text
    assert all(var in text for var in ENV_ALIASES)
