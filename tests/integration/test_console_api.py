"""The operator page's JSON routes on a real `streamrec serve` against real Redis and Kafka: the
key guards every one of them (the page itself carries no data), they are in the OpenAPI
document, a user's view joins list, segment and state, and dead letters come from the topic."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest
import redis
from kafka import KafkaProducer

from streamrec.bench.server_process import ServerProcess
from streamrec.console_data import DeadLetterReader
from streamrec.kafka_topics import client_options
from streamrec.model.user_state import UserState, encode_state
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import with_overrides
from streamrec.streaming import dead_letter as D
from tests.integration.test_lookup import publish
from tests.integration.test_serve import API_KEY, get

pytestmark = pytest.mark.integration

WIRE_KEY = API_KEY.encode().decode("latin-1")  # urllib sends header text as latin-1
ROUTES = (
    "/console/api/stream",
    "/console/api/dead-letters",
    "/console/api/models",
    "/console/api/segments",
    "/console/api/segments/v1/plots/segment_sizes.png",
    "/console/api/user?user_id=alice",
)


@pytest.fixture
def server(isolated_cfg: Config, redis_client: redis.Redis) -> Iterator[tuple[str, Config]]:
    cfg = with_overrides(isolated_cfg, serve=dict(api_key=API_KEY, workers=1))
    publish(redis_client, cfg, "v1", users={"alice": ["a", "b"]}, segment_of={"alice": 1})
    state = UserState(batch=4, weights={"x": 2.0, "y": 1.0}, events=3, types={"play": 3})
    redis_client.hset(L.user_state_key(cfg.redis.key_prefix, "alice"), "state", encode_state(state))
    with ServerProcess(cfg) as process:
        yield process.url, cfg


def test_the_json_routes_need_the_key_and_the_page_does_not(server: tuple[str, Config]) -> None:
    url, _ = server
    for route in ROUTES:
        status, body, _ = get(url + route)
        assert (status, body) == (401, {"error": "a valid API key is required (X-API-Key header)"})
        assert get(url + route, {"X-API-Key": WIRE_KEY[:-1]})[0] == 401, route
    for route in ROUTES[:4]:
        assert get(url + route, {"X-API-Key": WIRE_KEY})[0] == 200, route
    # The page and its files are open, and hold no data: nothing of Redis is in them.
    for route in ("/console", "/console/static/console.js", "/console/static/console.css"):
        status, text, _ = get(url + route)
        assert status == 200 and "v1" not in text and "alice" not in text
    assert get(url + "/console/api/auth")[1] == {"key_required": True}
    assert get(url + "/console/static/..%2Fconsole.py")[0] == 404


def test_the_routes_are_in_the_openapi_document(server: tuple[str, Config]) -> None:
    url, _ = server
    doc = get(url + "/openapi.json")[1]
    for route in ROUTES:
        path = route.split("?")[0].replace("v1", "{version}").replace("segment_sizes.png", "{name}")
        operation = doc["paths"][path]["get"]
        assert operation["security"] == [{"apiKey": []}], path
        assert "401" in operation["responses"], path
    assert "/console" not in doc["paths"]  # the page is not an API


def test_a_users_view(server: tuple[str, Config]) -> None:
    url, _ = server
    head = {"X-API-Key": WIRE_KEY}
    status, body, _ = get(f"{url}/console/api/user?user_id=alice&n=1", head)
    assert status == 200
    assert body["recommendations"]["source"] == L.SOURCE_BATCH
    assert body["recommendations"]["model_version"] == "v1"
    assert [i["item_id"] for i in body["recommendations"]["items"]] == ["a"]
    assert body["segment"]["segment"] == 1
    assert body["state"]["events"] == 3 and body["state"]["top_items"][0]["item_id"] == "x"
    nobody = get(f"{url}/console/api/user?user_id={quote('no one/ü')}", head)[1]
    assert nobody["state"] is None and nobody["recommendations"]["source"] is None
    assert get(f"{url}/console/api/user?user_id=", head)[0] == 400
    assert get(f"{url}/console/api/segments?version=../x", head)[0] == 400
    # No store behind v1: no report, and no plot.
    assert get(f"{url}/console/api/segments", head)[1] == {
        "version": "v1",
        "report": None,
        "plots": {},
    }
    assert get(f"{url}/console/api/segments/v1/plots/segment_sizes.png", head)[0] == 404
    assert get(f"{url}/console/api/segments/v1/plots/secret.txt", head)[0] == 404


def test_dead_letters_are_the_newest_of_the_topic(isolated_cfg: Config) -> None:
    producer = KafkaProducer(
        **client_options(isolated_cfg.kafka), bootstrap_servers=isolated_cfg.kafka.bootstrap_servers
    )
    for n in range(30):
        headers = [
            (D.H_REASON, f"reason {n}".encode()),
            (D.H_TOPIC, b"events"),
            (D.H_PARTITION, b"0"),
            (D.H_OFFSET, str(n).encode()),
            (D.H_VALUE_BYTES, b"5"),
            (D.H_TRUNCATED, b"false"),
        ]
        producer.send(
            isolated_cfg.kafka.dead_letter_topic,
            value=b"bad\xff!",
            key=f"events/0/{n}".encode(),
            headers=headers,
            timestamp_ms=1_700_000_000_000 + n,
        )
    producer.flush()
    producer.close()
    now = [0.0]
    reader = DeadLetterReader(isolated_cfg.kafka, per_partition=5, clock=lambda: now[0])
    letters = reader.newest()
    assert [d["reason"] for d in letters] == [f"reason {n}" for n in range(29, 24, -1)]
    assert letters[0]["source"] == "events/0/29" and letters[0]["value_preview"] == "bad\ufffd!"
    assert letters[0]["time_ms"] == 1_700_000_000_029 and letters[0]["truncated"] is False
    assert reader.newest() is letters  # cached for ttl_s
    now[0] = reader.ttl_s
    assert reader.newest() is not letters and reader.newest() == letters
