"""The local source under the conformance suite: its store is a folder below pytest's tmp_path.

A folder answers no HTTP status and has no listing requests to count, so the store says so
(`supports_faults` is False, no `list_calls`) and the suite skips those tests by that.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from filesync.sources.local import LocalSource
from filesync.testing.source_conformance import SourceCase


class FolderStore:
    supports_faults = False

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def fail_next(self, status: int, *, times: int = 1) -> None:
        raise NotImplementedError("a folder cannot answer with an HTTP status")


def store(request: pytest.FixtureRequest) -> FolderStore:
    root = request.getfixturevalue("tmp_path") / "source"
    root.mkdir()
    return FolderStore(root)


def make(store: FolderStore, *, page_size: int, broken: bool = False) -> LocalSource:
    # A folder has no pages; `broken` is a folder that does not exist.
    return LocalSource(store.root.parent / "no-such-folder" if broken else store.root)


CASE = SourceCase(name="local", store=store, make=make)
