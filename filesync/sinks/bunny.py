"""Bunny Edge Storage as a destination, over its HTTP API (one PUT per file, no chunking).

The body is spooled to a bounded temporary file while its SHA-256 is computed, because Bunny
verifies an uploaded file only against a `Checksum` header sent with the PUT, i.e. known before the
first byte leaves. The same digest makes uploads idempotent: a `DESCRIBE` of the target that
reports the same checksum means the file is already there and nothing is sent.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, ClassVar
from urllib.parse import quote, urlsplit

import requests

from filesync.errors import (
    BodyEndedEarly,
    DestinationRefused,
    ErrorClass,
    NetworkError,
    PermanentError,
    RateLimited,
    SinkError,
)
from filesync.http import make_session, raise_for_status, translated
from filesync.model import Kind, RemoteObject, SourceObject
from filesync.settings import Setting, http_url, setting, settings_of
from filesync.sinks import Capabilities, Sink, SinkContext, UploadSession
from filesync.sinks._body import Counted
from filesync.sinks.naming import DEFAULT_TEMPLATE, object_name, safe_name, validate_template

CHUNK = 1024 * 1024
SPOOL_IN_MEMORY = 8 * 1024 * 1024  # bodies up to this size never touch the disk
REGION_HOSTS: Mapping[str, str] = {
    "de": "storage.bunnycdn.com",
    **{r: f"{r}.storage.bunnycdn.com" for r in ("uk", "ny", "la", "sg", "se", "br", "jh", "syd")},
}
#: Bunny answers a per-operation concurrency limit with 400 and this text; it is worth another try.
_BUSY = "unable to process request"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")


def storage_region(raw: str) -> str:
    region = raw.strip().lower()
    if region not in REGION_HOSTS:
        raise ValueError(f"must be one of {', '.join(REGION_HOSTS)}")
    return region


def pull_zone_url(raw: str) -> str:
    """A pull zone as a base URL: `cdn.example.com`, `myzone.b-cdn.net` or `https://host/prefix`."""
    if "://" in raw:
        return http_url(raw)
    host = raw.strip().strip("/")
    if not _HOSTNAME.match(host):
        raise ValueError("must be a hostname (myzone.b-cdn.net) or an https:// URL")
    return f"https://{host}"


def root_folder(raw: str) -> str:
    try:
        return safe_name(raw.strip().strip("/"), sink="bunny")
    except SinkError as exc:
        raise ValueError(exc.reason) from None


def _reason(response: requests.Response) -> str:
    """Bunny's error bodies are `{"HttpCode":..,"Message":..}` (sometimes inside a list)."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict) and isinstance(data.get("Message"), str):
        return str(data["Message"])
    return response.text[:200]


_GROUP = "Sink: bunny"


@dataclass(frozen=True)
class BunnySettings:
    zone: str = setting("BUNNY_STORAGE_ZONE", "Storage zone name.", required=True, group=_GROUP)
    api_key: str = setting("BUNNY_API_KEY", "The storage zone's password (FTP & API Access), not the account "
                           "API key.", required=True, secret=True, group=_GROUP)
    region: str = setting("BUNNY_REGION", f"The zone's primary storage region: {', '.join(REGION_HOSTS)}.",
                          default="de", parse=storage_region, group=_GROUP)
    pull_zone: str | None = setting("BUNNY_PULL_ZONE", "Pull zone hostname or URL serving the zone, for public "
                                    "URLs (e.g. myzone.b-cdn.net).", parse=pull_zone_url, group=_GROUP)
    root: str | None = setting("BUNNY_ROOT_FOLDER", "Folder inside the zone that objects go under.",
                               parse=root_folder, group=_GROUP)
    template: str = setting("BUNNY_TEMPLATE", "Object name template: {id} {ext} {path} {name} {stem} {kind} "
                            "{date:%Y/%m}.", default=DEFAULT_TEMPLATE, parse=validate_template, group=_GROUP)
    endpoint: str | None = setting("BUNNY_ENDPOINT", "Base URL replacing the region's host (proxies, tests).",
                                   parse=http_url, group=_GROUP)


class BunnySink:
    name: ClassVar[str] = "bunny"
    Settings: ClassVar[type[BunnySettings]] = BunnySettings
    SETTINGS: ClassVar[tuple[Setting, ...]] = settings_of(BunnySettings)
    capabilities = Capabilities(
        kinds=frozenset({Kind.IMAGE, Kind.VIDEO, Kind.OTHER}), keeps_metadata=False, checksum="sha256"
    )

    def __init__(
        self,
        zone: str,
        access_key: str,
        *,
        region: str = "de",
        endpoint: str | None = None,
        pull_zone: str | None = None,
        root: str = "",
        template: str = DEFAULT_TEMPLATE,
        session: requests.Session | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.zone = zone
        self._key = access_key
        self.region = storage_region(region)
        self.endpoint = (endpoint or f"https://{REGION_HOSTS[self.region]}").rstrip("/")
        self.pull_zone = pull_zone_url(pull_zone) if pull_zone else None
        self.root = root.strip("/")
        self.template = template
        self.http = session or make_session(timeout=timeout)

    @classmethod
    def from_settings(cls, values: BunnySettings, context: SinkContext) -> BunnySink:
        return cls(
            values.zone,
            values.api_key,
            region=values.region,
            endpoint=values.endpoint,
            pull_zone=values.pull_zone,
            root=values.root or "",
            template=values.template,
            session=make_session(timeout=context.http_timeout, pool=max(4, context.concurrency)),
        )

    def __repr__(self) -> str:
        return f"BunnySink(zone={self.zone!r}, endpoint={self.endpoint!r})"

    def _target(self, obj: SourceObject) -> str:
        return object_name(self.template, obj, sink=self.name, prefix=self.root)

    def _url(self, name: str) -> str:
        return f"{self.endpoint}/{quote(self.zone, safe='')}/{quote(name, safe='/')}"

    def public_url(self, name: str) -> str | None:
        return f"{self.pull_zone}/{quote(name, safe='/')}" if self.pull_zone else None

    def _request(self, method: str, url: str, **kw: Any) -> requests.Response:
        headers = {"AccessKey": self._key, **kw.pop("headers", {})}
        with translated(self.name):
            response = self.http.request(method, url, headers=headers, **kw)
        if response.status_code == 401:
            raise DestinationRefused(f"access key refused for storage zone {self.zone!r}", sink=self.name,
                                     status=401, setting="BUNNY_API_KEY and BUNNY_REGION")
        return response

    def check(self) -> None:
        host = urlsplit(self.endpoint).netloc
        try:
            response = self.http.get(f"{self.endpoint}/{quote(self.zone, safe='')}/",
                                     headers={"AccessKey": self._key, "Accept": "application/json"})
        except requests.RequestException as exc:
            raise NetworkError(f"storage endpoint {host} is unreachable ({type(exc).__name__})",
                               sink=self.name) from None
        if response.status_code == 401:
            raise PermanentError(f"access key refused for storage zone {self.zone!r} at {host} (check "
                                 "BUNNY_API_KEY and BUNNY_REGION)", sink=self.name, status=401)
        if response.status_code == 404:
            raise PermanentError(f"unknown storage zone {self.zone!r} at {host}", sink=self.name, status=404,
                                 error_class=ErrorClass.NOT_FOUND)
        raise_for_status(response, sink=self.name, reason=_reason)

    def exists(self, obj: SourceObject, remote_id: str | None = None) -> RemoteObject | None:
        name = remote_id or self._target(obj)
        response = self._request("DESCRIBE", self._url(name))
        if response.status_code == 404:
            return None
        raise_for_status(response, sink=self.name, reason=_reason)
        info = response.json()
        if not isinstance(info, dict) or info.get("IsDirectory"):
            return None
        checksum = info.get("Checksum")
        return RemoteObject(
            remote_id=name, url=self.public_url(name), size=int(info.get("Length") or 0),
            checksum=checksum.lower() if isinstance(checksum, str) and checksum else None, existed=True,
        )

    def name_of(self, obj: SourceObject) -> str | None:
        return self._target(obj)

    def upload(self, obj: SourceObject, body: BinaryIO, session: UploadSession) -> RemoteObject:
        name = self._target(obj)
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, prefix="filesync-bunny-") as spool:
            digest, size = self._spool(obj, body, spool)
            existing = self.exists(obj, name)
            if existing is not None and existing.checksum == digest and existing.size == size:
                return existing  # the same bytes: already there (Bunny keeps no owner; the ledger does)
            spool.seek(0)
            response = self._request(
                "PUT", self._url(name),
                data=Counted(spool, size, session.progress, sink=self.name, what="spooled copy"),
                headers={
                    "Checksum": digest.upper(),
                    "Content-Length": str(size),
                    "Content-Type": "application/octet-stream",
                    "Override-Content-Type": obj.mime,
                },
            )
        if response.status_code == 400:
            raise self._refused(response, name)
        raise_for_status(response, sink=self.name, reason=_reason)
        return RemoteObject(remote_id=name, url=self.public_url(name), size=size, checksum=digest)

    def _spool(self, obj: SourceObject, body: BinaryIO, spool: IO[bytes]) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        while chunk := body.read(CHUNK):
            spool.write(chunk)
            digest.update(chunk)
            size += len(chunk)
        if size != obj.size:
            raise BodyEndedEarly(f"source {obj.path!r}", size, obj.size, sink=self.name)
        return digest.hexdigest(), size

    def _refused(self, response: requests.Response, name: str) -> SinkError:
        message = _reason(response)
        if _BUSY in message.lower():
            return RateLimited(f"too many concurrent operations: {message}", sink=self.name, status=400)
        return PermanentError(
            f"upload of {name!r} refused: the SHA-256 Checksum did not match the bytes received, or the path "
            f"is invalid ({message})", sink=self.name, status=400, error_class=ErrorClass.INVALID,
        )

    def close(self) -> None:
        self.http.close()


_conforms: type[Sink] = BunnySink
