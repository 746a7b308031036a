"""The pure parts of the lookup (streamrec/lookup.py): choosing among the fallback lists the
Lua script returned, exclusions, id checks, the CLI table. Redis itself: tests/integration."""

from __future__ import annotations

import pytest

from streamrec.lookup import table
from streamrec.lookup_answers import (
    BadLookup,
    Recommendations,
    check_user_id,
    max_user_id_length,
    pick,
)
from streamrec.schemas import redis_layout as L

pytestmark = pytest.mark.unit


def _raw(source: str, items: list[str], version: str = "v1") -> bytes:
    scored = tuple((item, 1.0 - n / 10) for n, item in enumerate(items))
    return L.encode_list(L.RecList(scored, source, version, 1_000, 900))


OWN = _raw(L.SOURCE_STREAM, ["a", "b", "c"])
SEGMENT = _raw(L.SOURCE_SEGMENT, ["s1", "s2"])
POPULAR = _raw(L.SOURCE_POPULAR, ["p1", "p2", "p3"])


@pytest.mark.parametrize(
    ("candidates", "source", "first"),
    [
        ((OWN, SEGMENT, POPULAR), "stream", "a"),
        ((None, SEGMENT, POPULAR), "segment", "s1"),
        ((None, None, POPULAR), "popular", "p1"),
    ],
)
def test_first_existing_list_answers(
    candidates: tuple[bytes | None, ...], source: str, first: str
) -> None:
    rec = pick("u", "v1", candidates, 4, 2, ())
    assert rec.source == source and rec.items[0][0] == first and len(rec.items) == 2
    assert (rec.model_version, rec.generated_ms, rec.watermark_ms, rec.segment) == (
        "v1",
        1_000,
        900,
        4,
    )


def test_nothing_at_all_gives_an_empty_answer_with_the_version() -> None:
    rec = pick("u", "v9", (None, None, None), None, 5, ())
    assert rec == Recommendations("u", (), None, "v9")


def test_exclude_leaves_items_out_and_an_emptied_list_falls_through() -> None:
    rec = pick("u", "v1", (OWN, SEGMENT, POPULAR), None, 5, {"b"})
    assert [i for i, _ in rec.items] == ["a", "c"] and rec.source == "stream"
    rec = pick("u", "v1", (OWN, SEGMENT, POPULAR), None, 5, {"a", "b", "c"})
    assert rec.source == "segment" and [i for i, _ in rec.items] == ["s1", "s2"]
    rec = pick("u", "v1", (OWN, SEGMENT, POPULAR), None, 5, {"a", "b", "c", "s1", "s2", "p2"})
    assert rec.source == "popular" and [i for i, _ in rec.items] == ["p1", "p3"]
    everything = {"a", "b", "c", "s1", "s2", "p1", "p2", "p3"}
    assert pick("u", "v1", (OWN, SEGMENT, POPULAR), None, 5, everything).source is None


def test_n_cuts_after_exclusion() -> None:
    rec = pick("u", "v1", (OWN, None, None), None, 2, {"a"})
    assert [i for i, _ in rec.items] == ["b", "c"]


def test_to_json_names_every_field() -> None:
    rec = pick("u:{1}", "v1", (None, SEGMENT, None), 3, 1, ())
    assert rec.to_json() == {
        "user_id": "u:{1}",
        "source": "segment",
        "model_version": "v1",
        "generated_ms": 1_000,
        "watermark_ms": 900,
        "segment": 3,
        "items": [{"item_id": "s1", "score": 1.0}],
    }


def test_user_id_bounds_come_from_the_event_contract() -> None:
    assert max_user_id_length() == 256
    check_user_id("x" * 256)
    check_user_id("🎬")
    for bad in ("", "x" * 257):
        with pytest.raises(BadLookup, match="1 to 256"):
            check_user_id(bad)


def test_table_shows_source_version_age_and_titles() -> None:
    rec = pick("u1", "v1", (OWN, None, None), 2, 2, ())
    text = table(rec, {"a": "Toy Story (1995)"}, now_ms=3_500)
    lines = text.splitlines()
    assert lines[0] == "u1  (source stream, model v1, segment 2, generated 2.5s ago)"
    assert lines[1].split() == ["1.", "a", "1.0000", "Toy", "Story", "(1995)"]
    assert lines[2].split() == ["2.", "b", "0.9000"]


def test_table_says_why_there_is_nothing() -> None:
    assert "no model published yet" in table(Recommendations("u", (), None, None))
    assert "no list of any kind under model v3" in table(Recommendations("u", (), None, "v3"))
