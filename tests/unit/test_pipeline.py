"""The pipeline on the in-memory ledger, a local folder as the source and local folders as destinations.

No database, no server: each case runs in milliseconds, so the engine's decisions (skip, park, fan-out,
a partial failure, a stopped destination, cancellation, a lost lease) are tested where they are made.
The same cases end to end, over real services, are in tests/acceptance.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from filesync import pipeline
from filesync.app import App
from filesync.errors import PermanentError, ServerError
from filesync.model import Limits, RemoteObject, RunSummary, Selection, SourceObject
from filesync.routing import Routes
from filesync.settings import Config, Environment
from filesync.sinks import Capabilities, Sink, UploadSession
from filesync.sinks.local import LocalSink
from filesync.sources.local import LocalSource
from filesync.testing.memory_ledger import AppRow, MemoryLedger, MemoryStore
from tests.media import image_bytes


class Scripted:
    """A local folder destination whose uploads first run `before(obj, session)` (which may raise)."""

    name = "local"
    SETTINGS = LocalSink.SETTINGS

    def __init__(self, root: Path, before: Callable[[SourceObject, UploadSession], None] | None = None) -> None:
        self.inner = LocalSink(root)
        self.capabilities: Capabilities = self.inner.capabilities
        self.before = before
        self.calls = 0

    def check(self) -> None:
        self.inner.check()

    def exists(self, obj: SourceObject, remote_id: str | None = None) -> RemoteObject | None:
        return self.inner.exists(obj, remote_id)

    def name_of(self, obj: SourceObject) -> str | None:
        return self.inner.name_of(obj)

    def upload(self, obj: SourceObject, body: BinaryIO, session: UploadSession) -> RemoteObject:
        self.calls += 1
        if self.before is not None:
            self.before(obj, session)
        return self.inner.upload(obj, body, session)

    def close(self) -> None:
        pass

    @classmethod
    def from_settings(cls, values: Any, context: Any) -> Sink:
        raise NotImplementedError


class CredentialsRefused(PermanentError):
    stops_destination = True


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


class World:
    """A bucket folder, two destination folders ("local" and "mirror"), one memory store."""

    def __init__(self, root: Path) -> None:
        self.bucket = root / "bucket"
        self.bucket.mkdir()
        self.out = {"local": root / "local", "mirror": root / "mirror"}
        self.store = MemoryStore()
        self.local = Scripted(self.out["local"])
        self.mirror = Scripted(self.out["mirror"])

    def add(self, file_id: str, path: str, data: bytes | None = None) -> None:
        if data is not None:
            (self.bucket / path).parent.mkdir(parents=True, exist_ok=True)
            (self.bucket / path).write_bytes(data)
        self.store.app[file_id] = AppRow(path=path, date_taken="2024-06-21 18:30:00+00")

    def app(self, routes: str = "image/*=local", **env: str) -> App:
        values = {"FILESYNC_ROUTES": routes, "FILESYNC_WORKER_ID": "unit", "FILESYNC_CONCURRENCY": "1",
                  "FILESYNC_REQUEST_RETRIES": "2", "FILESYNC_REQUEST_MAX_WAIT": "0.01",
                  "FILESYNC_RETRY_BACKOFF_SECONDS": "60", "FILESYNC_LEASE_SECONDS": "30", **env}
        config = Config.load(Environment(values, env_file=os.devnull))
        sinks: dict[str, Sink] = {"local": self.local, "mirror": self.mirror}  # type: ignore[dict-item]
        return App(config=config, ledger=MemoryLedger(self.store), source=LocalSource(self.bucket),
                   routes=Routes.parse(routes), sinks=sinks)

    def run(self, routes: str = "image/*=local", **kw: Any) -> RunSummary:
        return pipeline.run(self.app(routes), **kw)

    def due_now(self) -> None:
        for f in self.store.files.values():
            f.next_attempt_at = datetime.now(UTC) - timedelta(seconds=1)

    def state(self, file_id: str) -> tuple[str, int, str | None]:
        f = self.store.files[file_id]
        return f.state, f.attempts, f.error_class

    def transfer(self, file_id: str, sink: str) -> str | None:
        t = self.store.transfers.get((file_id, sink))
        return t.state if t else None


PHOTO = image_bytes("JPEG")


def test_copies_flags_and_a_second_run_sends_nothing(world: World) -> None:
    world.add("a", "2024/a.jpg", PHOTO)
    world.add("b", "b.jpg", PHOTO)

    first = world.run()
    second = world.run()

    assert (first.copied, first.failed, first.retry_later) == (2, 0, 0)
    assert all(row.copied for row in world.store.app.values())
    assert (world.out["local"] / "a.jpg").read_bytes() == PHOTO
    assert second.copied == 0 and world.local.calls == 2


def test_a_type_with_no_route_is_skipped_with_its_reason(world: World) -> None:
    world.add("doc", "menu.pdf", b"%PDF-1.4\n%%EOF\n")

    summary = world.run()

    assert (summary.skipped, summary.failed) == (1, 0)
    assert summary.skips == [("doc", "unsupported type application/pdf")]
    assert world.state("doc") == ("skipped", 0, "unsupported")
    assert world.local.calls == 0 and not world.store.app["doc"].copied


@pytest.mark.parametrize(("path", "why"), [("", "path is empty"), ("../etc/passwd", "not a safe object key")])
def test_an_invalid_row_is_parked_with_its_reason(world: World, path: str, why: str) -> None:
    world.add("bad", path)

    summary = world.run()

    assert summary.failed == 1 and why in summary.failures[0][2]
    assert world.state("bad") == ("failed", 1, "invalid")


def test_fan_out_waits_for_every_destination_then_sends_only_the_missing_one(world: World) -> None:
    world.add("a", "a.jpg", PHOTO)

    def unavailable(obj: SourceObject, session: UploadSession) -> None:
        raise ServerError("mirror is down", sink="mirror", status=503)

    world.mirror.before = unavailable
    first = world.run("image/*=local,mirror")

    assert (first.copied, first.retry_later) == (0, 1)
    assert world.transfer("a", "local") == "done" and world.transfer("a", "mirror") == "pending"
    assert world.state("a") == ("pending", 1, "server") and not world.store.app["a"].copied
    assert world.mirror.calls == 4  # FILESYNC_REQUEST_RETRIES tries, then as many in the end-of-run pass
    assert first.retry_passes == 1 and first.waiting.keys() == {"a"}

    world.mirror.before = None
    world.due_now()
    second = world.run("image/*=local,mirror")

    assert second.copied == 1 and second.per_sink == {"mirror": {"copied": 1}}
    assert world.local.calls == 1  # the done destination was not sent again
    assert world.store.app["a"].copied and world.state("a")[0] == "done"


def test_a_permanent_error_parks_that_destination_only(world: World) -> None:
    world.add("a", "a.jpg", PHOTO)

    def refuse(obj: SourceObject, session: UploadSession) -> None:
        raise PermanentError("the mirror refuses this file", sink="mirror", status=400)

    world.mirror.before = refuse
    summary = world.run("image/*=local,mirror")

    assert (summary.copied, summary.failed) == (0, 1)
    assert world.transfer("a", "local") == "done" and world.transfer("a", "mirror") == "failed"
    assert world.state("a") == ("failed", 1, "client") and not world.store.app["a"].copied
    assert world.mirror.calls == 1  # permanent: not tried again within the run


def test_refused_credentials_stop_the_destination_without_counting_attempts(world: World) -> None:
    for n in range(5):
        world.add(f"f{n}", f"f{n}.jpg", PHOTO)

    def refuse(obj: SourceObject, session: UploadSession) -> None:
        raise CredentialsRefused("token refused", sink="mirror", status=401)

    world.mirror.before = refuse
    summary = world.run("image/*=local,mirror")

    assert list(summary.stopped) == ["mirror"]
    assert world.mirror.calls == 1  # the circuit opened at the first refusal
    assert summary.failed == 0 and summary.deferred == 5
    assert all(world.state(f"f{n}") == ("pending", 0, None) for n in range(5))  # no attempt burnt
    assert world.store.files["f0"].claimed_by is None  # handed back, due for the next run

    world.mirror.before = None
    again = world.run("image/*=local,mirror")

    assert again.copied == 5 and all(row.copied for row in world.store.app.values())


def test_cancellation_hands_the_file_back_uncounted(world: World) -> None:
    world.add("a", "a.jpg", PHOTO)
    abort = threading.Event()

    def shutdown_mid_transfer(obj: SourceObject, session: UploadSession) -> None:
        abort.set()
        session.progress(1)  # the next sign of life sees the abort

    world.local.before = shutdown_mid_transfer
    summary = world.run(abort=abort)

    assert summary.interrupted and summary.failed == 0 and summary.retry_later == 0
    assert world.state("a") == ("pending", 0, None) and world.store.files["a"].claimed_by is None
    assert not (world.out["local"] / "a.jpg").exists()


def test_a_lost_lease_records_nothing(world: World) -> None:
    world.add("a", "a.jpg", PHOTO)

    def stall_past_the_lease(obj: SourceObject, session: UploadSession) -> None:
        # This worker stalled past its lease and another worker took the file over.
        world.store.files["a"].claimed_until = datetime.now(UTC) + timedelta(minutes=5)
        world.store.files["a"].claimed_by = "another@host/1"

    world.local.before = stall_past_the_lease
    summary = world.run()

    assert summary.copied == 0 and summary.failed == 0
    assert world.transfer("a", "local") is None and not world.store.app["a"].copied
    assert world.state("a") == ("pending", 0, None)
    assert world.store.files["a"].claimed_by == "another@host/1"  # the new holder keeps it


def test_the_end_of_run_pass_copies_a_file_whose_first_tries_failed(world: World) -> None:
    world.add("a", "a.jpg", PHOTO)
    world.add("b", "b.jpg", PHOTO)

    def down_for_a_moment(obj: SourceObject, session: UploadSession) -> None:
        if world.local.calls <= 2 and obj.file_id == "a":  # both tries of the first pass
            raise ServerError("busy", sink="local", status=503)

    world.local.before = down_for_a_moment
    summary = world.run()

    assert (summary.copied, summary.retry_later, summary.failed) == (2, 0, 0)
    assert summary.retry_passes == 1 and summary.failures == [] and summary.waiting == {}
    assert world.state("a")[:2] == ("done", 1)  # one attempt counted for the run


def test_selection_takes_only_the_named_files_and_limits_cut_off(world: World) -> None:
    for name in ("2024/a.jpg", "2024/b.jpg", "2023/c.jpg", "raw/d.jpg"):
        world.add(name.split("/")[1][0], name, PHOTO)
    app = world.app()

    picked = pipeline.run(app, selection=Selection(path_globs=("2024/*.jpg",), limit=5))
    one = pipeline.run(world.app(), selection=Selection(file_ids=frozenset({"d"})))
    cut = pipeline.run(world.app(), limits=Limits(max_bytes=1))

    assert picked.copied == 2 and {f for f, row in world.store.app.items() if row.copied} >= {"a", "b"}
    assert one.copied == 1 and world.store.app["d"].copied
    assert cut.copied == 1 and cut.cut_off is not None  # the first transfer passes the limit, then it stops
    assert world.state("c")[0] == "done"
