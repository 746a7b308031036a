"""The promotion guard's decision, on known metrics."""

from __future__ import annotations

import pytest

from streamrec.batch.holdout import promotion_decision

pytestmark = pytest.mark.unit


def _m(ndcg: float) -> dict[str, dict[str, float]]:
    return {"als": {"ndcg": ndcg}}


def test_no_evaluation_or_no_current_metrics_promotes() -> None:
    assert promotion_decision(None, _m(0.5), 0.02).promote
    assert promotion_decision(_m(0.1), None, 0.02).promote


def test_a_drop_within_the_margin_promotes_beyond_it_does_not() -> None:
    assert promotion_decision(_m(0.49), _m(0.50), 0.02).promote
    assert promotion_decision(_m(0.60), _m(0.50), 0.02).promote
    refused = promotion_decision(_m(0.40), _m(0.50), 0.02)
    assert not refused.promote
    assert "0.4000" in refused.reason and "0.5000" in refused.reason
