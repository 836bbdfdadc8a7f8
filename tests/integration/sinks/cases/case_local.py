"""The local sink under the conformance suite: its "service" is a temporary folder.

A folder cannot answer with HTTP statuses or corrupt bytes in transit, so the fake says so
(`supports_faults`, `can_corrupt`) and the suite skips those tests by that, not by the sink's name.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from filesync.sinks.local import META_SUFFIX, LocalSink
from filesync.testing.sink_conformance import SinkCase, StoredObject


class FakeFolder:
    """FakeStore over a temporary folder: every regular file in it is a stored object, leftovers included."""

    supports_faults = False
    can_corrupt = False

    def __init__(self) -> None:
        self.root = Path()

    def start(self) -> FakeFolder:
        self.root = Path(tempfile.mkdtemp(prefix="filesync-local-sink-"))
        return self

    def stop(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def stored(self) -> list[StoredObject]:
        found: list[StoredObject] = []
        for path in sorted(self.root.rglob("*")):
            if not path.is_file() or path.name.endswith(META_SUFFIX):
                continue
            digest = hashlib.sha256()
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
            meta_path = path.with_name(path.name + META_SUFFIX)
            meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
            found.append(StoredObject(
                key=path.relative_to(self.root).as_posix(), size=path.stat().st_size,
                sha256=digest.hexdigest(),
                metadata={k: str(v) for k, v in meta.items()}, content_type=meta.get("mime"),
            ))
        return found

    def fail_next(self, status: int, *, headers: dict[str, str] | None = None, times: int = 1) -> None:
        raise NotImplementedError("a folder cannot answer with an HTTP status")

    def corrupt_next(self) -> None:
        raise NotImplementedError("a folder cannot corrupt bytes in transit")


def make(fake: FakeFolder, bad_credentials: bool = False) -> LocalSink:
    if bad_credentials:
        # The local sink's only "credential" is write access: a path under a regular file is never writable.
        blocker = fake.root.parent / f"{fake.root.name}.not-a-folder"
        blocker.write_bytes(b"")
        return LocalSink(blocker / "inside")
    return LocalSink(fake.root)


CASE = SinkCase(name="local", fake=FakeFolder, make=make)
