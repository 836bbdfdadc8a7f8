"""A folder as the source: object keys are relative paths below FILESYNC_SOURCE_DIR."""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, ClassVar

from filesync.errors import SourceError, SourceNotFound, SourceUnavailable
from filesync.paths import UnsafePath, safe_relative
from filesync.settings import Setting, setting, settings_of
from filesync.sources import Entry, ObjectInfo, SourceContext


@dataclass(frozen=True)
class LocalSourceSettings:
    dir: str = setting("FILESYNC_SOURCE_DIR", "Folder read by the `local` source; keys are paths below it.",
                       required=True, group="Source")


class LocalSource:
    name: ClassVar[str] = "local"
    Settings: ClassVar[type[LocalSourceSettings]] = LocalSourceSettings
    SETTINGS: ClassVar[tuple[Setting, ...]] = settings_of(LocalSourceSettings)

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def from_settings(cls, values: LocalSourceSettings, context: SourceContext | None = None) -> LocalSource:
        return cls(Path(values.dir).expanduser())

    def _path(self, key: str) -> Path:
        try:
            rel = safe_relative(key)
        except UnsafePath as exc:
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

    def list(self, prefix: str = "") -> Iterator[Entry]:
        """Regular files in S3's key order (a folder sorts as "name/"), one folder read at a time.

        Symlinked folders are not followed (a loop would never end); a file whose name no key can
        address (a backslash, or "c:" at the root) is left out rather than listed unreadable.
        """
        if not self.root.is_dir():
            raise SourceUnavailable(f"source folder {self.root} does not exist")
        stack: list[Iterator[os.DirEntry[str]]] = [self._sorted(self.root)]
        while stack:
            entry = next(stack[-1], None)
            if entry is None:
                stack.pop()
                continue
            key = Path(entry.path).relative_to(self.root).as_posix()
            try:
                if entry.is_dir(follow_symlinks=False):
                    if (key + "/").startswith(prefix) or prefix.startswith(key + "/"):
                        stack.append(self._sorted(Path(entry.path)))
                    continue
                if not key.startswith(prefix) or not entry.is_file() or not _addressable(key):
                    continue
                st = entry.stat()
            except OSError:
                continue  # removed or unreadable since the folder was read: not there to copy
            yield Entry(key=key, size=st.st_size, content_type=mimetypes.guess_type(entry.name)[0],
                        modified=datetime.fromtimestamp(st.st_mtime, UTC))

    @staticmethod
    def _sorted(folder: Path) -> Iterator[os.DirEntry[str]]:
        try:
            with os.scandir(folder) as found:
                entries = sorted(found, key=lambda e: e.name + "/" if e.is_dir(follow_symlinks=False) else e.name)
        except OSError as exc:
            raise SourceError(f"cannot list {folder}: {exc.strerror}") from None
        return iter(entries)

    def read_head(self, key: str, n: int) -> bytes:
        with self.open(key) as fh:
            return fh.read(n)

    def open_with_info(self, key: str) -> tuple[ObjectInfo, BinaryIO]:
        info = self.stat(key)
        return info, self.open(key)

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


def _addressable(key: str) -> bool:
    try:
        return safe_relative(key) == key
    except UnsafePath:
        return False
