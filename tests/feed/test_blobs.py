"""The content-addressed blob store."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from feed.blobs import BlobStore


def test_a_blob_is_stored_once_under_its_digest(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    data = b"From: a@example.org\r\n\r\nhello\r\n"
    digest = store.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "blobs" / digest[:2] / digest).read_bytes() == data
    pending = store.put_soon(data)
    assert pending.digest == digest
    assert pending.wait() == digest
    assert [p.name for p in (tmp_path / "blobs" / digest[:2]).iterdir()] == [digest]
    assert store.get(digest) == data


def test_it_refuses_a_path_for_anything_but_a_digest(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a SHA-256"):
        BlobStore(tmp_path).path_for("../../etc/passwd")
