"""The s3 sink under the conformance suite: moto's ThreadedMotoServer behind a fault-injecting proxy.

moto runs in a child process, started once per test session, because it keeps a completed multipart
object whole in memory: in this process that would swamp the large-body memory measurement. Its IAM
authentication is switched on (INITIAL_NO_AUTH_ACTION_COUNT): the first three calls create a user
with an s3:* policy and an access key, and from then on every request must be signed by a real key,
so a wrong key gets moto's 403, as on AWS. Between the sink and moto sits `FakeS3`, a FakeService
(uvicorn on 127.0.0.1) that streams requests through to moto and injects the scripted faults on the
wire. Its `corrupt_next` flips a byte of the next PUT body and, as S3 does, refuses it with
400 BadDigest when the request carries a Content-MD5 that no longer matches.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import boto3
from yarl import URL

from filesync.settings import Environment
from filesync.sinks import SinkContext
from filesync.sinks.s3 import S3Sink, decode_meta
from filesync.testing.fakes.base import ASGIApp, FakeService, Receive, Scope, Send
from filesync.testing.sink_conformance import SinkCase, StoredObject

REGION = "us-east-1"
PART_SIZE = 5 * 1024 * 1024  # S3's minimum part: keeps the large-body test's peak memory low
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
               "proxy-connection"}
_NO_AUTO = {"User-Agent", "Accept", "Accept-Encoding"}
_CHILD = """
import logging, sys
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.ERROR)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
"""


class MotoProcess:
    """One moto server in a child process for the whole session, with IAM authentication on."""

    _lock = threading.Lock()
    _instance: MotoProcess | None = None

    def __init__(self) -> None:
        env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3")
        self.proc = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.proc.kill()
            raise RuntimeError("moto server did not start")
        self.endpoint = f"http://127.0.0.1:{int(line)}"
        iam = boto3.client("iam", endpoint_url=self.endpoint, region_name=REGION,
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName="filesync")
        iam.put_user_policy(UserName="filesync", PolicyName="s3-all", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }))
        key = iam.create_access_key(UserName="filesync")["AccessKey"]
        self.key_id: str = key["AccessKeyId"]
        self.secret_key: str = key["SecretAccessKey"]
        atexit.register(self.stop)

    @classmethod
    def get(cls) -> MotoProcess:
        with cls._lock:
            if cls._instance is None or cls._instance.proc.poll() is not None:
                cls._instance = MotoProcess()
            return cls._instance

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=self.key_id, aws_secret_access_key=self.secret_key)

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _s3_error(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<RequestId>fake</RequestId></Error>").encode()


_CODES = {400: "InvalidRequest", 403: "AccessDenied", 404: "NoSuchKey", 429: "TooManyRequests",
          500: "InternalError", 502: "BadGateway", 503: "ServiceUnavailable", 504: "GatewayTimeout"}


class FakeS3(FakeService):
    """A bucket on the shared moto server, reached through this proxy; FakeStore for the suite."""

    name = "fake-s3"
    supports_faults = True
    can_corrupt = True

    def __init__(self) -> None:
        super().__init__()
        self.moto = MotoProcess.get()
        self.bucket = f"filesync-{uuid.uuid4().hex[:12]}"
        self._corrupt = False

    # --- FakeStore ---------------------------------------------------------------------------
    def start(self) -> FakeS3:
        self.moto.client().create_bucket(Bucket=self.bucket)
        super().start()
        return self

    def stored(self) -> list[StoredObject]:
        client = self.moto.client()
        found: list[StoredObject] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for item in page.get("Contents", []):
                obj = client.get_object(Bucket=self.bucket, Key=item["Key"])
                digest = hashlib.sha256()
                for chunk in obj["Body"].iter_chunks(1 << 20):
                    digest.update(chunk)
                found.append(StoredObject(
                    key=item["Key"], size=int(obj["ContentLength"]), sha256=digest.hexdigest(),
                    metadata={k: decode_meta(v) for k, v in obj.get("Metadata", {}).items()},
                    content_type=obj.get("ContentType"),
                ))
        return found

    def pending_uploads(self) -> list[dict[str, Any]]:
        """Multipart uploads started and neither completed nor aborted."""
        return list(self.moto.client().list_multipart_uploads(Bucket=self.bucket).get("Uploads", []))

    def head(self, key: str) -> dict[str, Any]:
        return dict(self.moto.client().head_object(Bucket=self.bucket, Key=key))

    def corrupt_next(self) -> None:
        self._corrupt = True

    def fault_body(self, status: int) -> bytes:
        return _s3_error(_CODES.get(status, "InternalError"), f"injected {status}")

    # --- the proxy ---------------------------------------------------------------------------
    def _take_corrupt(self, method: str) -> bool:
        with self._lock:
            if method == "PUT" and self._corrupt:
                self._corrupt = False
                return True
            return False

    def build_app(self) -> ASGIApp:
        upstream = self.moto.endpoint

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            method = scope["method"]
            target = scope["raw_path"].decode("latin-1")
            if scope.get("query_string"):
                target += "?" + scope["query_string"].decode("latin-1")
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            length = int(headers.get("content-length") or 0)
            data: Any = None
            if self._take_corrupt(method):
                body = bytearray(await _read_all(receive))
                if body:
                    body[len(body) // 2] ^= 0xFF
                md5 = headers.get("content-md5")
                if md5 and base64.b64encode(hashlib.md5(body).digest()).decode() != md5:
                    error = _s3_error("BadDigest", "The Content-MD5 you specified did not match.")
                    await send({"type": "http.response.start", "status": 400, "headers": [
                        (b"content-type", b"application/xml"),
                        (b"content-length", str(len(error)).encode())]})
                    await send({"type": "http.response.body", "body": error})
                    return
                data = bytes(body)
            elif length:
                data = _stream(receive)
            timeout = aiohttp.ClientTimeout(total=600)
            async with aiohttp.ClientSession(auto_decompress=False, timeout=timeout) as session:
                async with session.request(method, URL(upstream + target, encoded=True), headers=headers,
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


async def _read_all(receive: Receive) -> bytes:
    return b"".join([chunk async for chunk in _stream(receive)])


def make(fake: FakeS3, bad_credentials: bool = False, *, timeout: float = 30.0, **settings: str) -> S3Sink:
    values = {
        "FILESYNC_S3_BUCKET": fake.bucket,
        "FILESYNC_S3_ENDPOINT": fake.url,
        "FILESYNC_S3_REGION": REGION,
        "FILESYNC_S3_KEY": "AKIAWRONGWRONGWRONG0" if bad_credentials else fake.moto.key_id,
        "FILESYNC_S3_SECRET": "wrong-secret-value-not-a-key" if bad_credentials else fake.moto.secret_key,
        "FILESYNC_S3_TEMPLATE": "{id}{ext}",
        **settings,
    }
    env = Environment({k: v for k, v in values.items() if v is not None}, env_file="/nonexistent")
    sink = S3Sink.from_settings(env.load(S3Sink.Settings), SinkContext(http_timeout=timeout))
    sink.part_size = PART_SIZE
    return sink


CASE = SinkCase(
    name="s3", fake=FakeS3, make=make,
    secrets=lambda fake: [fake.moto.secret_key, "wrong-secret-value-not-a-key"],
)
