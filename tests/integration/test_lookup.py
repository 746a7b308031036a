"""The lookup client (streamrec/lookup.py) against a real redis-server: every fallback step,
exclusions, many users at once, odd ids, TTLs, a model switch under load, ACL users and TLS,
and the `streamrec recommend` command."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from streamrec.cli import main
from streamrec.errors import ServiceUnavailable
from streamrec.lookup import LookupClient
from streamrec.lookup_answers import BadLookup
from streamrec.redis_lists import connect, switch_version, write_lists, write_publish
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import dump_config, with_overrides

pytestmark = pytest.mark.integration

ODD_IDS = [
    "x:y",
    "{x}",
    "a}b",
    "}",
    "{",
    "{u:b}",
    "x y",
    "a/b",
    "ü",
    "u\u0308",
    "🎬",
    "用户",
    "popular",
    "s:0",
    "model:current",
    "*",
    "x\ny",
    "%2F",
    "z" * 256,
]


def _encoded(source: str, version: str, items: list[str], watermark: int = 1_000) -> bytes:
    scored = tuple((item, 1.0 - n / 100) for n, item in enumerate(items))
    return L.encode_list(L.RecList(scored, source, version, watermark + 5, watermark))


def publish(
    client: redis.Redis,
    cfg: Config,
    version: str,
    users: dict[str, list[str]],
    segment_of: dict[str, int] | None = None,
    segment_lists: dict[int, list[str]] | None = None,
    popular: list[str] | None = None,
    ttl: int = 600,
) -> None:
    """A version written the way the batch job writes one, then switched to."""
    prefix, segment_of = cfg.redis.key_prefix, segment_of or {}
    rows = []
    for user, items in users.items():
        key = L.user_list_key(prefix, version, user)
        segment = str(segment_of[user]) if user in segment_of else ""
        rows.append((key, _encoded(L.SOURCE_BATCH, version, items), 1_000, segment, ""))
    write_publish(client, rows, ttl)
    for user in set(segment_of) - set(users):  # the stream gave these a segment, no list
        client.hset(L.user_list_key(prefix, version, user), L.FIELD_SEGMENT, segment_of[user])
    lists = [
        (L.segment_list_key(prefix, version, s), _encoded(L.SOURCE_SEGMENT, version, items), 1_000)
        for s, items in (segment_lists or {}).items()
    ]
    if popular is not None:
        lists.append(
            (
                L.popular_list_key(prefix, version),
                _encoded(L.SOURCE_POPULAR, version, popular),
                1_000,
            )
        )
    write_lists(client, lists, ttl)
    switch_version(client, prefix, version)


@pytest.fixture
def lookup(isolated_cfg: Config) -> Iterator[LookupClient]:
    client = LookupClient.open(isolated_cfg.redis)
    yield client
    client.close()


@pytest.fixture
def published(isolated_cfg: Config, redis_client: redis.Redis) -> Config:
    publish(
        redis_client,
        isolated_cfg,
        "v1",
        users={"has-list": ["a", "b", "c"], "has-both": ["d", "e"]},
        segment_of={"has-both": 1, "segment-only": 0, "orphan-segment": 7},
        segment_lists={0: ["s0a", "s0b"], 1: ["s1a"]},
        popular=["p1", "p2", "p3"],
    )
    return isolated_cfg


def _items(rec: object) -> list[str]:
    return [item for item, _ in rec.items]  # type: ignore[attr-defined]


def test_every_fallback_step(published: Config, lookup: LookupClient) -> None:
    own = lookup.lookup("has-list", 2)
    assert (own.source, _items(own), own.model_version, own.segment) == (
        "batch",
        ["a", "b"],
        "v1",
        None,
    )
    assert own.generated_ms == 1_005 and own.watermark_ms == 1_000
    both = lookup.lookup("has-both")
    assert (both.source, _items(both), both.segment) == ("batch", ["d", "e"], 1)
    seg = lookup.lookup("segment-only")
    assert (seg.source, _items(seg), seg.segment) == ("segment", ["s0a", "s0b"], 0)
    # A segment whose list is missing, and a user Redis has never seen: the popular list.
    orphan = lookup.lookup("orphan-segment")
    assert (orphan.source, _items(orphan), orphan.segment) == ("popular", ["p1", "p2", "p3"], 7)
    unknown = lookup.lookup("never-seen", 1)
    assert (unknown.source, _items(unknown), unknown.segment) == ("popular", ["p1"], None)


def test_no_model_yet_and_no_popular_list(
    isolated_cfg: Config, lookup: LookupClient, redis_client: redis.Redis
) -> None:
    rec = lookup.lookup("anyone")
    assert (rec.source, rec.items, rec.model_version) == (None, (), None)
    assert lookup.model_version() is None
    assert lookup.segment("anyone").model_version is None
    publish(redis_client, isolated_cfg, "v1", users={"u": ["a"]})  # no popular list
    rec = lookup.lookup("other")
    assert (rec.source, rec.items, rec.model_version) == (None, (), "v1")


def test_exclude_falls_through_to_the_next_list(published: Config, lookup: LookupClient) -> None:
    assert _items(lookup.lookup("has-list", 10, exclude=["b"])) == ["a", "c"]
    rec = lookup.lookup("has-both", 10, exclude=["d", "e"])
    assert (rec.source, _items(rec)) == ("segment", ["s1a"])
    rec = lookup.lookup("has-both", 1, exclude=["d", "e", "s1a", "p1"])
    assert (rec.source, _items(rec)) == ("popular", ["p2"])


def test_lookup_many_in_one_version_with_per_user_exclusions(
    published: Config, lookup: LookupClient
) -> None:
    users = ["has-list", "segment-only", "never-seen", "has-list"]
    recs = lookup.lookup_many(users, 2, exclude={"has-list": ["a"], "never-seen": ["p1"]})
    assert list(recs) == ["has-list", "segment-only", "never-seen"]
    assert {u: (r.source, _items(r)) for u, r in recs.items()} == {
        "has-list": ("batch", ["b", "c"]),
        "segment-only": ("segment", ["s0a", "s0b"]),
        "never-seen": ("popular", ["p2", "p3"]),
    }
    same = lookup.lookup_many(["has-list", "never-seen"], 1, exclude=["a", "p1"])
    assert [_items(r) for r in same.values()] == [["b"], ["p2"]]
    assert lookup.lookup_many([], 3) == {}
    with pytest.raises(BadLookup):
        lookup.lookup_many(["ok", ""], 3)
    with pytest.raises(BadLookup):
        lookup.lookup("ok", 0)


def test_odd_ids_reach_only_their_own_keys(
    isolated_cfg: Config, lookup: LookupClient, redis_client: redis.Redis
) -> None:
    users = {uid: [f"item-of-{n}"] for n, uid in enumerate(ODD_IDS)}
    publish(
        redis_client,
        isolated_cfg,
        "v1",
        users=users,
        segment_of={uid: n for n, uid in enumerate(ODD_IDS)},
        popular=["p"],
    )
    recs = lookup.lookup_many(ODD_IDS, 5)
    for n, uid in enumerate(ODD_IDS):
        assert (recs[uid].source, _items(recs[uid]), recs[uid].segment) == (
            "batch",
            [f"item-of-{n}"],
            n,
        )
        assert lookup.segment(uid).segment == n
    # Ids that are only a prefix, or a brace-cut of another id, have no list of their own.
    for near in ("a", "{u:b", "x", "z" * 255):
        assert lookup.lookup(near).source == "popular"
    prefix = isolated_cfg.redis.key_prefix
    keys = {k.decode() for k in redis_client.scan_iter(match=f"{prefix}:*")}
    assert keys == {L.user_list_key(prefix, "v1", u) for u in ODD_IDS} | {
        L.popular_list_key(prefix, "v1"),
        L.current_model_key(prefix),
    }


def test_segment_probabilities(
    isolated_cfg: Config, lookup: LookupClient, redis_client: redis.Redis
) -> None:
    publish(redis_client, isolated_cfg, "v1", users={})
    key = L.user_list_key(isolated_cfg.redis.key_prefix, "v1", "g")
    redis_client.hset(
        key,
        mapping={
            L.FIELD_SEGMENT: "1",
            L.FIELD_SEGMENT_P: L.encode_segment_probabilities([0.25, 0.75]),
        },
    )
    info = lookup.segment("g")
    assert (info.model_version, info.segment, info.probabilities) == ("v1", 1, (0.25, 0.75))
    assert lookup.segment("nobody").segment is None


def test_an_expired_user_list_falls_back(
    isolated_cfg: Config, lookup: LookupClient, redis_client: redis.Redis
) -> None:
    publish(redis_client, isolated_cfg, "v1", users={"u": ["a"]}, popular=["p"], ttl=600)
    key = L.user_list_key(isolated_cfg.redis.key_prefix, "v1", "u")
    assert 0 < redis_client.ttl(key) <= 600  # lists.ttl_seconds, set by every writer
    assert lookup.lookup("u").source == "batch"
    redis_client.pexpire(key, 1)
    time.sleep(0.02)
    assert lookup.lookup("u").source == "popular"


def test_every_answer_is_wholly_from_one_version_during_switches(
    isolated_cfg: Config, redis_client: redis.Redis
) -> None:
    users = [f"u{n}" for n in range(40)]
    listed = users[: len(users) // 2]  # the others fall back to their segment or popular

    def version_lists(v: str) -> dict[str, list[str]]:
        return {u: [f"{v}-{u}-a", f"{v}-{u}-b"] for u in listed}

    segments = {u: n % 3 for n, u in enumerate(users)}

    def publish_version(v: str) -> None:
        publish(
            redis_client,
            isolated_cfg,
            v,
            version_lists(v),
            segments,
            {s: [f"{v}-seg{s}"] for s in range(2)},
            [f"{v}-pop"],
        )

    publish_version("v0")
    problems: list[str] = []
    versions_seen: set[str] = set()
    stop = threading.Event()
    answers = 0

    def read() -> None:
        nonlocal answers
        with LookupClient.open(isolated_cfg.redis) as reader:
            while not stop.is_set():
                recs = reader.lookup_many(users, 2)
                answers += 1
                found = {r.model_version for r in recs.values()}
                for rec in recs.values():
                    if rec.source is None or any(
                        not i.startswith(f"{rec.model_version}-") for i, _ in rec.items
                    ):
                        problems.append(f"{rec.user_id}: {rec}")
                if len(found) != 1:
                    problems.append(f"mixed versions {found}")
                versions_seen.update(v for v in found if v)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(1, 8):
            publish_version(f"v{n}")
            time.sleep(0.02)
    finally:
        stop.set()
        reader.join()
    assert problems == []
    assert answers > 20 and len(versions_seen) >= 3


def test_redis_down_says_how_to_start_it() -> None:
    cfg = with_overrides(Config(), redis=dict(port=1))
    with pytest.raises(ServiceUnavailable, match="streamrec stack up"):
        LookupClient.open(cfg.redis)


def test_redis_going_away_mid_lookup_is_service_unavailable(tmp_path: Path) -> None:
    with OwnRedisServer(tmp_path) as port:
        cfg = with_overrides(Config(), redis=dict(port=port))
        client = LookupClient.open(cfg.redis)
        assert client.lookup("u").source is None
    with pytest.raises(ServiceUnavailable, match=f"127.0.0.1:{port}.*streamrec stack up"):
        client.lookup("u")
    client.close()


def test_acl_user_and_password(
    isolated_cfg: Config, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    prefix, user, secret = (
        isolated_cfg.redis.key_prefix,
        f"acl-{isolated_cfg.redis.key_prefix}",
        "pw-very-secret-123",
    )
    redis_client.execute_command(
        "ACL", "SETUSER", user, "on", f">{secret}", f"~{prefix}:*", "+@all"
    )
    try:
        good = with_overrides(isolated_cfg, redis=dict(username=user, password=secret))
        publish(redis_client, isolated_cfg, "v1", users={"u": ["a"]})
        with LookupClient.open(good.redis) as client:
            assert client.lookup("u").source == "batch"
        bad = with_overrides(good, redis=dict(password="wrong-very-secret"))
        with pytest.raises(ServiceUnavailable) as info:
            LookupClient.open(bad.redis)
        assert f"as ACL user {user!r}" in str(info.value)
        assert "very-secret" not in str(info.value) and "very-secret" not in repr(bad)
        assert "very-secret" not in caplog.text
    finally:
        redis_client.execute_command("ACL", "DELUSER", user)


def test_tls_with_a_ca_file(tmp_path: Path) -> None:
    ca, cert, key = _certificates(tmp_path)
    tls = [
        "--tls-cert-file",
        str(cert),
        "--tls-key-file",
        str(key),
        "--tls-ca-cert-file",
        str(ca),
        "--tls-auth-clients",
        "no",
    ]
    with OwnRedisServer(tmp_path, tls) as port:
        plain = with_overrides(Config(), redis=dict(port=port))
        with pytest.raises(ServiceUnavailable):
            connect(plain.redis)
        secure = with_overrides(plain, redis=dict(tls=True, tls_ca_file=str(ca)))
        with LookupClient.open(secure.redis) as client:
            assert client.lookup("u").source is None
            client.client.set(L.current_model_key("streamrec"), "v1")
            assert client.model_version() == "v1"
        with pytest.raises(ServiceUnavailable, match="over TLS"):
            connect(with_overrides(secure, redis=dict(tls_ca_file=str(cert))).redis)


def test_recommend_command(
    published: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(dump_config(published)[0])
    items = tmp_path / "u.item"
    items.write_text("a|Toy Story (1995)|01-Jan-1995||http://x|" + "0|" * 18 + "1\n")
    assert (
        main(
            [
                "--config",
                str(config_file),
                "recommend",
                "has-list",
                "-n",
                "2",
                "--items",
                str(items),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("has-list  (source batch, model v1, generated ")
    assert out[1].split()[:2] == ["1.", "a"] and out[1].endswith("Toy Story (1995)")
    assert out[2].split() == ["2.", "b", "0.9900"]
    assert (
        main(
            [
                "--config",
                str(config_file),
                "recommend",
                "segment-only",
                "--json",
                "--exclude",
                "s0a",
            ]
        )
        == 0
    )
    import json

    payload = json.loads(capsys.readouterr().out)
    assert payload["source"] == "segment" and payload["items"] == [
        {"item_id": "s0b", "score": 0.99}
    ]
    empty = with_overrides(published, redis=dict(key_prefix=published.redis.key_prefix + "-none"))
    config_file.write_text(dump_config(empty)[0])
    assert main(["--config", str(config_file), "recommend", "u"]) == 1
    assert "no model published yet" in capsys.readouterr().out


# --- a redis-server of the test's own (TLS, or one the test may stop) -------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnRedisServer:
    """A redis-server process on a free port, stopped (by its own handle) on exit."""

    def __init__(self, folder: Path, extra: list[str] | None = None) -> None:
        self.port, self.folder, self.tls = _free_port(), folder, bool(extra)
        binary = shutil.which("redis-server")
        assert binary is not None
        port_args = (
            ["--port", "0", "--tls-port", str(self.port)] if extra else ["--port", str(self.port)]
        )
        self.proc = subprocess.Popen(
            [
                binary,
                *port_args,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(folder),
                *(extra or []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def __enter__(self) -> int:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self.port
            except OSError:
                time.sleep(0.05)
        self.__exit__()
        raise RuntimeError("redis-server did not start")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it (openssl)."""
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    cert, key, csr = folder / "server.pem", folder / "server.key", folder / "server.csr"
    ext = folder / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for cmd in (
        [
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            ca_key,
            "-out",
            ca,
            "-days",
            "1",
            "-subj",
            "/CN=streamrec test CA",
        ],
        [
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            key,
            "-out",
            csr,
            "-subj",
            "/CN=127.0.0.1",
        ],
        [
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            ca,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-out",
            cert,
            "-days",
            "1",
            "-extfile",
            ext,
        ],
    ):
        subprocess.run(["openssl", *map(str, cmd)], check=True, capture_output=True)
    return ca, cert, key
