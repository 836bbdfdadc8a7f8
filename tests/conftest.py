"""Shared fixtures: a real PostgreSQL (embedded pgserver or TEST_DATABASE_URL) and S3 over moto's HTTP server."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import psycopg
import pytest

from filesync.testing.fakes.cloudflare import FakeCloudflare
from filesync.testing.postgres import APP_TABLE_DDL, fresh_database, test_server_url

os.environ.setdefault("S3_UPLOAD_PART_MIN_SIZE", str(5 * 1024 * 1024))


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> str:
    """URL of a PostgreSQL server the tests may create databases on."""
    # Outside pytest's basetemp: pytest prunes old basetemps, which would delete a live server's data
    # when several test runs overlap. pgserver shares one server between processes using the same folder.
    root = Path(os.environ.get("FILESYNC_TEST_PGROOT") or Path(tempfile.gettempdir()) / "filesync-tests-pg")
    return test_server_url(root)


@pytest.fixture
def database_url(pg_server: str) -> Iterator[str]:
    """A fresh database holding the app's "File" table, as the issue describes it."""
    with fresh_database(pg_server) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(APP_TABLE_DDL)
        yield url


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    region: str = "nyc3"

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=self.region,
            aws_access_key_id="test-key", aws_secret_access_key="test-secret",
        )

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        self.client().put_object(Bucket=self.bucket, Key=key, Body=data, **extra)

    def env(self) -> dict[str, str]:
        return {
            "FILESYNC_SOURCE": "s3",
            "SPACES_ENDPOINT": self.endpoint,
            "SPACES_KEY": "test-key",
            "SPACES_SECRET": "test-secret-value-0xS3",
            "SPACES_BUCKET": self.bucket,
            "SPACES_REGION": self.region,
        }


def cloudflare_env(database_url: str, s3: S3Server, cf: FakeCloudflare, token: str, **extra: str) -> dict[str, str]:
    """Settings for a run from the moto bucket to the fake Cloudflare, plus each test's own overrides."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DATABASE_URL": database_url,
        **s3.env(),
        "CLOUDFLARE_ACCOUNT_ID": cf.account_id,
        "CLOUDFLARE_API_TOKEN": token,
        "CLOUDFLARE_API_BASE": cf.api_base,
        "FILESYNC_TUS_CHUNK_BYTES": str(5 * 1024 * 1024),
        "FILESYNC_LOG_FILE": os.devnull,
        **extra,
    }


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(moto_server: str, request: pytest.FixtureRequest) -> S3Server:
    """A new bucket on the moto server."""
    import uuid

    server = S3Server(endpoint=moto_server, bucket=f"media-{uuid.uuid4().hex[:10]}")
    server.client().create_bucket(
        Bucket=server.bucket, CreateBucketConfiguration={"LocationConstraint": server.region}
    )
    return server
