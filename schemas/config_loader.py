"""Loading the config: a YAML file (``${VAR}`` and ``${VAR:-default}`` expanded from the
environment), then ``STREAMREC_<SECTION>__<KEY>`` and the documented aliases from the
environment on top, built into the frozen dataclasses of schemas/config.py. Unknown keys and bad
values raise ``ConfigError`` naming the key and the file (or the variable)."""

from __future__ import annotations

import dataclasses
import os
import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from streamrec.errors import ConfigError
from streamrec.schemas.config import (
    ENV_CONFIG_PATH,
    Config,
)
from streamrec.schemas.config_checks import check_values

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class EnvText(str):
    """A string that came from the environment: typed by the key it fills, never re-read as
    YAML (so a password "0123" stays "0123" and "p #x" keeps its "#")."""


def expand_env(text: str, env: dict[str, str], where: str) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in one YAML string value. As in the shell, an
    unset or empty VAR takes the default; unset without a default is an error."""

    def repl(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if value:
            return value
        if default is not None:
            return default
        if value is not None:
            return value
        raise ConfigError(f"{where}: environment variable {name} is not set and has no default")

    return _ENV_PATTERN.sub(repl, text)


def _expand_tree(data: Any, env: dict[str, str], source: str) -> Any:
    # Expansion runs on parsed values, not on the raw text: comments are never expanded and a
    # value cannot change the YAML structure around it.
    if isinstance(data, dict):
        return {k: _expand_tree(v, env, source) for k, v in data.items()}
    if isinstance(data, list):
        return [_expand_tree(v, env, source) for v in data]
    if isinstance(data, str) and _ENV_PATTERN.search(data):
        return EnvText(expand_env(data, env, source))
    return data


def _from_env_text(value: EnvText, hint: Any, key: str, source: str) -> Any:
    text = value.strip()
    try:
        if hint is bool:
            if text.lower() in ("true", "false"):
                return text.lower() == "true"
            raise ValueError(text)
        if hint is int:
            return int(text)
        if hint is float:
            return float(text)
    except ValueError:
        kind = {bool: "true or false", int: "an integer", float: "a number"}[hint]
        raise ConfigError(
            f"{source}: {key} must be {kind}, got {str(value)!r} from the environment"
        ) from None
    return str(value)


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    origin = get_origin(hint)
    if isinstance(value, EnvText) and hint in (bool, int, float, str):
        return _from_env_text(value, hint, key, source)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key, source)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        _, vtype = get_args(hint)
        return {str(k): _coerce(v, vtype, f"{key}.{k}", source) for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{source}: {key} must be a non-empty list, got {value!r}")
        (item_type, _) = get_args(hint)
        return tuple(_coerce(v, item_type, f"{key}[{i}]", source) for i, v in enumerate(value))
    if origin in (Union, types.UnionType):
        raise ConfigError(f"{source}: {key}: union types are not supported in config")
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{source}: {key}: unsupported config type {hint!r}")


def _build(cls: Any, data: Any, prefix: str, source: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix or 'the top level'} must be a mapping, got {data!r}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    for key in data:
        if key not in names:
            full = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(
                f"{source}: unknown key {full!r} (known here: {', '.join(sorted(names))})"
            )
    kwargs = {
        k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k, source) for k, v in data.items()
    }
    return cls(**kwargs)


# Secrets that may only come from the environment, never be written in a (committed) file.
_ENV_ONLY_SECRETS = (
    ("serve", "api_key", "STREAMREC_API_KEY"),
    ("kafka", "sasl_password", "KAFKA_SASL_PASSWORD"),
)


def _check_secrets_from_env(data: Any, source: str) -> None:
    if not isinstance(data, dict):
        return
    for section, key, example in _ENV_ONLY_SECRETS:
        values = data.get(section)
        value = values.get(key) if isinstance(values, dict) else None
        if value and not isinstance(value, EnvText):
            raise ConfigError(
                f"{source}: {section}.{key} must come from the environment, not be written in the "
                f"file: use {section}.{key}: '${{{example}}}'"
            )


# Every key can be set from the environment as STREAMREC_<SECTION>__<KEY> (a list as comma-
# separated values); these well-known names (the example config's and docker-compose's) too.
ENV_OVERRIDE_PREFIX = "STREAMREC_"
ENV_ALIASES = {
    "KAFKA_BOOTSTRAP_SERVERS": ("kafka", "bootstrap_servers"),
    "REDIS_HOST": ("redis", "host"),
    "REDIS_PORT": ("redis", "port"),
    "REDIS_USERNAME": ("redis", "username"),
    "REDIS_PASSWORD": ("redis", "password"),
    "STREAMREC_API_KEY": ("serve", "api_key"),
    "KAFKA_SASL_PASSWORD": ("kafka", "sasl_password"),
}


def env_override_name(section: str, key: str) -> str:
    return f"{ENV_OVERRIDE_PREFIX}{section.upper()}__{key.upper()}"


def env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The keys the environment sets: aliases first, then STREAMREC_<SECTION>__<KEY>, which
    win. Empty variables set nothing. A variable that names no key, or a value the key cannot
    take, is an error naming the variable."""
    hints = get_type_hints(Config)
    found: dict[str, dict[str, Any]] = {}
    named = [(var, *ENV_ALIASES[var]) for var in ENV_ALIASES if env.get(var)]
    for var in sorted(env):
        if var.startswith(ENV_OVERRIDE_PREFIX) and "__" in var and env[var]:
            section, _, key = var[len(ENV_OVERRIDE_PREFIX) :].lower().partition("__")
            named.append((var, section, key))
    for var, section, key in named:
        where = f"environment variable {var}"
        if section not in hints or not dataclasses.is_dataclass(hints[section]):
            raise ConfigError(f"{where}: no config section {section!r}")
        fields = get_type_hints(hints[section])
        if key not in fields:
            known = ", ".join(env_override_name(section, k) for k in sorted(fields))
            raise ConfigError(f"{where}: no key {section}.{key} (known here: {known})")
        hint = fields[key]
        if get_origin(hint) is dict:
            raise ConfigError(f"{where}: {section}.{key} is a mapping: set it in a config file")
        if get_origin(hint) is tuple:
            value: Any = [EnvText(part) for part in env[var].split(",")]
        else:
            value = EnvText(env[var])
        _coerce(value, hint, f"{section}.{key}", where)  # the error names the variable
        found.setdefault(section, {})[key] = value
    return found


def _with_env(data: Any, env: Mapping[str, str], source: str) -> Any:
    overrides = env_overrides(env)
    if not overrides:
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {data!r}")
    merged = dict(data)
    for section, values in overrides.items():
        inner = merged.get(section)
        merged[section] = {**(inner if isinstance(inner, dict) else {}), **values}
    return merged


def parse_config(text: str, source: str, env: Mapping[str, str] | None = None) -> Config:
    env = dict(os.environ) if env is None else env
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    data = _expand_tree(data, dict(env), source)
    _check_secrets_from_env(data, source)
    data = _with_env(data, env, source)
    cfg = _build(Config, data, "", source)
    cfg = dataclasses.replace(cfg, source=source)
    check_values(cfg)
    return cfg


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load the config from ``path``, else from $STREAMREC_CONFIG, else the built-in defaults;
    then the environment's overrides (``env_overrides``) on top, with or without a file."""
    env = os.environ if env is None else env
    path = path or env.get(ENV_CONFIG_PATH)
    if not path:
        data = _with_env(None, env, "<defaults>")
        cfg = _build(Config, data, "", "the environment") if data else Config()
        check_values(cfg)
        return cfg
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {file} does not exist")
    try:
        text = file.read_text("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    return parse_config(text, str(file), env)


# Where a dumped config (dump_config) reads each secret from: never written in its text.
SECRET_ENV = {
    ("redis", "password"): "REDIS_PASSWORD",
    ("serve", "api_key"): "STREAMREC_API_KEY",
    ("kafka", "sasl_password"): "KAFKA_SASL_PASSWORD",
}


def dump_config(cfg: Config) -> tuple[str, dict[str, str]]:
    """YAML text that loads back to ``cfg`` (to hand a config to a child process), with every
    secret written as ``${VAR:-}``; the secrets come back in an environment mapping instead."""
    data = {
        f.name: dataclasses.asdict(getattr(cfg, f.name))
        for f in dataclasses.fields(cfg)
        if f.name != "source"
    }
    env = {}
    for (section, key), var in SECRET_ENV.items():
        env[var] = str(data[section][key])
        data[section][key] = f"${{{var}:-}}"
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True), env


def with_overrides(cfg: Config, **sections: dict[str, Any]) -> Config:
    """A copy of ``cfg`` with some keys of some sections replaced (used by tests and the demo)."""
    changes = {}
    for section, values in sections.items():
        changes[section] = dataclasses.replace(getattr(cfg, section), **values)
    return dataclasses.replace(cfg, **changes)
