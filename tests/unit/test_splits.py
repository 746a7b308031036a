from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamrec.bench.splits import per_user_split, split_file

rows_strategy = st.lists(
    st.tuples(st.sampled_from("abcdef"), st.integers(0, 50).map(str), st.just("1")),
    max_size=200,
)


@given(rows_strategy, st.sampled_from([0.75, 0.8]), st.integers(0, 3))
def test_every_row_lands_once_and_each_user_keeps_their_share(rows, share, seed) -> None:
    train, test = per_user_split(rows, share, seed)
    assert Counter(train) + Counter(test) == Counter(rows)
    per_user = Counter(user for user, *_ in rows)
    kept = Counter(user for user, *_ in train)
    for user, n in per_user.items():
        assert kept[user] == (round(n * share) if n > 1 else 1)


def test_the_same_seed_gives_the_same_split_and_another_seed_another() -> None:
    rows = [(f"u{u % 7}", str(i), "1") for u in range(70) for i in range(u, u + 3)]
    assert per_user_split(rows, 0.75, 42) == per_user_split(rows, 0.75, 42)
    assert per_user_split(rows, 0.75, 42) != per_user_split(rows, 0.75, 43)


def test_a_share_outside_zero_and_one_is_refused() -> None:
    with pytest.raises(ValueError, match="train_share"):
        per_user_split([("u", "i", "1")], 1.0, 0)


def test_split_file_skips_the_header_and_writes_both_parts(tmp_path) -> None:
    source = tmp_path / "plays.tsv"
    source.write_text("user\titem\thours\n" + "".join(f"u\tgame {i}\t{i}.5\n" for i in range(8)))
    train, test = split_file(source, tmp_path / "out", 0.75, 1, header=True)
    train_rows = train.read_text().splitlines()
    test_rows = test.read_text().splitlines()
    assert len(train_rows) == 6 and len(test_rows) == 2
    assert not any(row.startswith("user\t") for row in train_rows + test_rows)
    assert sorted(train_rows + test_rows) == sorted(source.read_text().splitlines()[1:])
