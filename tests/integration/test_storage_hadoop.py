"""The Hadoop side of the storage API, through the JVM of a real SparkSession (file:// URIs use
Hadoop's local FileSystem, the same code path as hdfs:// or s3a:// on a cluster)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import SparkSession

from streamrec import storage
from streamrec.errors import ModelStoreError
from streamrec.model import store

pytestmark = pytest.mark.integration


def test_hadoop_filesystem_operations(spark: SparkSession, tmp_path: Path) -> None:
    root = f"file://{tmp_path}"
    fs = storage.filesystem(root)
    assert isinstance(fs, storage.HadoopFileSystem)
    pointer = storage.join(root, "store", "current")
    with pytest.raises(FileNotFoundError):
        fs.read_bytes(pointer)
    fs.write_bytes(pointer, b"v1")
    tmp = storage.temporary_sibling(pointer)
    fs.write_bytes(tmp, b"v2\x00\xff")  # bytes, not text
    fs.replace(tmp, pointer)  # over an existing target
    assert fs.read_bytes(pointer) == b"v2\x00\xff"
    assert not fs.exists(tmp)
    assert "current" in fs.list_names(storage.join(root, "store"))
    assert fs.matches_any(root, "*/current") and not fs.matches_any(root, "*/nothing")
    fs.delete_tree(storage.join(root, "store"))
    assert fs.list_names(storage.join(root, "store")) == []


def test_model_store_on_a_uri(spark: SparkSession, tmp_path: Path) -> None:
    uri = f"file://{tmp_path}/models"
    with pytest.raises(ModelStoreError, match="batch run"):
        store.load_item_model(uri)
    factors = np.arange(12, dtype=np.float32).reshape(4, 3)
    for version in ("v1", "v2", "v3"):
        store.write_item_model(uri, version, ["a", "b", "c", "d"], factors, {"v": version})
        store.promote(uri, version)
    model = store.load_item_model(uri)
    assert model.version == "v3" and np.array_equal(model.item_factors, factors)
    assert np.allclose(model.gram, factors.T.astype(np.float64) @ factors)
    store.write_version_file(uri, "v3", "extra.bin", b"\x01\x02")
    assert store.read_version_file(uri, "v3", "extra.bin") == b"\x01\x02"
    assert store.read_version_file(uri, "v3", "missing.bin") is None
    assert store.prune(uri, keep=1) == ["v1", "v2"]
    assert store.versions(uri) == ["v3"]
    assert sorted(
        p.name for p in (tmp_path / "models").iterdir() if not p.name.startswith(".")
    ) == ["current", "v3"]
