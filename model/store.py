"""The versioned model store.

    <model_store>/
        v20261125T120000Z-1a2b/      one training run
            meta.json                params, counts, data range, the data-cut watermark
            item_ids.json            item index -> item id (the ALS integer id is the index)
            item_factors.npy         float32 (items x rank), rows in index order
            gram.npy                 float64 YᵀY, so a fold-in does not recompute it
            item_matrix.npy          EASE versions only: float32 Bᵀ (items x items), what
                                     ranks their lists (model/ease.py)
            als/                     the Spark ALSModel (for evaluation and re-scoring)
            id_maps/users/, items/   Parquet (id, index): ALS's integer ids, append-only
                                     across versions, so an id keeps its index
            segments/pipeline/       the Spark ML PipelineModel of user segments
            segments/assigner.npz    the same pipeline as plain arrays, for the stream
            segments/report/         report.md, metrics.json and the plots
        current                      the version name; written last, by an atomic rename

A reader that follows ``current`` never sees a half-written version. The store may be a local
folder or any Hadoop-compatible URI (streamrec/storage.py).
"""

from __future__ import annotations

import io
import json
import secrets
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from streamrec import storage
from streamrec.errors import ModelStoreError
from streamrec.model.segments import SegmentAssigner
from streamrec.schemas.config import BatchConfig, FeedbackConfig

CURRENT = "current"
ITEM_MATRIX = "item_matrix.npy"
SEGMENT_ASSIGNER = "segments/assigner.npz"


def new_version_name(now_s: float | None = None) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now_s or time.time()))
    return f"v{stamp}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class ItemModel:
    """What scoring and fold-in need: item factors, their Gram matrix and the id map; the
    segment assigner when the version has segments; and for an EASE version its item-item
    matrix, which then ranks the lists (ALS's factors still place users in segments)."""

    version: str
    item_ids: list[str]
    item_factors: np.ndarray
    gram: np.ndarray
    meta: dict[str, Any]
    segments: SegmentAssigner | None = None
    item_matrix: np.ndarray | None = None

    def index_of(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.item_ids)}


def training_record(batch: BatchConfig, feedback: FeedbackConfig) -> dict[str, Any]:
    """The part of a version's meta.json that says how it was trained: ALS's parameters and
    the events -> ratings transform (what ``check_foldable`` reads back)."""
    return {
        "params": {
            "family": batch.family,
            "rank": batch.rank,
            "reg_param": batch.reg_param,
            "alpha": batch.alpha,
            "max_iter": batch.max_iter,
            "implicit": batch.implicit,
            **(
                {"ease_l2": batch.ease_l2, "ease_binary": batch.ease_binary}
                if batch.family == "ease"
                else {}
            ),
        },
        "feedback": asdict(feedback),
    }


def trained_setting(batch: BatchConfig, meta: dict[str, Any] | None) -> BatchConfig:
    """``batch`` with the setting a version's meta.json says it was trained with (the inverse
    of ``training_record``); ``batch`` itself when the record is missing or unreadable."""
    params = (meta or {}).get("params") or {}
    try:
        setting = replace(
            batch,
            family=str(params.get("family", "als")),
            rank=int(params["rank"]),
            reg_param=float(params["reg_param"]),
            alpha=float(params["alpha"]),
            max_iter=int(params.get("max_iter", batch.max_iter)),
        )
        if setting.family == "ease":
            setting = replace(
                setting,
                ease_l2=float(params["ease_l2"]),
                ease_binary=bool(params["ease_binary"]),
            )
        return setting
    except (KeyError, TypeError, ValueError):
        return batch


@dataclass(frozen=True)
class FoldInParams:
    """What folding a user into a version takes besides its factors: the regularisation and
    confidence scale ALS was trained with, and whether an EASE version binarises feedback."""

    reg_param: float
    alpha: float
    ease_binary: bool = False


def fold_in_params(model: ItemModel) -> FoldInParams:
    """The version's own training parameters; ``ModelStoreError`` when it has none to fold in
    with (an explicit-ratings model, or meta.json without them)."""
    params = model.meta.get("params") or {}
    if not params.get("implicit", True):
        raise ModelStoreError(
            f"model {model.version} models explicit ratings: users cannot be folded in with "
            "implicit ALS's confidence weighting"
        )
    try:
        return FoldInParams(
            float(params["reg_param"]), float(params["alpha"]), bool(params.get("ease_binary"))
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelStoreError(
            f"model {model.version}: meta.json lacks a usable params.{exc.args[0]} to fold "
            "users in with"
        ) from None


def check_foldable(model: ItemModel, feedback: dict[str, Any]) -> FoldInParams:
    """``model``'s fold-in parameters, once it is clear that users folded in with them and with
    the ``feedback`` transform (``asdict(FeedbackConfig)``) get what training would have given
    them: the version must record the same transform of events into ratings. Versions from
    before the transform was recorded are taken as trained with it."""
    params = fold_in_params(model)
    trained_with = model.meta.get("feedback")
    if trained_with is not None and trained_with != feedback:
        raise ModelStoreError(
            f"model {model.version} was trained with feedback {trained_with}, and this job "
            f"weighs events with {feedback}: its fold-in would not match training. Give both "
            "jobs the same `feedback` section."
        )
    return params


def version_dir(store: str | Path, version: str) -> str:
    return storage.join(store, version)


def _save_array(fs: storage.FileSystem, location: str, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    fs.write_bytes(location, buffer.getvalue())


def _load_array(fs: storage.FileSystem, location: str) -> np.ndarray:
    array: np.ndarray = np.load(io.BytesIO(fs.read_bytes(location)), allow_pickle=False)
    return array


def write_item_model(
    store: str | Path,
    version: str,
    item_ids: list[str],
    item_factors: np.ndarray,
    meta: dict[str, Any],
    item_matrix: np.ndarray | None = None,
) -> str:
    folder = version_dir(store, version)
    fs = storage.filesystem(folder)
    factors = np.asarray(item_factors, dtype=np.float32)
    _save_array(fs, storage.join(folder, "item_factors.npy"), factors)
    f64 = factors.astype(np.float64)
    _save_array(fs, storage.join(folder, "gram.npy"), f64.T @ f64)
    if item_matrix is not None:
        matrix = np.asarray(item_matrix, dtype=np.float32)
        _save_array(fs, storage.join(folder, ITEM_MATRIX), matrix)
    fs.write_bytes(
        storage.join(folder, "item_ids.json"), json.dumps(item_ids, ensure_ascii=False).encode()
    )
    # meta.json last: its presence marks the version complete (see versions()).
    fs.write_bytes(
        storage.join(folder, "meta.json"), json.dumps(meta, indent=2, sort_keys=True).encode()
    )
    return folder


def write_version_file(store: str | Path, version: str, name: str, data: bytes) -> None:
    """An extra file of a version (e.g. the segment assigner), before it is promoted."""
    location = storage.join(version_dir(store, version), name)
    storage.filesystem(location).write_bytes(location, data)


def read_version_file(store: str | Path, version: str, name: str) -> bytes | None:
    location = storage.join(version_dir(store, version), name)
    try:
        return storage.filesystem(location).read_bytes(location)
    except FileNotFoundError:
        return None


def promote(store: str | Path, version: str) -> None:
    """Point ``current`` at ``version`` (atomic: a rename over the old pointer)."""
    fs = storage.filesystem(storage.absolute(store))
    if not fs.exists(storage.join(store, version, "meta.json")):
        raise ModelStoreError(
            f"cannot promote {version}: {version_dir(store, version)} is incomplete"
        )
    pointer = storage.join(store, CURRENT)
    tmp = storage.temporary_sibling(pointer)
    fs.write_bytes(tmp, version.encode())
    fs.replace(tmp, pointer)


def current_version(store: str | Path) -> str | None:
    pointer = storage.join(store, CURRENT)
    try:
        return storage.filesystem(pointer).read_bytes(pointer).decode().strip() or None
    except FileNotFoundError:
        return None


def load_item_model(store: str | Path, version: str | None = None) -> ItemModel:
    version = version or current_version(store)
    if version is None:
        raise ModelStoreError(
            f"no model in {storage.absolute(store)} yet: run `streamrec batch run` first"
        )
    folder = version_dir(store, version)
    fs = storage.filesystem(folder)
    try:
        meta = json.loads(fs.read_bytes(storage.join(folder, "meta.json")))
        ease = (meta.get("params") or {}).get("family") == "ease"
        return ItemModel(
            version=version,
            item_ids=json.loads(fs.read_bytes(storage.join(folder, "item_ids.json"))),
            item_factors=_load_array(fs, storage.join(folder, "item_factors.npy")),
            gram=_load_array(fs, storage.join(folder, "gram.npy")),
            meta=meta,
            segments=_load_assigner(store, version),
            item_matrix=_load_array(fs, storage.join(folder, ITEM_MATRIX)) if ease else None,
        )
    except (FileNotFoundError, ValueError) as exc:
        raise ModelStoreError(
            f"model version {version} in {folder} cannot be loaded: {exc}"
        ) from exc


def _load_assigner(store: str | Path, version: str) -> SegmentAssigner | None:
    raw = read_version_file(store, version, SEGMENT_ASSIGNER)
    return None if raw is None else SegmentAssigner.from_bytes(raw)


def read_meta(store: str | Path, version: str) -> dict[str, Any]:
    location = storage.join(store, version, "meta.json")
    try:
        meta: dict[str, Any] = json.loads(storage.filesystem(location).read_bytes(location))
    except (FileNotFoundError, ValueError) as exc:
        raise ModelStoreError(f"model version {version}: unreadable meta.json ({exc})") from exc
    return meta


def id_map_dir(store: str | Path, version: str, kind: str) -> str:
    """Where a version keeps its ``users`` or ``items`` id map (Parquet: id, index)."""
    return storage.join(store, version, "id_maps", kind)


def versions(store: str | Path) -> list[str]:
    """Complete versions, oldest first (names sort by creation time)."""
    root = storage.absolute(store)
    fs = storage.filesystem(root)
    return sorted(
        name
        for name in fs.list_names(root)
        if name.startswith("v") and fs.exists(storage.join(root, name, "meta.json"))
    )


def remove_incomplete(store: str | Path) -> list[str]:
    """Delete version folders without meta.json: what runs killed while saving left behind.
    Only safe while no run is saving (the caller holds the batch lock)."""
    root = storage.absolute(store)
    fs = storage.filesystem(root)
    if not fs.exists(root):
        return []
    doomed = [
        name
        for name in fs.list_names(root)
        if name.startswith("v") and not fs.exists(storage.join(root, name, "meta.json"))
    ]
    for name in doomed:
        fs.delete_tree(storage.join(root, name))
    return doomed


def prune(store: str | Path, keep: int) -> list[str]:
    """Delete all but the ``keep`` newest versions, never the current one; returns the deleted."""
    current = current_version(store)
    doomed = [v for v in versions(store)[:-keep] if v != current] if keep > 0 else []
    for version in doomed:
        folder = version_dir(store, version)
        storage.filesystem(folder).delete_tree(folder)
    return doomed
