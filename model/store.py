"""The versioned model store.

    <model_store>/
        v20261125T120000Z-1a2b/      one training run
            meta.json                params, counts, data range, the data-cut watermark
            item_ids.json            item index -> item id (the ALS integer id is the index)
            item_factors.npy         float32 (items x rank), rows in index order
            gram.npy                 float64 YᵀY, so a fold-in does not recompute it
            als/                     the Spark ALSModel (for evaluation and re-scoring)
            id_maps/users/, items/   Parquet (id, index): ALS's integer ids, append-only
                                     across versions, so an id keeps its index
        current                      the version name; written last, by an atomic rename

A reader that follows ``current`` never sees a half-written version.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.errors import ModelStoreError

CURRENT = "current"


def new_version_name(now_s: float | None = None) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now_s or time.time()))
    return f"v{stamp}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class ItemModel:
    """What scoring and fold-in need: item factors, their Gram matrix and the id map."""

    version: str
    item_ids: list[str]
    item_factors: np.ndarray
    gram: np.ndarray
    meta: dict[str, Any]

    def index_of(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.item_ids)}


def version_dir(store: str | Path, version: str) -> Path:
    return Path(store).resolve() / version


def write_item_model(
    store: str | Path,
    version: str,
    item_ids: list[str],
    item_factors: np.ndarray,
    meta: dict[str, Any],
) -> Path:
    folder = version_dir(store, version)
    folder.mkdir(parents=True, exist_ok=True)
    factors = np.asarray(item_factors, dtype=np.float32)
    np.save(folder / "item_factors.npy", factors)
    f64 = factors.astype(np.float64)
    np.save(folder / "gram.npy", f64.T @ f64)
    (folder / "item_ids.json").write_text(json.dumps(item_ids, ensure_ascii=False))
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return folder


def promote(store: str | Path, version: str) -> None:
    """Point ``current`` at ``version`` (atomic: a rename over the old pointer)."""
    root = Path(store).resolve()
    if not (root / version / "meta.json").exists():
        raise ModelStoreError(f"cannot promote {version}: {root / version} is incomplete")
    tmp = root / f".{CURRENT}.{secrets.token_hex(4)}"
    tmp.write_text(version)
    os.replace(tmp, root / CURRENT)


def current_version(store: str | Path) -> str | None:
    try:
        return (Path(store).resolve() / CURRENT).read_text().strip() or None
    except FileNotFoundError:
        return None


def load_item_model(store: str | Path, version: str | None = None) -> ItemModel:
    version = version or current_version(store)
    if version is None:
        raise ModelStoreError(
            f"no model in {Path(store).resolve()} yet: run `streamrec batch run` first"
        )
    folder = version_dir(store, version)
    try:
        return ItemModel(
            version=version,
            item_ids=json.loads((folder / "item_ids.json").read_text()),
            item_factors=np.load(folder / "item_factors.npy"),
            gram=np.load(folder / "gram.npy"),
            meta=json.loads((folder / "meta.json").read_text()),
        )
    except (FileNotFoundError, ValueError) as exc:
        raise ModelStoreError(
            f"model version {version} in {folder} cannot be loaded: {exc}"
        ) from exc


def read_meta(store: str | Path, version: str) -> dict[str, Any]:
    try:
        meta: dict[str, Any] = json.loads((version_dir(store, version) / "meta.json").read_text())
    except (FileNotFoundError, ValueError) as exc:
        raise ModelStoreError(f"model version {version}: unreadable meta.json ({exc})") from exc
    return meta


def id_map_dir(store: str | Path, version: str, kind: str) -> Path:
    """Where a version keeps its ``users`` or ``items`` id map (Parquet: id, index)."""
    return version_dir(store, version) / "id_maps" / kind


def versions(store: str | Path) -> list[str]:
    """Complete versions, oldest first (names sort by creation time)."""
    root = Path(store).resolve()
    if not root.exists():
        return []
    done = [p for p in root.iterdir() if p.name.startswith("v") and (p / "meta.json").exists()]
    return sorted(p.name for p in done)


def prune(store: str | Path, keep: int) -> list[str]:
    """Delete all but the ``keep`` newest versions, never the current one; returns the deleted."""
    import shutil

    current = current_version(store)
    doomed = [v for v in versions(store)[:-keep] if v != current] if keep > 0 else []
    for version in doomed:
        shutil.rmtree(version_dir(store, version), ignore_errors=True)
    return doomed
