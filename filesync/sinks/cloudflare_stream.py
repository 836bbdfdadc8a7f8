"""Cloudflare Stream over tus: resumable across process restarts, one video per file.

The creation POST is ours (tuspy hides the `stream-media-id` header and uses module-level requests
without a timeout); the upload URL and video uid go into the ledger through `session` before the
first byte is sent. The bytes are then driven by tuspy's Uploader, one `upload_chunk()` at a time
through our paced session, each chunk streamed from the source (no chunk is held whole in memory).

Stream has no client-chosen ids, so a repeat without a resume token looks the file up by creator
(`Upload-Creator: <file id>`) and `meta.fileId` before creating anything.

The server's word on bytes is checked, never taken as progress: each PATCH must answer exactly the
offset it was sent to reach, and a video is done only when its own record (`GET stream/{uid}`) is
ours, out of `pendingupload`, and of the file's size (`_verdict`). Anything short of that is a
transient error; the next attempt asks the tus server (HEAD) where it really is.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar
from urllib.parse import urljoin

import requests
from tusclient.client import TusClient
from tusclient.exceptions import TusCommunicationError, TusUploadFailed
from tusclient.request import TusRequest
from tusclient.uploader.uploader import Uploader

from filesync.errors import ErrorClass, PermanentError, ServerError, SinkError
from filesync.http import translated
from filesync.model import Kind, RemoteObject, SourceObject
from filesync.settings import Setting, setting, settings_of, tus_chunk_size
from filesync.sinks import Capabilities, Sink, SinkContext, UploadSession
from filesync.sinks._body import Counted
from filesync.sinks._cloudflare import (
    GROUP,
    CloudflareAccount,
    CloudflareSettings,
    answer,
    api_error,
    codes_from,
    make_cloudflare_session,
    raise_for_envelope,
    reason_from,
)

TUS_VERSION = "1.0.0"
MAX_CREATOR = 64
DEFAULT_CHUNK = 50 * 1024 * 1024
#: States of a video whose bytes have all arrived (Stream then queues and encodes it).
COMPLETE_STATES = frozenset({"downloading", "queued", "inprogress", "ready", "live-inprogress"})


_Started = tuple[str, str, int]  # (upload URL, video uid, offset)
_Video = dict[str, Any]


@dataclass(frozen=True)
class StreamSettings(CloudflareSettings):
    chunk_bytes: int = setting("FILESYNC_TUS_CHUNK_BYTES", "Bytes per tus PATCH to Stream: a multiple of 262144 "
                               "from 5 MiB to 200 MiB; bigger is faster on a good link, smaller loses less to a "
                               "dropped connection.", default=str(DEFAULT_CHUNK), parse=tus_chunk_size, group=GROUP)


class CloudflareStreamSink:
    name: ClassVar[str] = "cloudflare-stream"
    Settings: ClassVar[type[StreamSettings]] = StreamSettings
    SETTINGS: ClassVar[tuple[Setting, ...]] = settings_of(StreamSettings)
    capabilities = Capabilities(
        kinds=frozenset({Kind.VIDEO}), max_bytes=30_000_000_000, keeps_metadata=True, resumable=True
    )

    def __init__(self, account: CloudflareAccount, timeout: float = 120.0,
                 chunk_size: int = DEFAULT_CHUNK) -> None:
        self.account = account
        self.chunk_size = chunk_size
        self.http = make_cloudflare_session(account, timeout)

    @classmethod
    def from_settings(cls, values: StreamSettings, context: SinkContext) -> CloudflareStreamSink:
        return cls(CloudflareAccount.from_settings(values), timeout=context.http_timeout,
                   chunk_size=values.chunk_bytes)

    # --- the contract -------------------------------------------------------------------------
    def check(self) -> None:
        self._api("GET", "stream", "storage-usage")

    def exists(self, obj: SourceObject, remote_id: str | None = None) -> RemoteObject | None:
        if remote_id:
            video = self._video(remote_id)
            done = video is not None and self._verdict(video, obj, remote_id) is None
            return self._remote(video, obj, existed=True) if video is not None and done else None
        found = self._find_complete(obj, self._videos_of(obj))
        return self._remote(found, obj, existed=True) if found else None

    def upload(self, obj: SourceObject, body: BinaryIO, session: UploadSession) -> RemoteObject:
        started = self._resume(obj, session)
        if isinstance(started, RemoteObject):
            remote = started
        else:
            if started is None:
                candidates = self._videos_of(obj)
                # a changed file: what Stream holds is an older copy, kept until the new one is complete
                done = None if session.replace else self._find_complete(obj, candidates)
                if done is not None:
                    return self._remote(done, obj, existed=True)
                self._drop_orphans(obj, candidates)
                location, uid = self._create(obj)
                session.save_resume_token(json.dumps({"url": location, "uid": uid}))
                started = (location, uid, 0)
            location, uid, offset = started
            self._send(location, body, offset, obj.size, session)
            remote = self._remote(self._confirmed(uid, obj), obj, existed=False)
        if session.replace:
            self._drop_older(obj, keep=remote.remote_id)
        return remote

    def name_of(self, obj: SourceObject) -> str | None:
        return None  # named by the file id: two files never share a name

    def close(self) -> None:
        self.http.close()

    # --- steps --------------------------------------------------------------------------------
    def _resume(self, obj: SourceObject, session: UploadSession) -> _Started | RemoteObject | None:
        """(url, uid, offset) to continue from, the finished video, or None to start afresh."""
        token = _parse_token(session.resume_token)
        if token is None:
            if session.resume_token:
                session.save_resume_token(None)
            return None
        location, uid = token
        state = self._tus_state(location)
        if state is not None:
            offset, length = state
            if offset > obj.size or (length is not None and length != obj.size):
                # an upload of other bytes (the file changed), or an offset past the end: unusable
                self._delete(uid)
                session.save_resume_token(None)
                return None
            if offset < obj.size:
                return location, uid, offset
            # the tus server says every byte arrived; only the video's own record can confirm it
            return self._remote(self._confirmed(uid, obj), obj, existed=True)
        video = self._video(uid)  # the upload URL is gone
        if video is not None:
            verdict = self._verdict(video, obj, uid)
            if verdict is None:
                return self._remote(video, obj, existed=True)
            if not verdict.transient:
                raise verdict
            self._delete(uid)  # a pending video whose upload cannot go on: clear it away
        session.save_resume_token(None)
        return None

    def _create(self, obj: SourceObject) -> tuple[str, str]:
        headers = {
            "Tus-Resumable": TUS_VERSION,
            "Upload-Length": str(obj.size),
            "Upload-Metadata": encode_metadata({"name": obj.file_id, **obj.metadata()}),
        }
        headers["Upload-Creator"] = creator_of(obj.file_id)
        url = self.account.url("stream")
        with translated(self.name):
            response = self.http.post(url, headers=headers)
        self._raise(response)
        location = response.headers.get("Location")
        uid = response.headers.get("stream-media-id")
        if not location or not uid:
            raise PermanentError("Stream's answer lacks the Location or stream-media-id header",
                                 sink=self.name, status=response.status_code, error_class=ErrorClass.INTERNAL)
        return urljoin(url, location), uid

    def _send(self, location: str, body: BinaryIO, offset: int, size: int, session: UploadSession) -> None:
        """PATCH the chunks from `offset`. Each answer must name exactly the offset its chunk reaches: one
        past it claims bytes never sent, one short of it loses some; either ends the attempt (the
        token stays, so the next one asks HEAD where the upload really is)."""
        uploader = _Uploader(self, body, location=location, offset=offset, size=size,
                             chunk_size=self.chunk_size)
        while uploader.offset < size:
            before = uploader.offset
            try:
                with translated(self.name):
                    uploader.upload_chunk()
            except TusCommunicationError as exc:
                raise self._tus_error(exc, uploader) from None
            reached = before + uploader.sent
            if uploader.offset != reached:
                raise ServerError(f"Stream answered Upload-Offset {uploader.offset} to a chunk that ends at "
                                  f"{reached}; the next try resumes from the offset HEAD reports",
                                  sink=self.name)
            session.progress(uploader.sent)

    def _offset(self, location: str) -> int | None:
        """The server's offset of a tus upload; None when the upload is gone (404, 410)."""
        state = self._tus_state(location)
        return None if state is None else state[0]

    def _tus_state(self, location: str) -> tuple[int, int | None] | None:
        """(Upload-Offset, Upload-Length) of a tus upload; None when the upload is gone (404, 410)."""
        with translated(self.name):
            response = self.http.head(location, headers={"Tus-Resumable": TUS_VERSION})
        if response.status_code in (404, 410):
            return None
        self._raise(response)
        value = response.headers.get("Upload-Offset")
        if value is None or not value.isdigit():
            raise ServerError("Stream's HEAD answer lacks Upload-Offset", sink=self.name)
        length = response.headers.get("Upload-Length")
        return int(value), int(length) if length is not None and length.isdigit() else None

    def _video(self, uid: str) -> _Video | None:
        with translated(self.name):
            response = self.http.get(self.account.url("stream", uid))
        if response.status_code == 404:
            return None
        return answer(response, sink=self.name, token=self.account.token)

    def _confirmed(self, uid: str, obj: SourceObject) -> _Video:
        """The video record that proves the upload is complete, or the error that says why it is not."""
        video = self._video(uid)
        if video is None:
            raise ServerError(f"Stream has no video {uid} after its upload", sink=self.name)
        verdict = self._verdict(video, obj, uid)
        if verdict is not None:
            raise verdict
        return video

    def _verdict(self, video: Mapping[str, Any], obj: SourceObject, uid: str | None = None) -> SinkError | None:
        """None when `video` is this file's and holds all of it; else why not. Transient, except a
        video Stream failed to process (another try sends the same bytes)."""
        got = video.get("uid")
        if uid is not None and got != uid:
            return ServerError(f"Stream answered for video {str(got)[:40]!r}, not {uid!r}", sink=self.name)
        meta = video.get("meta")
        file_id = meta.get("fileId") if isinstance(meta, Mapping) else None
        creator = video.get("creator")
        if (file_id is not None and file_id != obj.file_id) or creator not in (None, "", creator_of(obj.file_id)):
            return ServerError(f"Stream's video {got!r} belongs to file {str(file_id)[:80]!r} (creator "
                               f"{str(creator)[:64]!r}), not to this one", sink=self.name)
        status = video.get("status")
        status = status if isinstance(status, Mapping) else {}
        state = status.get("state")
        if state == "error":
            why = f"{status.get('errorReasonCode') or ''} {status.get('errorReasonText') or ''}".strip()
            return PermanentError(f"Stream could not process video {got}: {why or 'no reason given'}",
                                  sink=self.name, error_class=ErrorClass.INVALID)
        if state == "pendingupload" or not _complete(video):
            return ServerError(f"Stream's video {got} is not complete (state {state!r})", sink=self.name)
        size = video.get("size")
        if isinstance(size, int | float) and not isinstance(size, bool) and size != obj.size:
            return ServerError(f"Stream's video {got} holds {size:.0f} bytes, not the file's {obj.size}",
                               sink=self.name)
        return None

    def _videos_of(self, obj: SourceObject) -> list[_Video]:
        """This file's videos: listed by creator, then matched exactly on meta.fileId."""
        data = self._api("GET", "stream", params={"creator": creator_of(obj.file_id)})
        result = data.get("result") or []
        return [v for v in result
                if isinstance(v, dict) and (v.get("meta") or {}).get("fileId") == obj.file_id]

    def _find_complete(self, obj: SourceObject, videos: list[_Video]) -> _Video | None:
        return next((v for v in videos if self._verdict(v, obj) is None), None)

    def _drop_older(self, obj: SourceObject, *, keep: str) -> None:
        """Once the new copy is complete, every other video of this file is an older copy: delete it."""
        for video in self._videos_of(obj):
            uid = video.get("uid")
            if isinstance(uid, str) and uid != keep:
                self._delete(uid)

    def _drop_orphans(self, obj: SourceObject, videos: list[_Video]) -> None:
        """Pending videos of this file whose upload URL was never saved (a crash right after creation)."""
        for video in videos:
            state = (video.get("status") or {}).get("state")
            if state == "pendingupload" and isinstance(video.get("uid"), str):
                self._delete(video["uid"])

    def _delete(self, uid: str) -> None:
        with translated(self.name):
            response = self.http.delete(self.account.url("stream", uid))
        if response.status_code != 404:
            self._raise(response)

    def _api(self, method: str, *parts: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        with translated(self.name):
            response = self.http.request(method, self.account.url(*parts), params=params)
        return self._raise(response)

    def _raise(self, response: requests.Response) -> dict[str, Any]:
        return raise_for_envelope(response, sink=self.name, token=self.account.token)

    def _tus_error(self, exc: TusCommunicationError, uploader: _Uploader) -> SinkError:
        status = exc.status_code
        if not isinstance(status, int):
            return ServerError(f"tus upload failed: {exc}", sink=self.name)
        headers = uploader.last.response_headers if uploader.last is not None else {}
        text = reason_from(status, exc.response_content)
        if status == 409:  # offset mismatch: the next attempt asks the server where to resume
            return ServerError(f"upload offset mismatch, will resume: {text}", sink=self.name, status=status)
        return api_error(status, text, sink=self.name, token=self.account.token, headers=headers,
                         codes=codes_from(exc.response_content))

    def _remote(self, video: Mapping[str, Any], obj: SourceObject, *, existed: bool) -> RemoteObject:
        uid = video.get("uid")
        if not isinstance(uid, str) or not uid:
            raise ServerError("Stream listed a video without a uid", sink=self.name)
        playback = video.get("playback") or {}
        url = video.get("preview") or playback.get("hls")
        return RemoteObject(remote_id=uid, url=str(url) if url else None, size=obj.size, existed=existed)


def creator_of(file_id: str) -> str:
    """The video's creator: the file id itself when it fits a header and Stream's 64 characters,
    else a digest of it (the lookup then confirms the match on meta.fileId)."""
    plain = file_id.isascii() and file_id.isprintable() and file_id.strip() == file_id
    if plain and 0 < len(file_id) <= MAX_CREATOR:
        return file_id
    return "sha256-" + hashlib.sha256(file_id.encode()).hexdigest()[:MAX_CREATOR - 7]


def _complete(video: Mapping[str, Any]) -> bool:
    return (video.get("status") or {}).get("state") in COMPLETE_STATES or video.get("readyToStream") is True


def _parse_token(token: str | None) -> tuple[str, str] | None:
    if not token:
        return None
    try:
        data = json.loads(token)
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("url"), str) and isinstance(data.get("uid"), str):
        return data["url"], data["uid"]
    return None


def encode_metadata(meta: Mapping[str, str]) -> str:
    """tus Upload-Metadata: `key base64(value)` pairs joined by commas."""
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode('ascii')}" for k, v in meta.items())


def _tus_failure(message: str, status: int | None = None, content: bytes | None = None) -> TusUploadFailed:
    return TusUploadFailed(message, status, content)  # type: ignore[no-untyped-call]


class _Request(TusRequest):
    """tuspy's PATCH, sent through our session (timeouts, pacer) with the chunk streamed."""

    status_code: int
    response_content: bytes
    response_headers: dict[str, str]

    def __init__(self, uploader: _Uploader) -> None:
        super().__init__(uploader)  # type: ignore[no-untyped-call]
        self._http = uploader.sink.http
        self.length: int = self._content_length

    def perform(self) -> None:
        response = self._http.patch(self._url, data=Counted(self.file, self.length, what="tus chunk"),
                                    headers=self._request_headers)
        self.status_code = response.status_code
        self.response_content = response.content
        self.response_headers = {k.lower(): v for k, v in response.headers.items()}


class _Uploader(Uploader):
    """tuspy's Uploader with its network calls on our session; no sleeps, no retries of its own.

    The url and offset are set after construction, so tuspy makes no HEAD of its own; the TusClient
    only satisfies tuspy's constructor (our session carries the token).
    """

    def __init__(self, sink: CloudflareStreamSink, body: BinaryIO, *, location: str, offset: int, size: int,
                 chunk_size: int) -> None:
        self.sink = sink
        self.location = location
        self.last: _Request | None = None
        self.sent = 0
        client = TusClient(sink.account.url("stream"))
        super().__init__(
            file_stream=body, client=client, chunk_size=chunk_size, retries=0
        )
        self.url = location  # type: ignore[assignment]
        self.offset = offset
        self.stop_at = size

    def get_offset(self) -> int:
        offset = self.sink._offset(self.location)
        if offset is None:
            raise _tus_failure("the upload is gone", 404)
        return offset

    def create_url(self) -> str:
        raise _tus_failure("uploads are created by the sink, not by tuspy")

    def upload_chunk(self) -> None:
        """One PATCH; `offset` becomes what the server answered and `sent` what this chunk held."""
        self._retried = 0
        request = self._do_request()
        offset = request.response_headers.get("upload-offset")
        if offset is None or not offset.isdigit():
            raise _tus_failure("PATCH answer lacks Upload-Offset", request.status_code,
                               request.response_content)
        self.sent = request.length
        self.offset = int(offset)

    def _do_request(self) -> _Request:
        self.last = request = _Request(self)
        self.request = request  # type: ignore[assignment]
        request.perform()
        if not 200 <= request.status_code < 300:
            raise _tus_failure("", request.status_code, request.response_content)
        return request


_conforms: type[Sink] = CloudflareStreamSink
