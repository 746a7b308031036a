"""Per-user random splits of a ratings or plays file, as the public benchmark protocols make them
(MovieLens 100K 75/25 per user, Steam play hours 80/20 per user): seeded, so every run and every
reader of docs/results/ gets the same files. The data stays outside the repository."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from pathlib import Path

Row = tuple[str, ...]


def per_user_split(
    rows: Iterable[Sequence[str]], train_share: float, seed: int
) -> tuple[list[Row], list[Row]]:
    """Each user's rows (first field) shuffled with one seeded generator, users in sorted order;
    the first round(n * train_share) of each user's rows train, the rest test. A user with a
    single row keeps it for training."""
    if not 0 < train_share < 1:
        raise ValueError(f"train_share must be between 0 and 1, got {train_share}")
    by_user: dict[str, list[Row]] = {}
    for row in rows:
        by_user.setdefault(row[0], []).append(tuple(row))
    rng = random.Random(seed)
    train: list[Row] = []
    test: list[Row] = []
    for user in sorted(by_user):
        mine = by_user[user][:]
        rng.shuffle(mine)
        keep = round(len(mine) * train_share) if len(mine) > 1 else 1
        train += mine[:keep]
        test += mine[keep:]
    return train, test


def split_file(
    source: Path, out_dir: Path, train_share: float, seed: int, header: bool = False
) -> tuple[Path, Path]:
    """``source`` (tab-separated, an optional header line skipped) split per user into
    ``out_dir``/train.tsv and test.tsv, without a header."""
    lines = source.read_text(encoding="utf-8").splitlines()[1 if header else 0 :]
    rows = [line.split("\t") for line in lines if line.strip()]
    train, test = per_user_split(rows, train_share, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / "train.tsv", out_dir / "test.tsv"
    for path, part in zip(paths, (train, test), strict=True):
        path.write_text("".join("\t".join(row) + "\n" for row in part), encoding="utf-8")
    return paths
