"""The s3 source under the conformance suite, on the session's moto server (the `s3` fixture of
tests/conftest.py: a new bucket per test), reached through a fault-injecting proxy.

moto cannot answer with a scripted fault, so between the source and moto sits `BucketProxy`, a
FakeService (uvicorn on 127.0.0.1) that passes requests through and answers the scripted faults
itself, in S3's XML error format. The source is built from its settings, as `filesync` builds it,
pointed at the proxy; listing requests are counted in the proxy's request log.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from filesync.settings import Environment
from filesync.sources.s3 import S3Source
from filesync.testing.fakes.base import ASGIApp, FakeService, Receive, Scope, Send
from filesync.testing.source_conformance import SourceCase

SECRET = "test-secret-value-0xS3"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
_NO_AUTO = {"User-Agent", "Accept", "Accept-Encoding"}
_CODES = {400: "InvalidRequest", 403: "AccessDenied", 404: "NoSuchKey", 429: "TooManyRequests",
          500: "InternalError", 502: "BadGateway", 503: "SlowDown", 504: "GatewayTimeout"}


class BucketProxy(FakeService):
    """A bucket on the moto server, seen through this proxy: SourceStore for the suite."""

    name = "s3-source-proxy"
    supports_faults = True

    def __init__(self, server: Any) -> None:
        super().__init__()
        self.server = server  # tests.conftest.S3Server

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        self.server.put(key, data, content_type)  # straight to moto: seeding is not under test

    def list_calls(self) -> int:
        return sum(1 for r in self.requests_to("GET") if "list-type=2" in r.query)

    def fault_body(self, status: int) -> bytes:
        code = _CODES.get(status, "InternalError")
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                f"<Message>injected {status}</Message><RequestId>fake</RequestId></Error>").encode()

    def build_app(self) -> ASGIApp:
        upstream = self.server.endpoint

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            target = scope["raw_path"].decode("latin-1")
            if scope.get("query_string"):
                target += "?" + scope["query_string"].decode("latin-1")
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            data = _stream(receive) if int(headers.get("content-length") or 0) else None
            async with aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=60)) as s:
                async with s.request(scope["method"], URL(upstream + target, encoded=True), headers=headers,
                                     data=data, allow_redirects=False, skip_auto_headers=_NO_AUTO) as r:
                    out = [(k.lower(), v) for k, v in r.raw_headers if k.decode().lower() not in _HOP_BY_HOP]
                    await send({"type": "http.response.start", "status": r.status, "headers": out})
                    async for chunk in r.content.iter_chunked(1 << 16):
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    await send({"type": "http.response.body", "body": b""})

        return app


async def _stream(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message.get("body"):
            yield message["body"]
        if not message.get("more_body"):
            return


def store(request: pytest.FixtureRequest) -> BucketProxy:
    proxy = BucketProxy(request.getfixturevalue("s3"))
    proxy.start()
    request.addfinalizer(proxy.stop)
    return proxy


def make(store: BucketProxy, *, page_size: int, broken: bool = False) -> S3Source:
    env = Environment({**store.server.env(), "SPACES_ENDPOINT": store.url, "SPACES_SECRET": SECRET},
                      env_file="/nonexistent")
    values = env.load(S3Source.Settings)
    if broken:
        values = dataclasses.replace(values, bucket=f"{store.server.bucket}-missing")
    source = S3Source.from_settings(values)
    source.page_size = page_size
    return source


CASE = SourceCase(name="s3", store=store, make=make, secrets=lambda store: [SECRET])
