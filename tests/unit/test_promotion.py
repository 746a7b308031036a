"""The promotion gate's decision, on known metrics of one holdout."""

from __future__ import annotations

from typing import Any

import pytest

from streamrec.batch.holdout import BELOW_CURRENT, BELOW_POPULARITY, promotion_decision

pytestmark = pytest.mark.unit


def _holdout(candidate: float, popularity: float, current: float | None) -> dict[str, Any]:
    return {
        "als": {"ndcg": candidate},
        "popularity": {"ndcg": popularity},
        "current": None if current is None else {"version": "v-live", "ndcg": current},
    }


def test_no_evaluation_promotes() -> None:
    assert promotion_decision(None, 0.02).promote


def test_no_current_model_promotes_a_candidate_at_least_as_good_as_popularity() -> None:
    decision = promotion_decision(_holdout(0.30, 0.20, None), 0.02)
    assert decision.promote and decision.refusal == ""
    assert promotion_decision(_holdout(0.20, 0.20, None), 0.02).promote


def test_a_candidate_below_popularity_is_refused_whatever_the_current_model() -> None:
    for current in (None, 0.05, 0.50):
        decision = promotion_decision(_holdout(0.19, 0.20, current), 0.02)
        assert not decision.promote and decision.refusal == BELOW_POPULARITY
        assert "0.1900" in decision.reason and "popularity's 0.2000" in decision.reason


def test_a_drop_from_the_current_model_within_the_margin_promotes_beyond_it_does_not() -> None:
    assert promotion_decision(_holdout(0.49, 0.10, 0.50), 0.02).promote
    assert promotion_decision(_holdout(0.60, 0.10, 0.50), 0.02).promote
    refused = promotion_decision(_holdout(0.40, 0.10, 0.50), 0.02)
    assert not refused.promote and refused.refusal == BELOW_CURRENT
    assert "0.4000" in refused.reason and "v-live's 0.5000" in refused.reason
