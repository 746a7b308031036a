"""The lookup client without Spark: the project's wheel installed with its base requirements
only (no `jobs` extra) into a fresh venv, then `streamrec.lookup` and `streamrec recommend`
answering from the test Redis, with nothing of Spark, Kafka or numpy imported or installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import dump_config

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

CLIENT_SCRIPT = """
import importlib.util, json, sys
from streamrec.lookup import LookupClient
from streamrec.schemas.config_loader import load_config

heavy = ("pyspark", "kafka", "numpy", "pandas", "pyarrow", "scipy")
installed = [name for name in heavy if importlib.util.find_spec(name) is not None]
cfg = load_config(sys.argv[1])
with LookupClient.open(cfg.redis) as client:
    rec = client.lookup("alice", 2)
imported = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
print(json.dumps({"installed": installed, "imported": imported, "rec": rec.to_json()}))
"""


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{cmd}: {done.stdout}\n{done.stderr}"
    return done  # type: ignore[no-any-return]


def test_an_app_reads_lists_with_only_the_clients_dependencies(
    isolated_cfg: Config, redis_client: redis.Redis, tmp_path: Path
) -> None:
    prefix, version = isolated_cfg.redis.key_prefix, "v20260101T000000Z-0001"
    payload = L.encode_list(
        L.RecList((("i1", 0.9), ("i2", 0.5), ("i3", 0.1)), "stream", version, 1, 2)
    )
    redis_client.hset(L.user_list_key(prefix, version, "alice"), mapping={"list": payload})
    redis_client.set(L.current_model_key(prefix), version)
    text, env = dump_config(isolated_cfg)
    config = tmp_path / "client.yaml"
    config.write_text(text, "utf-8")

    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)])
    _run([sys.executable, "-m", "venv", str(venv)])
    wheel = next(wheels.glob("streamrec-*.whl"))
    pip_env = {
        **os.environ,
        "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR", str(ROOT / ".cache" / "pip")),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    _run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], env=pip_env)
    python = str(venv / "bin" / "python")
    client_env = {**os.environ, **env}
    client_env.pop("PYTHONPATH", None)
    out = _run([python, "-c", CLIENT_SCRIPT, str(config)], env=client_env, cwd=tmp_path)
    result = json.loads(out.stdout)
    assert result["installed"] == [] and result["imported"] == []
    assert result["rec"]["source"] == "stream" and result["rec"]["model_version"] == version
    assert [i["item_id"] for i in result["rec"]["items"]] == ["i1", "i2"]

    cli = _run(
        [str(venv / "bin" / "streamrec"), "--config", str(config), "recommend", "alice", "--json"],
        env=client_env,
        cwd=tmp_path,
    )
    assert [i["item_id"] for i in json.loads(cli.stdout)["items"]] == ["i1", "i2", "i3"]
