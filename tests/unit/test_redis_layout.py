"""Byte-for-byte tests of the Redis layout: the keys and the encoding of a top-N list.

The fenced-write Lua script runs against a real redis-server in the integration tests; here only
its text is checked against the field names."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from streamrec.schemas.redis_layout import (
    FIELD_FENCE,
    FIELD_LIST,
    LIST_FORMAT_VERSION,
    SOURCE_BATCH,
    SOURCE_POPULAR,
    SOURCE_STREAM,
    ListEncoder,
    RecList,
    current_model_key,
    decode_list,
    encode_list,
    popular_list_key,
    segment_list_key,
    user_list_key,
    user_state_key,
    version_keys_pattern,
    version_prefix,
)
from streamrec.schemas.redis_lua import (
    FENCED_WRITE_LUA,
    LOOKUP_LUA,
    READ_LISTS_LUA,
    READ_SEGMENT_LUA,
)

pytestmark = pytest.mark.unit

PREFIX = "P"

KNOWN = RecList(
    items=(
        ("item-1", 0.123456789),
        ("电影 🎬", 1234567.0),
        ('q"uo\\te', 3),
        ("tiny", 1.23456789e-7),
        ("huge", 1e16),
        ("neg", -0.5),
        ("zero", 0.0),
    ),
    source=SOURCE_BATCH,
    model_version="v20240601-1",
    generated_ms=1_700_000_000_123,
    watermark_ms=1_699_999_999_000,
)

KNOWN_BYTES = (
    '{"v":1,"source":"batch","model":"v20240601-1","generated_ms":1700000000123,'
    '"watermark_ms":1699999999000,"items":[["item-1",0.123457],["电影 🎬",1234570.0],'
    '["q\\"uo\\\\te",3.0],["tiny",1.23457e-07],["huge",1e+16],["neg",-0.5],["zero",0.0]]}'
).encode()


# --- keys ------------------------------------------------------------------------------------


V = "v20261125T120000Z-1a2b"


def test_key_functions_exact() -> None:
    assert user_list_key("streamrec", V, "u1") == f"streamrec:m:{V}:u:{{u:u1}}"
    assert user_state_key("streamrec", "u1") == "streamrec:st:u:{u:u1}"
    assert segment_list_key("streamrec", V, 3) == f"streamrec:m:{V}:s:3"
    assert popular_list_key("streamrec", V) == f"streamrec:m:{V}:popular"
    assert current_model_key("streamrec") == "streamrec:model:current"
    assert user_list_key(PREFIX, "v1", "x") == "P:m:v1:u:{u:x}"
    assert popular_list_key(PREFIX, "v1") == "P:m:v1:popular"
    assert current_model_key(PREFIX) == "P:model:current"
    assert version_prefix(PREFIX, "v1") == "P:m:v1:"


def test_version_pattern_matches_only_that_version_and_escapes_globs() -> None:
    import fnmatch

    assert version_keys_pattern("P", "v1") == "P:m:v1:*"
    assert version_keys_pattern("a*b[c]", "v1") == "a\\*b\\[c\\]:m:v1:*"
    # Redis' glob is close to fnmatch for these cases (fnmatch has no backslash escapes).
    assert fnmatch.fnmatchcase(user_list_key("P", "v1", "x:*y"), "P:m:v1:*")
    assert not fnmatch.fnmatchcase(user_list_key("P", "v10", "x"), "P:m:v1:*")


def test_user_key_bytes_keep_unicode_as_utf8() -> None:
    # redis-py sends str keys as UTF-8: the id is neither escaped nor normalised.
    key = user_list_key(PREFIX, "v1", "Zoë 🎬")
    assert key.encode("utf-8") == b"P:m:v1:u:{u:Zo\xc3\xab \xf0\x9f\x8e\xac}"


ODD_USER_IDS = [
    "x",
    "x:y",
    "x:",
    ":x",
    "::",
    "{x}",
    "{",
    "}",
    "{user}:rec",
    "x y",
    " x",
    "x ",
    " ",
    "a/b",
    "/",
    "\\",
    "ü",  # precomposed
    "u\u0308",  # the same letter, decomposed: a different id, a different key
    "🎬",
    "用户",
    "popular",
    "rec:popular",
    ":popular",
    "model:current",
    "P:model:current",
    "u:x",
    "*",
    "x\ny",
]


def test_user_keys_are_distinct_for_odd_ids() -> None:
    keys = [user_list_key(PREFIX, "v1", uid) for uid in ODD_USER_IDS]
    assert len(set(ODD_USER_IDS)) == len(ODD_USER_IDS)
    assert len(set(keys)) == len(keys)
    assert len({k.encode("utf-8") for k in keys}) == len(keys)


@pytest.mark.parametrize("uid", ODD_USER_IDS)
def test_user_key_never_reaches_another_key(uid: str) -> None:
    key = user_list_key(PREFIX, "v1", uid)
    assert key not in (popular_list_key(PREFIX, "v1"), current_model_key(PREFIX))
    # The id is the whole inside of the tag that ends the key: head + id + "}".
    head, tail = "P:m:v1:u:{u:", "}"
    assert key.startswith(head) and key.endswith(tail)
    assert key[len(head) : -len(tail)] == uid
    state = user_state_key(PREFIX, uid)
    assert state.startswith("P:st:u:{u:") and state[len("P:st:u:{u:") : -1] == uid


def test_popular_and_model_keys_differ_from_each_other_and_across_prefixes() -> None:
    keys = {
        popular_list_key("a", "v1"),
        current_model_key("a"),
        popular_list_key("b", "v1"),
        current_model_key("b"),
        user_list_key("a", "v1", "x"),
        user_list_key("b", "v1", "x"),
        user_list_key("a", "v2", "x"),
        popular_list_key("a", "v2"),
    }
    assert len(keys) == 8


# --- list encoding ---------------------------------------------------------------------------


def test_encode_list_exact_bytes() -> None:
    assert encode_list(KNOWN) == KNOWN_BYTES


def test_encode_list_keeps_unicode_unescaped_and_is_valid_json() -> None:
    raw = encode_list(KNOWN)
    assert "电影 🎬".encode() in raw
    assert b"\\u" not in raw
    assert json.loads(raw)["v"] == LIST_FORMAT_VERSION


@pytest.mark.parametrize(
    ("score", "encoded"),
    [
        (0.123456789, b"0.123457"),
        (0.1234564, b"0.123456"),
        (123456.7, b"123457.0"),
        (1234567.0, b"1234570.0"),
        (1.0, b"1.0"),
        (2, b"2.0"),
        (0.1, b"0.1"),
        (-0.5, b"-0.5"),
        (9.999996, b"10.0"),
        (1.23456789e-7, b"1.23457e-07"),
        (1e16, b"1e+16"),
    ],
)
def test_scores_rounded_to_six_significant_digits(score: float, encoded: bytes) -> None:
    raw = encode_list(RecList((("i", score),), SOURCE_STREAM, "m", 1, 2))
    assert raw.endswith(b'"items":[["i",' + encoded + b"]]}")


def test_empty_list_exact_bytes() -> None:
    raw = encode_list(RecList((), SOURCE_POPULAR, "", 0, 0))
    assert raw == (
        b'{"v":1,"source":"popular","model":"","generated_ms":0,"watermark_ms":0,"items":[]}'
    )


def test_ms_fields_encoded_as_integers() -> None:
    rec = RecList((), SOURCE_STREAM, "m", 1.7e12, 1.6e12)
    assert b'"generated_ms":1700000000000,"watermark_ms":1600000000000' in encode_list(rec)


def test_decode_round_trip() -> None:
    rec = RecList(
        items=(("a:b {c}/d", 0.5), ("電影🎬", 1.25), ("x", -2.0)),
        source=SOURCE_STREAM,
        model_version="v7",
        generated_ms=1_700_000_000_999,
        watermark_ms=1_700_000_000_000,
    )
    raw = encode_list(rec)
    assert decode_list(raw) == rec
    assert decode_list(raw.decode("utf-8")) == rec  # redis-py may hand back str


def test_decode_of_known_bytes_gives_rounded_scores() -> None:
    rec = decode_list(KNOWN_BYTES)
    assert rec.items == (
        ("item-1", 0.123457),
        ("电影 🎬", 1234570.0),
        ('q"uo\\te', 3.0),
        ("tiny", 1.23457e-07),
        ("huge", 1e16),
        ("neg", -0.5),
        ("zero", 0.0),
    )
    assert all(type(score) is float for _, score in rec.items)
    assert (rec.source, rec.model_version) == (SOURCE_BATCH, "v20240601-1")
    assert (rec.generated_ms, rec.watermark_ms) == (1_700_000_000_123, 1_699_999_999_000)
    assert encode_list(rec) == KNOWN_BYTES  # re-encoding a decoded list is stable


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_decode_rejects_unknown_version(version: object) -> None:
    data = json.loads(KNOWN_BYTES)
    data["v"] = version
    with pytest.raises(ValueError, match="version"):
        decode_list(json.dumps(data))


def test_decode_rejects_missing_version() -> None:
    data = json.loads(KNOWN_BYTES)
    del data["v"]
    with pytest.raises(ValueError, match="version"):
        decode_list(json.dumps(data))


# --- the fenced write's fields ---------------------------------------------------------------


def test_lua_script_uses_the_layout_field_names() -> None:
    assert (FIELD_LIST, FIELD_FENCE) == ("list", "fence")
    assert f"'HGET', KEYS[1], '{FIELD_FENCE}'" in FENCED_WRITE_LUA
    assert f"'{FIELD_LIST}', ARGV[1], '{FIELD_FENCE}', ARGV[2]" in FENCED_WRITE_LUA
    assert "EXPIRE" in FENCED_WRITE_LUA


# --- Redis Cluster hash tags -----------------------------------------------------------------
# The slot rule of the Redis Cluster specification, written out here to check the layout
# against it: CRC16 (XMODEM) of the hash tag (the text between the first "{" and the first "}"
# after it, when not empty), else of the whole key, modulo 16384.


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _hashed_part(key: bytes) -> bytes:
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def key_slot(key: str) -> int:
    return _crc16(_hashed_part(key.encode("utf-8"))) % 16384


def test_slot_rule_matches_the_cluster_specification_examples() -> None:
    assert _crc16(b"123456789") == 0x31C3  # the CRC16 check value the specification gives
    assert key_slot("somekey") == 11058 and key_slot("foo") == 12182  # CLUSTER KEYSLOT docs
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers")
    assert _hashed_part(b"foo{}{bar}") == b"foo{}{bar}"
    assert _hashed_part(b"foo{{bar}}zap") == b"{bar"
    assert _hashed_part(b"foo{bar}{zap}") == b"bar"


@pytest.mark.parametrize("uid", [*ODD_USER_IDS, "a}b", "}", "}}", "{}", "x{y}z", "{u:other}"])
def test_a_users_state_and_lists_of_every_version_share_one_slot(uid: str) -> None:
    # STREAM_WRITE_LUA (state + list) and PUBLISH_WRITE_LUA (new + previous version) each
    # touch two of these keys in one call: on a Cluster they must be in one slot.
    keys = [
        user_state_key("streamrec", uid),
        user_list_key("streamrec", "v1", uid),
        user_list_key("streamrec", "v20261125T120000Z-1a2b", uid),
    ]
    tags = {_hashed_part(k.encode("utf-8")) for k in keys}
    assert len(tags) == 1
    (tag,) = tags
    # The tag is never empty (it starts with "u:"), so the key is never hashed whole; an id
    # with a "}" is cut at the same place in every key of that user.
    assert tag.startswith(b"u:") and ("}" in uid or tag == f"u:{uid}".encode())
    assert len({key_slot(k) for k in keys}) == 1


def test_an_id_with_a_brace_shares_its_tag_with_a_shorter_id_but_not_its_keys() -> None:
    # "a}b" hashes like "a" (tag "u:a"): same slot, distinct keys.
    assert key_slot(user_list_key(PREFIX, "v1", "a}b")) == key_slot(
        user_list_key(PREFIX, "v1", "a")
    )
    assert user_list_key(PREFIX, "v1", "a}b") != user_list_key(PREFIX, "v1", "a")


@pytest.mark.parametrize("bad", ["p{x", "p}x", "{p}"])
def test_braces_in_prefix_or_version_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="must not contain"):
        user_list_key(bad, "v1", "u")
    with pytest.raises(ValueError, match="must not contain"):
        popular_list_key("P", bad)


def test_lua_readers_build_user_keys_like_user_list_key() -> None:
    # The Lua scripts build keys from prefix, version and id; these are the same pieces.
    built = "P" + ":m:" + "v1" + ":" + "u:{u:" + "x" + "}"
    assert built == user_list_key("P", "v1", "x")
    for script in (READ_LISTS_LUA, LOOKUP_LUA, READ_SEGMENT_LUA):
        assert "ARGV[1] .. ':m:' .. version .. ':'" in script
        assert "'u:{u:' .. ARGV[" in script and "] .. '}'" in script
    assert "base .. 's:' .. user[2]" in LOOKUP_LUA  # segment_list_key's "s:<segment>"
    assert "base .. 'popular'" in LOOKUP_LUA


def test_decode_list_with_limit_and_exclude() -> None:
    rec = decode_list(KNOWN_BYTES, limit=2, exclude={"item-1", "tiny"})
    assert rec.items == (("电影 🎬", 1234570.0), ('q"uo\\te', 3.0))
    assert decode_list(KNOWN_BYTES, limit=0).items == ()
    assert len(decode_list(KNOWN_BYTES, limit=100).items) == 7


# --- ListEncoder: encode_list's bytes, ids escaped once -------------------------------------


def test_list_encoder_equals_encode_list_byte_for_byte() -> None:
    rng = random.Random(20261126)
    alphabet = [
        "a",
        "Z",
        "0",
        " ",
        ":",
        "{",
        '"',
        "\\",
        "/",
        "\n",
        "\t",
        "\x00",
        "\x1f",
        "\x7f",
        "é",
        "电",
        "🎬",
        "\u2028",
        "\ud7ff",
        "\ue000",
    ]
    item_ids = [
        "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 12))) for _ in range(300)
    ]
    for source, model in ((SOURCE_STREAM, "v20261126T000000Z-ab12"), (SOURCE_BATCH, 'm"\\é')):
        encoder = ListEncoder(item_ids, source, model)
        for _ in range(300):
            positions = rng.sample(range(len(item_ids)), rng.randrange(0, 25))
            scores = [
                rng.choice(
                    [
                        rng.uniform(-2, 2),
                        rng.uniform(-1e-6, 1e-6),
                        10 ** rng.uniform(-9, 20),
                        0.0,
                        -0.0,
                        1.0,
                        123456.7,
                        9.999996,
                        float(np.float32(rng.random())),
                    ]
                )
                for _ in positions
            ]
            generated, watermark = rng.randrange(0, 2**42), rng.randrange(0, 2**42)
            expected = encode_list(
                RecList(
                    tuple((item_ids[i], s) for i, s in zip(positions, scores, strict=True)),
                    source,
                    model,
                    generated,
                    watermark,
                )
            )
            assert encoder.encode(positions, scores, generated, watermark) == expected


@pytest.mark.parametrize("odd", [math.nan, math.inf, -math.inf])
def test_list_encoder_hands_non_finite_scores_to_encode_list(odd: float) -> None:
    encoder = ListEncoder(["a", "b"], SOURCE_STREAM, "m")
    expected = encode_list(RecList((("a", 1.0), ("b", odd)), SOURCE_STREAM, "m", 5, 4))
    assert encoder.encode([0, 1], [1.0, odd], 5, 4) == expected
