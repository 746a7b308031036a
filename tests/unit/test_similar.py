import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from streamrec.model.similar import similar_items

pytestmark = pytest.mark.unit


def test_nearest_by_cosine_best_first_and_never_itself() -> None:
    factors = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0], [2, 0.1]], dtype=np.float32)
    positions, scores = similar_items(factors, 2)
    assert positions[0].tolist() == [4, 1]
    assert positions[3].tolist() == [2, 1]  # orthogonal to 2, least opposed to 1
    assert scores[0][0] == pytest.approx(
        float(factors[4] @ factors[0]) / np.linalg.norm(factors[4])
    )
    assert all(i not in row for i, row in enumerate(positions.tolist()))


def test_zero_vectors_and_short_catalogues_pad_with_minus_one() -> None:
    factors = np.array([[1, 0], [0, 0], [0, 1]], dtype=np.float32)
    positions, scores = similar_items(factors, 4)
    assert positions[1].tolist() == [-1, -1, -1, -1]  # no vector: nothing is like it
    assert positions[0].tolist() == [2, -1, -1, -1]  # the zero item is never offered
    assert scores[0][1:].tolist() == [0, 0, 0]
    assert similar_items(np.ones((1, 3)), 2)[0].tolist() == [[-1, -1]]


@settings(max_examples=50, deadline=None)
@given(
    arrays(
        np.float32,
        st.tuples(st.integers(2, 40), st.integers(1, 6)),
        elements=st.floats(-3, 3, width=32),
    ),
    st.integers(1, 5),
    st.integers(1, 7),
)
def test_chunks_change_nothing_and_match_a_full_sort(factors, n, chunk) -> None:  # type: ignore[no-untyped-def]
    positions, scores = similar_items(factors, n, chunk)
    _, whole_scores = similar_items(factors, n, len(factors))
    assert np.allclose(scores, whole_scores, atol=1e-5)
    for row, (got, value) in enumerate(zip(positions, scores, strict=True)):
        real = got[got >= 0]
        assert row not in real and len(set(real.tolist())) == len(real)
        assert np.all(np.diff(value[: len(real)]) <= 1e-6)  # best first
