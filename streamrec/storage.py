"""Local paths and Hadoop-compatible URIs behind one small file API.

Jobs on a cluster keep their model store and event store on a shared file system (``hdfs://``,
``s3a://``, ``gs://``, ``abfs://`` ...), and on one machine in a plain folder. Spark reads and
writes both natively; what the driver itself reads and writes (the model's small files, the
``current`` pointer, listing and pruning versions) goes through this module:

- a plain path (no scheme) is a local folder, handled with ``pathlib`` and ``os.replace``;
- any URI with a scheme, ``file://`` included, goes through Hadoop's ``FileSystem`` in the JVM
  of the active SparkSession, so the cluster's Hadoop configuration (credentials, name nodes)
  applies exactly as it does to Spark's own reads and writes.

``replace`` is the one operation whose atomicity matters (the model pointer). Locally it is a
rename over the target; on Hadoop, ``FileContext.rename(OVERWRITE)``, which is atomic on HDFS
and local disks. Object stores (S3A, GCS, ABFS) cannot rename atomically, but a single small
object write is atomic there, so the pointer is written in place.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any, Protocol

from streamrec.errors import ModelStoreError

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# Stores whose rename is a copy: the pointer is written in place (one atomic object write).
_OBJECT_STORES = frozenset({"s3", "s3a", "s3n", "gs", "abfs", "abfss", "wasb", "wasbs", "oss"})


def is_uri(location: str) -> bool:
    """True for ``scheme:...`` locations (``file:///x``, ``hdfs://nn/x``), False for paths."""
    return bool(_SCHEME.match(location))


def absolute(location: str | Path) -> str:
    """A location Spark resolves the same way on every executor: URIs as given, local paths
    made absolute (a relative path would be relative to each process's working directory)."""
    text = str(location)
    return text.rstrip("/") if is_uri(text) else str(Path(text).resolve())


def join(location: str | Path, *names: str) -> str:
    base = absolute(location)
    return "/".join([base, *names]) if is_uri(base) else str(Path(base, *names))


class FileSystem(Protocol):
    def exists(self, location: str) -> bool: ...
    def read_bytes(self, location: str) -> bytes: ...
    def write_bytes(self, location: str, data: bytes) -> None: ...
    def replace(self, source: str, target: str) -> None: ...
    def list_names(self, location: str) -> list[str]: ...
    def matches_any(self, location: str, pattern: str) -> bool: ...
    def delete_tree(self, location: str) -> None: ...


class LocalFileSystem:
    def exists(self, location: str) -> bool:
        return Path(location).exists()

    def read_bytes(self, location: str) -> bytes:
        return Path(location).read_bytes()

    def write_bytes(self, location: str, data: bytes) -> None:
        Path(location).parent.mkdir(parents=True, exist_ok=True)
        Path(location).write_bytes(data)

    def replace(self, source: str, target: str) -> None:
        os.replace(source, target)

    def list_names(self, location: str) -> list[str]:
        root = Path(location)
        return sorted(p.name for p in root.iterdir()) if root.is_dir() else []

    def matches_any(self, location: str, pattern: str) -> bool:
        return any(Path(location).glob(pattern))

    def delete_tree(self, location: str) -> None:
        shutil.rmtree(location, ignore_errors=True)


class HadoopFileSystem:
    """Hadoop's FileSystem of the active SparkSession's JVM (py4j), for any scheme the cluster's
    Hadoop configuration knows."""

    def __init__(self) -> None:
        from pyspark.sql import SparkSession

        spark = SparkSession.getActiveSession()
        if spark is None:
            raise ModelStoreError(
                "a Hadoop URI (scheme://...) needs a running SparkSession to reach its file "
                "system; use a local path, or call this from a Spark job"
            )
        self._spark = spark
        self._jvm: Any = spark._jvm
        self._conf = spark._jsc.hadoopConfiguration()

    def _path(self, location: str) -> Any:
        return self._jvm.org.apache.hadoop.fs.Path(location)

    def _fs(self, path: Any) -> Any:
        return path.getFileSystem(self._conf)

    def exists(self, location: str) -> bool:
        path = self._path(location)
        return bool(self._fs(path).exists(path))

    def read_bytes(self, location: str) -> bytes:
        path = self._path(location)
        try:
            stream = self._fs(path).open(path)
        except Exception as exc:  # py4j wraps FileNotFoundException
            raise FileNotFoundError(location) from exc
        try:
            return bytes(self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
        finally:
            stream.close()

    def write_bytes(self, location: str, data: bytes) -> None:
        path = self._path(location)
        out = self._fs(path).create(path, True)
        try:
            out.write(bytearray(data))
        finally:
            out.close()

    def replace(self, source: str, target: str) -> None:
        src, dst = self._path(source), self._path(target)
        fs = self._fs(dst)
        # getUri, not getScheme: RawLocalFileSystem (streamrec.spark's file:// choice) does not
        # implement getScheme.
        if str(fs.getUri().getScheme()).lower() in _OBJECT_STORES:
            self.write_bytes(target, self.read_bytes(source))
            fs.delete(src, False)
            return
        rename = getattr(self._jvm.org.apache.hadoop.fs, "Options$Rename")
        options = self._spark.sparkContext._gateway.new_array(rename, 1)  # type: ignore[union-attr]
        options[0] = rename.OVERWRITE
        context = self._jvm.org.apache.hadoop.fs.FileContext.getFileContext(dst.toUri(), self._conf)
        context.rename(src, dst, options)

    def list_names(self, location: str) -> list[str]:
        path = self._path(location)
        fs = self._fs(path)
        if not fs.exists(path):
            return []
        return sorted(str(status.getPath().getName()) for status in fs.listStatus(path))

    def matches_any(self, location: str, pattern: str) -> bool:
        path = self._path(f"{location}/{pattern}")
        found = self._fs(path).globStatus(path)
        return found is not None and len(found) > 0

    def delete_tree(self, location: str) -> None:
        path = self._path(location)
        self._fs(path).delete(path, True)


def filesystem(location: str) -> FileSystem:
    return HadoopFileSystem() if is_uri(location) else LocalFileSystem()


def temporary_sibling(location: str) -> str:
    """A fresh hidden name beside ``location`` (Hadoop and Spark readers skip ``.`` names)."""
    head, _, name = location.rpartition("/")
    return f"{head}/.{name}.{secrets.token_hex(4)}"
