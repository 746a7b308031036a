"""Local side of the storage API: path vs URI handling and the atomic pointer replace."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamrec import storage

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("location", "uri"),
    [
        ("hdfs://nn:8020/models", True),
        ("s3a://bucket/x", True),
        ("file:///tmp/x", True),
        ("/tmp/x", False),
        ("relative/dir", False),
        ("./a:b", False),
    ],
)
def test_is_uri(location: str, uri: bool) -> None:
    assert storage.is_uri(location) is uri


def test_join_keeps_uris_and_resolves_paths(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert storage.join("hdfs://nn/models/", "v1", "meta.json") == "hdfs://nn/models/v1/meta.json"
    monkeypatch.chdir(tmp_path)
    assert storage.join("models", "v1") == str(tmp_path / "models" / "v1")


def test_local_filesystem_round_trip(tmp_path: Path) -> None:
    fs = storage.filesystem(str(tmp_path))
    target = str(tmp_path / "a" / "current")
    with pytest.raises(FileNotFoundError):
        fs.read_bytes(target)
    fs.write_bytes(target, b"v1")
    tmp = storage.temporary_sibling(target)
    assert Path(tmp).name.startswith(".current.")
    fs.write_bytes(tmp, b"v2")
    fs.replace(tmp, target)
    assert fs.read_bytes(target) == b"v2"
    assert fs.list_names(str(tmp_path / "a")) == ["current"]
    assert fs.matches_any(str(tmp_path), "*/current") and not fs.matches_any(str(tmp_path), "*/x")
    fs.delete_tree(str(tmp_path / "a"))
    assert not fs.exists(target) and fs.list_names(str(tmp_path / "a")) == []
