"""Unit tests of the pure segment code: features of one user, the numpy assigner, the adjusted
Rand index, TF-IDF of segments, the u.item parser and the segments config."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from streamrec.batch.segment_markdown import render_markdown
from streamrec.batch.segment_report import confusion_matrix, distinctive_items
from streamrec.errors import ConfigError, InputError
from streamrec.model.item_metadata import MOVIELENS_GENRES, parse_movielens_items
from streamrec.model.segments import (
    FeatureSpec,
    SegmentAssigner,
    adjusted_rand_index,
    feature_spec,
    feature_weights,
    user_features,
)
from streamrec.schemas.config import SegmentsConfig
from streamrec.schemas.config_loader import parse_config

pytestmark = pytest.mark.unit

DAY = 86_400_000


# --- adjusted Rand index -----------------------------------------------------------------------


def test_ari_matches_a_hand_computed_example() -> None:
    # Contingency table of [0,0,0,1,1,1] vs [0,0,1,1,2,2]: rows (2,1,0), (0,1,2).
    # sum C(n_ij,2) = 1 + 1 = 2; rows: C(3,2)*2 = 6; cols: C(2,2)*3 = 3; C(6,2) = 15.
    # expected = 6*3/15 = 1.2; max = (6+3)/2 = 4.5; ARI = (2-1.2)/(4.5-1.2) = 0.8/3.3.
    ari = adjusted_rand_index(np.array([0, 0, 0, 1, 1, 1]), np.array([0, 0, 1, 1, 2, 2]))
    assert ari == pytest.approx(0.8 / 3.3)


def test_ari_ignores_label_names_and_punishes_chance() -> None:
    truth = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    assert adjusted_rand_index(truth, np.array([7, 7, 5, 5, 9, 9, 1, 1])) == 1.0
    assert adjusted_rand_index(truth, truth) == 1.0
    # each true pair split across two predicted clusters: no agreement beyond chance
    assert adjusted_rand_index(truth, np.array([0, 1, 0, 1, 0, 1, 0, 1])) < 0
    with pytest.raises(ValueError, match="length"):
        adjusted_rand_index(truth, truth[:-1])


# --- features of one user ------------------------------------------------------------------------


def _events(rows: list[tuple[str, str, int, float | None]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["event_type", "item_id", "event_time", "value"])


SPEC = FeatureSpec(event_types=("play", "skip", "like"), categories=("rock", "jazz"), factor_dim=2)
CATEGORIES = {"a": ("rock",), "b": ("rock", "jazz"), "c": ()}


def test_user_features_by_hand() -> None:
    events = _events(
        [
            ("play", "a", 0, 10.0),
            ("play", "b", DAY, None),
            ("skip", "c", 2 * DAY, None),
            ("click", "a", 3 * DAY, None),
        ]
    )
    vector = user_features(events, np.array([3.0, 4.0]), 10 * DAY, SPEC, CATEGORIES)
    assert SPEC.names() == (
        "activity",
        "recency",
        "type:play",
        "type:skip",
        "type:like",
        "category:rock",
        "category:jazz",
        "factor:0",
        "factor:1",
    )
    expected = [
        math.log1p(4),
        math.log1p(7.0),
        2 / 4,
        1 / 4,
        0.0,
        (1 + 0.5 + 1) / 4,
        0.5 / 4,
        0.6,
        0.8,
    ]
    np.testing.assert_allclose(vector, expected)


def test_user_features_do_not_depend_on_row_order() -> None:
    rng = np.random.default_rng(1)
    rows = [
        (
            str(rng.choice(["play", "skip", "like"])),
            str(rng.choice(list("abc"))),
            int(rng.integers(0, 50 * DAY)),
            float(rng.random()),
        )
        for _ in range(200)
    ]
    events = _events(rows)
    shuffled = events.sample(frac=1.0, random_state=3)
    a = user_features(events, None, 60 * DAY, SPEC, CATEGORIES)
    b = user_features(shuffled, None, 60 * DAY, SPEC, CATEGORIES)
    assert a.tobytes() == b.tobytes()
    assert list(a[-2:]) == [0.0, 0.0]  # no factor: zeros


def test_user_features_edge_cases() -> None:
    no_time = _events([("play", "a", None, None)])  # type: ignore[list-item]
    assert user_features(no_time, None, 5 * DAY, FeatureSpec(activity=False))[0] == 0.0
    future = _events([("play", "a", 9 * DAY, None)])
    assert user_features(future, None, 5 * DAY, FeatureSpec(activity=False))[0] == 0.0
    raw = FeatureSpec(activity=False, recency=False, factor_dim=2, normalize_factor=False)
    assert list(user_features(future, np.array([3.0, 4.0]), 0, raw)) == [3.0, 4.0]
    with pytest.raises(ValueError, match="mapping"):
        user_features(future, None, 0, SPEC, None)
    with pytest.raises(ValueError, match="shape"):
        user_features(future, np.array([1.0, 2.0, 3.0]), 0, SPEC, CATEGORIES)


def test_feature_spec_follows_the_config() -> None:
    full = feature_spec(SegmentsConfig(), 4, categories=("x",))
    assert full.names()[:2] == ("activity", "recency")
    assert "type:play" in full.names() and "category:x" in full.names()
    assert full.names()[-1] == "factor:3"
    bare = feature_spec(
        SegmentsConfig(event_mix=False, categories=False, factors=False, recency=False),
        4,
        categories=("x",),
    )
    assert bare.names() == ("activity",)
    assert FeatureSpec.from_json(full.to_json()) == full
    np.testing.assert_array_equal(feature_weights(("activity", "factor:0"), 0.5), [0.5, 1.0])


# --- the numpy assigner --------------------------------------------------------------------------


def _kmeans_assigner() -> SegmentAssigner:
    return SegmentAssigner(
        method="kmeans",
        feature_names=("x", "y", "z"),
        scaler_mean=np.array([1.0, 1.0, 5.0]),
        scaler_std=np.array([2.0, 0.5, 0.0]),
        with_mean=True,
        with_std=True,
        feature_weights=np.array([1.0, 0.5, 1.0]),
        pca=np.eye(3)[:, :2],
        centers=np.array([[0.0, 0.0], [2.0, 2.0]]),
    )


def test_kmeans_assigner_scales_weights_projects_and_takes_the_nearest_center() -> None:
    assigner = _kmeans_assigner()
    x = np.array([[1.0, 1.0, 99.0], [5.0, 5.0, 0.0]])
    # scaled: [0, 0, 0] and [2, 8, 0] (std 0 -> 0); weighted: [2, 4, 0] -> nearest (2, 2)
    np.testing.assert_allclose(assigner.reduce(x), [[0.0, 0.0], [2.0, 4.0]])
    segments, probs = assigner.assign(x)
    assert list(segments) == [0, 1] and probs is None
    with pytest.raises(ValueError, match="3"):
        assigner.assign(np.zeros((1, 2)))


def test_assigner_bytes_round_trip() -> None:
    spec = FeatureSpec(activity=True, recency=False, factor_dim=1)
    gmm = SegmentAssigner(
        method="gmm",
        feature_names=spec.names(),
        scaler_mean=np.zeros(2),
        scaler_std=np.ones(2),
        with_mean=False,
        with_std=True,
        feature_weights=np.ones(2),
        pca=np.eye(2),
        centers=np.array([[0.0, 0.0], [3.0, 0.0]]),
        weights=np.array([0.3, 0.7]),
        covariances=np.array([np.eye(2), np.diag([1.0, 4.0])]),
        spec=spec,
    )
    for assigner in (_kmeans_assigner(), gmm):
        data = assigner.to_bytes()
        assert len(data) < 10_000
        back = SegmentAssigner.from_bytes(data)
        assert (back.method, back.feature_names, back.spec) == (
            assigner.method,
            assigner.feature_names,
            assigner.spec,
        )
        x = np.random.default_rng(0).normal(size=(20, 2 if assigner is gmm else 3))
        a, pa = assigner.assign(x)
        b, pb = back.assign(x)
        np.testing.assert_array_equal(a, b)
        if pa is not None:
            np.testing.assert_array_equal(pa, pb)
    with pytest.raises(ValueError, match="segment model"):
        SegmentAssigner.from_bytes(_npz_without_format())


def _npz_without_format() -> bytes:
    import io
    import json

    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(json.dumps({"format": "x"}).encode(), np.uint8))
    return buf.getvalue()


def test_gmm_probabilities_match_the_densities_by_hand() -> None:
    assigner = SegmentAssigner(
        method="gmm",
        feature_names=("a", "b"),
        scaler_mean=np.zeros(2),
        scaler_std=np.ones(2),
        with_mean=False,
        with_std=False,
        feature_weights=np.ones(2),
        pca=np.eye(2),
        centers=np.array([[0.0, 0.0], [2.0, 0.0]]),
        weights=np.array([0.25, 0.75]),
        covariances=np.array([np.eye(2), np.diag([4.0, 1.0])]),
    )
    x = np.array([[1.0, 1.0]])

    def density(point: np.ndarray, mean: np.ndarray, var: np.ndarray) -> float:
        return float(np.prod(np.exp(-((point - mean) ** 2) / (2 * var)) / np.sqrt(2 * np.pi * var)))

    p0 = 0.25 * density(x[0], np.array([0.0, 0.0]), np.array([1.0, 1.0]))
    p1 = 0.75 * density(x[0], np.array([2.0, 0.0]), np.array([4.0, 1.0]))
    segments, probs = assigner.assign(x)
    assert probs is not None
    np.testing.assert_allclose(probs[0], [p0 / (p0 + p1), p1 / (p0 + p1)], rtol=1e-9)
    assert segments[0] == int(p1 > p0)


# --- report pieces -------------------------------------------------------------------------------


def test_distinctive_items_prefer_what_one_segment_over_represents() -> None:
    mass = pd.DataFrame(
        [
            (0, "hit", 10.0),
            (1, "hit", 10.0),  # as frequent everywhere: not distinctive
            (0, "rock", 5.0),
            (1, "rock", 1.0),  # over-represented in 0
            (1, "jazz", 4.0),
        ],  # only in 1
        columns=["segment", "item_id", "mass"],
    )
    out = distinctive_items(mass, 5)
    assert [i for i, _ in out[0]] == ["rock"]
    assert next(i for i, _ in out[1]) == "jazz"
    assert "hit" not in dict(out[1])
    assert all(score > 0 for pairs in out.values() for _, score in pairs)
    assert distinctive_items(mass.iloc[0:0], 5) == {}


def test_confusion_matrix_counts_label_against_prediction() -> None:
    matrix = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]


def test_markdown_escapes_titles_and_marks_the_chosen_k() -> None:
    item = {"item": "1", "title": "A|B", "score": 0.5}
    metrics = {
        "users": 10,
        "features": ["f0", "f1"],
        "method": "kmeans",
        "k": 2,
        "k_range": [2, 3],
        "silhouette": 0.5,
        "per_k": [
            {"k": 2, "silhouette": 0.5, "inertia": 1.0},
            {"k": 3, "silhouette": 0.4, "inertia": 0.5},
        ],
        "explained_variance_threshold": 0.9,
        "n_components": 1,
        "explained_variance": [0.9, 0.1],
        "classifier_agreement": 0.75,
        "confusion_matrix": [[1, 0], [1, 2]],
        "classifier": {"name": "nb", "agreement": 0.75, "train_users": 6, "test_users": 4},
        "segment_sizes": {"0": 5, "1": 5},
        "segments": [
            {"segment": 0, "users": 5, "distinctive": [item], "popular": [item]},
            {"segment": 1, "users": 5, "distinctive": [], "popular": []},
        ],
    }
    text = render_markdown(metrics)
    assert "| 2 **(chosen)** | 0.5000 |" in text
    assert "A\\|B" in text and "75.0%" in text
    assert "### Segment 1: 5 users (50.0%)" in text


# --- item metadata -------------------------------------------------------------------------------


def test_parse_movielens_items() -> None:
    flags = ["0"] * len(MOVIELENS_GENRES)
    flags[1] = flags[15] = "1"  # Action, Sci-Fi
    line = "|".join(["50", "Star Wars (1977)", "01-Jan-1977", "", "http://x", *flags])
    meta = parse_movielens_items(line + "\n\n")
    assert meta.titles == {"50": "Star Wars (1977)"}
    assert meta.categories == {"50": ("Action", "Sci-Fi")}
    assert meta.category_names == MOVIELENS_GENRES
    with pytest.raises(InputError, match=r"u.item:1"):
        parse_movielens_items("1|Toy Story|x|y\n")


# --- config --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("segments:\n  method: dbscan\n", "segments.method"),
        ("segments:\n  k_min: 1\n", "segments.k_min"),
        ("segments:\n  k_min: 5\n  k_max: 4\n", "segments.k_max"),
        ("segments:\n  explained_variance: 0\n", "segments.explained_variance"),
        ("segments:\n  explained_variance: 1.5\n", "segments.explained_variance"),
        ("segments:\n  validation_share: 1\n", "segments.validation_share"),
        ("segments:\n  behaviour_weight: 0\n", "segments.behaviour_weight"),
        ("segments:\n  top_n: 0\n", "segments.top_n"),
    ],
)
def test_bad_segments_values_name_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        parse_config(text, "inline.yaml", env={})
