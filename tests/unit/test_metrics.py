"""Ranking metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamrec.batch.metrics import ranking_metrics, rmse

pytestmark = pytest.mark.unit


def test_one_user_by_hand() -> None:
    # hits at ranks 1 and 3 of k=4; 3 relevant items in all
    m = ranking_metrics([["a", "x", "b", "y"]], [{"a", "b", "c"}], k=4, catalogue_size=10)
    assert m.users == 1
    assert m.precision == pytest.approx(2 / 4)
    assert m.recall == pytest.approx(2 / 3)
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    idcg = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert m.ndcg == pytest.approx(dcg / idcg)
    assert m.map == pytest.approx((1 / 1 + 2 / 3) / 3)
    assert m.coverage == pytest.approx(4 / 10)


def test_users_without_relevant_items_are_left_out_but_count_for_coverage() -> None:
    m = ranking_metrics([["a", "b"], ["c", "d"]], [{"b"}, set()], k=2, catalogue_size=4)
    assert m.users == 1
    assert m.precision == pytest.approx(0.5)
    assert m.ndcg == pytest.approx((1 / math.log2(3)) / 1.0)
    assert m.map == pytest.approx(0.5)
    assert m.coverage == 1.0


def test_perfect_and_empty_rankings() -> None:
    perfect = ranking_metrics([["a", "b"]], [{"a", "b"}], k=2, catalogue_size=2)
    assert (perfect.precision, perfect.recall, perfect.ndcg, perfect.map) == (1, 1, 1, 1)
    short = ranking_metrics([[]], [{"a"}], k=3, catalogue_size=5)
    assert (short.precision, short.recall, short.ndcg, short.map) == (0, 0, 0, 0)


def test_ideal_dcg_is_capped_at_k() -> None:
    # 5 relevant, k=2, both shown items relevant: NDCG and MAP are 1, recall 2/5
    m = ranking_metrics([["a", "b"]], [{"a", "b", "c", "d", "e"}], k=2, catalogue_size=9)
    assert m.ndcg == pytest.approx(1.0) and m.map == pytest.approx(1.0)
    assert m.recall == pytest.approx(0.4)


def test_rmse() -> None:
    assert rmse(np.array([1.0, 3.0]), np.array([2.0, 5.0])) == pytest.approx(math.sqrt(2.5))
    with pytest.raises(ValueError):
        rmse(np.array([]), np.array([]))
