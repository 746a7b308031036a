"""The EASE family: its closed form, the feedback it learns from, and one list path for the
stream and the batch job."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from streamrec.batch.search import choose_family
from streamrec.errors import ConfigError
from streamrec.model.ease import feedback_values, fit_ease, gram_matrix, history_vectors
from streamrec.model.lists import rank_histories
from streamrec.model.store import (
    FoldInParams,
    ItemModel,
    fold_in_params,
    trained_setting,
    training_record,
)
from streamrec.schemas.config import BatchConfig, FeedbackConfig
from streamrec.schemas.config_loader import parse_config


def _feedback(seed: int = 3, users: int = 40, items: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((users, items)) < 0.3) * rng.integers(1, 5, (users, items)).astype(float)


def test_fit_ease_solves_each_items_ridge_regression_on_the_others() -> None:
    x, l2 = _feedback(), 7.0
    item_matrix = fit_ease(x.T @ x, l2)
    b = item_matrix.T.astype(np.float64)  # B: column j predicts item j from the other items
    assert np.allclose(np.diag(b), 0.0)
    for j in range(x.shape[1]):
        others = [i for i in range(x.shape[1]) if i != j]
        xo = x[:, others]
        expected = np.linalg.solve(xo.T @ xo + l2 * np.eye(len(others)), xo.T @ x[:, j])
        assert np.allclose(b[others, j], expected, atol=1e-4)


def test_fit_ease_refuses_a_penalty_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        fit_ease(np.eye(3), 0.0)


def test_feedback_is_binarised_or_kept_and_negative_sums_are_dropped() -> None:
    ratings = np.array([2.5, -0.5, 0.0, 1.0])
    assert feedback_values(ratings, binary=True).tolist() == [1.0, 0.0, 0.0, 1.0]
    assert feedback_values(ratings, binary=False).tolist() == [2.5, 0.0, 0.0, 1.0]


def test_gram_matrix_from_triples_equals_the_dense_product() -> None:
    x = _feedback()
    users, items = np.nonzero(x)
    for binary in (True, False):
        gram = gram_matrix(users * 7 + 1000, items, x[users, items], x.shape[1], binary)
        dense = feedback_values(x, binary)
        assert np.allclose(gram, dense.T @ dense)


def test_history_vectors_sum_repeats_and_skip_users_without_positive_feedback() -> None:
    vectors = history_vectors(
        [(np.array([1, 3, 1]), np.array([1.0, 2.0, 0.5])), (np.array([2]), np.array([-1.0]))],
        n_items=4,
        binary=False,
    )
    assert vectors[0] is not None and vectors[0].tolist() == [0.0, 1.5, 0.0, 2.0]
    assert vectors[1] is None


def _ease_model(x: np.ndarray, l2: float, binary: bool) -> ItemModel:
    n = x.shape[1]
    batch = replace(BatchConfig(), family="ease", ease_l2=l2, ease_binary=binary, rank=2)
    factors = np.ones((n, 2), dtype=np.float32)
    return ItemModel(
        "v1",
        [f"i{j}" for j in range(n)],
        factors,
        factors.T.astype(np.float64) @ factors,
        training_record(batch, FeedbackConfig()),
        item_matrix=fit_ease(feedback_values(x, binary).T @ feedback_values(x, binary), l2),
    )


def test_the_stream_path_ranks_a_user_as_their_row_times_the_matrix() -> None:
    x = _feedback(seed=11)
    for binary in (True, False):
        model = _ease_model(x, 5.0, binary)
        params = fold_in_params(model)
        assert params.ease_binary is binary
        histories = [(np.flatnonzero(row), row[np.flatnonzero(row)]) for row in x]
        ranked = rank_histories(model, params, histories, n=4)
        assert model.item_matrix is not None
        scores = feedback_values(x, binary) @ model.item_matrix.T.astype(np.float64)
        for row, best in enumerate(ranked):
            if not x[row].any():
                assert best is None
                continue
            assert best is not None
            unseen = [j for j in np.argsort(-scores[row], kind="stable") if x[row, j] == 0]
            assert best[0].tolist() == unseen[:4]
            assert np.allclose(best[1], scores[row, best[0]], atol=1e-4)


def test_training_record_and_trained_setting_round_trip_both_families() -> None:
    feedback = FeedbackConfig()
    als = replace(BatchConfig(), rank=8, reg_param=0.3, alpha=4.0, max_iter=7)
    ease = replace(als, family="ease", ease_l2=1234.0, ease_binary=False)
    for setting in (als, ease):
        record = training_record(setting, feedback)
        assert trained_setting(BatchConfig(), record) == setting
    assert "ease_l2" not in training_record(als, feedback)["params"]
    assert trained_setting(BatchConfig(), {"params": {}}) == BatchConfig()


def test_choose_family_takes_ease_only_when_it_scores_higher() -> None:
    als = replace(BatchConfig(), rank=16, family="ease")
    trials = [
        {"family": "ease", "ease_l2": 200.0, "ease_binary": True, "ndcg": 0.30},
        {"family": "ease", "ease_l2": 500.0, "ease_binary": False, "ndcg": 0.32},
    ]
    chosen = choose_family(als, 0.31, trials)
    assert (chosen.family, chosen.ease_l2, chosen.ease_binary, chosen.rank) == (
        "ease",
        500.0,
        False,
        16,
    )
    assert choose_family(als, 0.32, trials).family == "als"  # a tie keeps ALS
    assert choose_family(als, 0.1, []).family == "als"
    assert choose_family(als, None, trials).family == "ease"  # ALS not searched


def test_fold_in_params_of_an_als_version_do_not_binarise() -> None:
    record = training_record(BatchConfig(), FeedbackConfig())
    model = ItemModel("v", ["a"], np.ones((1, 2), np.float32), np.eye(2), record)
    assert fold_in_params(model) == FoldInParams(0.05, 10.0, False)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("batch:\n  family: knn\n", "batch.family"),
        ("batch:\n  ease_l2: 0\n", "batch.ease_l2"),
        ("batch:\n  tune_families: [als, svd]\n", "batch.tune_families"),
        ("batch:\n  tune_ease_l2s: [100, -1]\n", "batch.tune_ease_l2s"),
    ],
)
def test_bad_family_settings_name_the_key_and_the_file(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"my\.yaml: {key}"):
        parse_config(text, "my.yaml", env={})
