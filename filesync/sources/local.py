"""A folder as the source: object keys are relative paths below FILESYNC_SOURCE_DIR."""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from filesync.config import Setting
from filesync.errors import SourceError, SourceNotFound, SourceUnavailable
from filesync.sinks.naming import safe_relative
from filesync.sources import ObjectInfo


class LocalSource:
    name: ClassVar[str] = "local"
    SETTINGS: ClassVar[tuple[Setting, ...]] = (
        Setting("FILESYNC_SOURCE_DIR", "Folder read by the `local` source; keys are paths below it.",
                required=True, group="Source"),
    )

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> LocalSource:
        return cls(Path(values["FILESYNC_SOURCE_DIR"]).expanduser())

    def _path(self, key: str) -> Path:
        try:
            rel = safe_relative(key, sink="source")
        except Exception as exc:
            raise SourceNotFound(f"invalid key {key!r}: {exc}") from None
        return self.root / rel

    def check(self) -> None:
        if not self.root.is_dir():
            raise SourceUnavailable(f"source folder {self.root} does not exist")

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise SourceNotFound("not found in bucket") from None
        except OSError as exc:
            raise SourceError(f"cannot read {key!r}: {exc.strerror}") from exc
        if not path.is_file():
            raise SourceNotFound("not found in bucket")
        return ObjectInfo(size=st.st_size, content_type=mimetypes.guess_type(path.name)[0], etag=None)

    def read_head(self, key: str, n: int) -> bytes:
        with self.open(key) as fh:
            return fh.read(n)

    def open(self, key: str, offset: int = 0) -> BinaryIO:
        try:
            fh = self._path(key).open("rb")
        except FileNotFoundError:
            raise SourceNotFound("not found in bucket") from None
        except OSError as exc:
            raise SourceError(f"cannot read {key!r}: {exc.strerror}") from exc
        if offset:
            fh.seek(offset)
        return fh

    def close(self) -> None:
        pass
