"""Item metadata files -> titles and categories, for segment features and readable reports.

MovieLens ``u.item``: pipe-separated, latin-1, one movie a line:
``movie id | title | release date | video release date | IMDb URL | 19 genre flags (0/1)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from streamrec.errors import InputError

# The order of the 19 genre flags at the end of a u.item line (as listed in u.genre).
MOVIELENS_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
_LEADING_FIELDS = 5


@dataclass(frozen=True)
class ItemMetadata:
    titles: dict[str, str]
    categories: dict[str, tuple[str, ...]]
    # Every category name, in a fixed order (the order of the category features).
    category_names: tuple[str, ...]


def parse_movielens_items(text: str, source: str = "u.item") -> ItemMetadata:
    """Titles and genres of MovieLens ``u.item`` text; a malformed line is an InputError that
    names the line."""
    titles: dict[str, str] = {}
    categories: dict[str, tuple[str, ...]] = {}
    width = _LEADING_FIELDS + len(MOVIELENS_GENRES)
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("|")
        flags = fields[_LEADING_FIELDS:]
        if len(fields) != width or not fields[0].strip() or any(f not in ("0", "1") for f in flags):
            raise InputError(
                f"{source}:{number}: expected id|title|release|video release|url and "
                f"{len(MOVIELENS_GENRES)} genre flags (0/1), got {line[:80]!r}"
            )
        item = fields[0].strip()
        titles[item] = fields[1].strip()
        categories[item] = tuple(
            g for g, f in zip(MOVIELENS_GENRES, flags, strict=True) if f == "1"
        )
    return ItemMetadata(titles, categories, MOVIELENS_GENRES)


def read_movielens_items(path: str) -> ItemMetadata:
    file = Path(path)
    if not file.is_file():
        raise InputError(f"item metadata file {path} does not exist")
    # MovieLens 100K is latin-1 (titles such as "Misérables, Les").
    return parse_movielens_items(file.read_text("latin-1"), str(path))
