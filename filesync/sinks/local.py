"""A folder as a destination. The reference sink: other sinks copy its layout and names.

Writes go to a hidden temporary file that is renamed into place once complete and flushed, so a
crash never leaves a partial object under the final name. Metadata sits beside each object in
`<name>.meta.json`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from filesync.errors import ErrorClass, NameTaken, PermanentError, SinkError
from filesync.model import Kind, RemoteObject, SourceObject
from filesync.settings import Setting, setting, settings_of
from filesync.sinks import Capabilities, Sink, SinkContext, UploadSession
from filesync.sinks.naming import DEFAULT_TEMPLATE, object_name, validate_template

CHUNK = 1024 * 1024
META_SUFFIX = ".meta.json"


@dataclass(frozen=True)
class LocalSettings:
    dir: str = setting("FILESYNC_LOCAL_DIR", "Folder the `local` sink writes to (created if missing).",
                       required=True, group="Sink: local")
    template: str = setting("FILESYNC_LOCAL_TEMPLATE", "Object name template: {id} {ext} {path} {name} {stem} "
                            "{kind} {date:%Y/%m}.", default=DEFAULT_TEMPLATE, parse=validate_template,
                            group="Sink: local")


class LocalSink:
    name: ClassVar[str] = "local"
    Settings: ClassVar[type[LocalSettings]] = LocalSettings
    SETTINGS: ClassVar[tuple[Setting, ...]] = settings_of(LocalSettings)
    capabilities = Capabilities(
        kinds=frozenset({Kind.IMAGE, Kind.VIDEO, Kind.OTHER}), keeps_metadata=True, checksum=None
    )

    def __init__(self, root: Path, template: str = DEFAULT_TEMPLATE) -> None:
        self.root = root.resolve()  # file:// URLs need an absolute path
        self.template = template

    @classmethod
    def from_settings(cls, values: LocalSettings, context: SinkContext) -> LocalSink:
        return cls(Path(values.dir).expanduser(), values.template)

    def _target(self, obj: SourceObject) -> tuple[str, Path]:
        name = object_name(self.template, obj, sink=self.name)
        return name, self.root / name

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".filesync-check-"):
                pass
        except OSError as exc:
            raise PermanentError(f"folder {self.root} is not writable: {exc.strerror}", sink=self.name) from None

    def exists(self, obj: SourceObject, remote_id: str | None = None) -> RemoteObject | None:
        name = remote_id or self._target(obj)[0]
        path = self.root / name
        if not path.is_file():
            return None
        meta = self._read_meta(path)
        owner = meta.get("fileId")
        return RemoteObject(
            remote_id=name, url=path.as_uri(), size=path.stat().st_size, checksum=meta.get("sha256"), existed=True,
            owner=str(owner) if owner is not None else None,
        )

    def name_of(self, obj: SourceObject) -> str | None:
        return self._target(obj)[0]

    def upload(self, obj: SourceObject, body: BinaryIO, session: UploadSession) -> RemoteObject:
        name, path = self._target(obj)
        existing = self.exists(obj)
        if existing is not None:
            if existing.owner is not None and existing.owner != obj.file_id:
                raise NameTaken(f"{name!r} holds file {existing.owner}'s copy; file {obj.file_id} maps to the same "
                                "name (FILESYNC_LOCAL_TEMPLATE): nothing was overwritten", sink=self.name)
            if existing.owner == obj.file_id and existing.size == obj.size and not session.replace:
                return existing
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            digest, size = self._write(path, body, session)
            meta = {**obj.metadata(), "sha256": digest, "size": size, "mime": obj.mime}
            self._write_meta(path, meta)
        except OSError as exc:
            raise SinkError(f"cannot write {name!r}: {exc.strerror}", sink=self.name,
                            error_class=ErrorClass.INTERNAL) from exc
        return RemoteObject(remote_id=name, url=path.as_uri(), size=size, checksum=digest)

    def _write(self, path: Path, body: BinaryIO, session: UploadSession) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
        try:
            os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the copy from the folder's other readers
            with os.fdopen(fd, "wb") as out:
                while chunk := body.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    session.progress(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest.hexdigest(), size

    def _write_meta(self, path: Path, meta: Mapping[str, object]) -> None:
        meta_path = path.with_name(path.name + META_SUFFIX)
        tmp = meta_path.with_name(f".{meta_path.name}.partial")
        tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
        os.replace(tmp, meta_path)

    def _read_meta(self, path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.with_name(path.name + META_SUFFIX).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def read_metadata(self, obj: SourceObject) -> dict[str, Any]:
        """For tests and `verify`: the metadata stored beside the object."""
        return self._read_meta(self._target(obj)[1])

    def close(self) -> None:
        pass


_conforms: type[Sink] = LocalSink
