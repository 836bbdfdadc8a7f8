"""Issue 5's soak: four `filesync run` worker processes share 2,000 files while the fake Cloudflare injects
faults at random, and one worker is killed with SIGKILL midway and restarted. At the end every file is
copied exactly once, skipped with a reason or failed with a reason: duplicates 0, lost 0.

Issue 9 adds to the mix: GIFs routed to a local folder by a `{name}` template, in pairs that map to one
name (one of each pair lands, the other fails naming both, nothing is overwritten), and images whose flag
the app resets midway with new bytes under the same key (each ends at Cloudflare once, with the new bytes).

The app's table here has no primary key (so one id can appear twice, as a bad row); it lives in its own
database. Workers loop (`filesync run` again) until no file is pending. Counts print with `pytest -s`.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi import Response

from filesync.testing.fakes.cloudflare import FakeCloudflare
from filesync.testing.postgres import fresh_database
from tests.conftest import S3Server, cloudflare_env
from tests.media import video_bytes

TOKEN = "cf-token-soak-0xSECRET"
N_FILES = 2000
N_VIDEOS = 60
N_PDFS = 30
N_MISSING = 10
N_CLASHES = 3  # pairs of GIFs whose names collide in the local destination
N_RESETS = 20  # copied images whose flag the app resets midway, with new bytes
WORKERS = 4
#: Two workers share a name (told apart by pid in their leases), two have their own.
WORKER_IDS = ("soak", "soak", "soak-2", "soak-3")
KILLED_SLOT = 1
DEADLINE_SECONDS = 480
HTTP_TIMEOUT = 3
#: Answers held past the client's timeout: the service did the work, the client never heard (lost answers).
HELD_SECONDS = HTTP_TIMEOUT + 2

APP_TABLE_NO_KEY = """
CREATE TABLE "File" (
  id                   text,
  path                 text,
  "dateTaken"          timestamptz,
  "gpsCoordinates"     text,
  "copiedToCloudflare" boolean NOT NULL DEFAULT false
);
CREATE INDEX ON "File" (id);
"""


class RecordingCloudflare(FakeCloudflare):
    """The fake, also noting the custom id and answer of every image POST that reached the Images API."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.image_posts: list[tuple[str, int]] = []
        self._posts_lock = threading.Lock()

    async def _store_image(self, form: Any) -> Response:
        response = await super()._store_image(form)
        with self._posts_lock:
            self.image_posts.append((str(form.get("id")), response.status_code))
        return response


@dataclass
class Plan:
    """What each file id is, and so what its end state must be."""

    images: set[str] = field(default_factory=set)
    videos: set[str] = field(default_factory=set)
    skipped: set[str] = field(default_factory=set)  # PDFs: no route
    failed: dict[str, str] = field(default_factory=dict)  # id -> words the recorded reason must contain
    clashes: list[tuple[str, str, str]] = field(default_factory=list)  # (id, id, the name both map to)
    gif_bytes: dict[str, bytes] = field(default_factory=dict)

    @property
    def copied(self) -> set[str]:
        return self.images | self.videos

    @property
    def all_ids(self) -> set[str]:
        return self.copied | self.skipped | set(self.failed) | {i for a, b, _ in self.clashes for i in (a, b)}


def small_jpegs(n: int, seed: int) -> list[bytes]:
    """A few KB each: random pixels do not compress away."""
    from PIL import Image

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.frombytes("RGB", (40, 40), rng.randbytes(40 * 40 * 3)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def tiny_gif(n: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("P", (8, 8), n % 256).save(buf, "GIF")
    return buf.getvalue() + b"\x00" * n  # distinct bytes per file


def seed(url: str, s3: S3Server) -> Plan:
    plan = Plan()
    rows: list[tuple[str, str | None]] = []
    objects: list[tuple[str, bytes, str]] = []
    jpegs = small_jpegs(16, seed=5)
    pdf = b"%PDF-1.4\n1 0 obj <<>> endobj\n%%EOF\n"
    bad: list[tuple[str, str | None, str]] = [
        ("bad-null-path", None, "path is empty"),
        ("bad-empty-path", "", "path is empty"),
        ("bad-dotdot", "../etc/passwd.jpg", "not a safe object key"),
        ("bad-dotdot-inner", "photos/../../secret.jpg", "not a safe object key"),
    ]
    for file_id, path, reason in bad:
        rows.append((file_id, path))
        plan.failed[file_id] = reason
    # one id on two rows (the table has no primary key): it cannot be told apart, so it is parked
    objects.append(("dup/one.jpg", jpegs[0], "image/jpeg"))
    objects.append(("dup/two.jpg", jpegs[1], "image/jpeg"))
    rows += [("dup-id", "dup/one.jpg"), ("dup-id", "dup/two.jpg")]
    plan.failed["dup-id"] = "duplicate id"
    for n in range(N_MISSING):
        file_id = f"missing-{n:02d}"
        rows.append((file_id, f"gone/{file_id}.jpg"))
        plan.failed[file_id] = "not found in bucket"
    for n in range(N_CLASHES):
        name = f"clash-{n}.gif"
        pair = (f"gif-{n}-a", f"gif-{n}-b")
        for side, file_id in zip("ab", pair, strict=True):
            data = tiny_gif(n * 2 + (side == "b"))
            rows.append((file_id, f"gifs/{side}/{name}"))
            objects.append((f"gifs/{side}/{name}", data, "image/gif"))
            plan.gif_bytes[file_id] = data
        plan.clashes.append((*pair, name))
    for n in range(N_PDFS):
        file_id = f"doc-{n:03d}"
        rows.append((file_id, f"docs/{file_id}.pdf"))
        objects.append((f"docs/{file_id}.pdf", pdf, "application/pdf"))
        plan.skipped.add(file_id)
    for n in range(N_VIDEOS):
        file_id = f"vid-{n:03d}"
        rows.append((file_id, f"videos/{file_id}.mp4"))
        objects.append((f"videos/{file_id}.mp4", video_bytes(3000 + n), "video/mp4"))
        plan.videos.add(file_id)
    n = 0
    while len(plan.all_ids) < N_FILES:
        file_id = f"img-{n:05d}"
        rows.append((file_id, f"photos/{n % 50:02d}/{file_id}.jpg"))
        objects.append((f"photos/{n % 50:02d}/{file_id}.jpg", jpegs[n % len(jpegs)], "image/jpeg"))
        plan.images.add(file_id)
        n += 1

    client = s3.client()  # type: ignore[no-untyped-call]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda o: client.put_object(Bucket=s3.bucket, Key=o[0], Body=o[1], ContentType=o[2]),
                      objects))
    random.Random(7).shuffle(rows)  # kinds and bad rows spread through the claim order
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany('INSERT INTO "File" (id, path, "dateTaken", "gpsCoordinates") VALUES (%s, %s, %s, %s)',
                        [(i, p, "2024-06-21T18:30:00+00:00", "48.8584,2.2945") for i, p in rows])
    assert len(plan.all_ids) == N_FILES and len(rows) == N_FILES + 1
    return plan


@pytest.fixture
def soak_db(pg_server: str) -> Iterator[str]:
    with fresh_database(pg_server, prefix="fs_soak") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(APP_TABLE_NO_KEY)
        yield url


@pytest.fixture
def cf() -> Iterator[RecordingCloudflare]:
    with RecordingCloudflare(token=TOKEN) as fake:
        yield fake  # type: ignore[misc]


def worker_env(url: str, s3: S3Server, cf: FakeCloudflare, worker_id: str, local: Path) -> dict[str, str]:
    return cloudflare_env(
        url, s3, cf, TOKEN,
        FILESYNC_ROUTES="image/gif=local;image/*=cloudflare-images;video/*=cloudflare-stream",
        FILESYNC_LOCAL_DIR=str(local),
        FILESYNC_LOCAL_TEMPLATE="{name}",
        FILESYNC_CLOUDFLARE_RPS="1000",
        FILESYNC_CONCURRENCY="4",
        FILESYNC_LEASE_SECONDS="5",
        FILESYNC_RETRY_BACKOFF_SECONDS="0.5",
        FILESYNC_MAX_ATTEMPTS="10",
        FILESYNC_REQUEST_MAX_WAIT="1",
        FILESYNC_HTTP_TIMEOUT=str(HTTP_TIMEOUT),
        FILESYNC_WORKER_ID=worker_id,
    )


def query(url: str, text: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(text, params).fetchall()


def pending(url: str) -> tuple[int, int] | None:
    """(pending, due now) in the ledger; None until a first run has enqueued every file."""
    try:
        [(known, total, due)] = query(
            url, "SELECT count(*), count(*) FILTER (WHERE state = 'pending'), count(*) FILTER "
                 "(WHERE state = 'pending' AND next_attempt_at <= now()) FROM filesync.files")
    except psycopg.errors.UndefinedTable:
        return None
    return (int(total), int(due)) if known >= N_FILES else None


@dataclass
class RunRecord:
    slot: int
    pid: int
    returncode: int
    stdout: Path
    stderr: Path


class Workers:
    """Four slots, each running `filesync run -q` again and again until nothing is pending."""

    def __init__(self, url: str, envs: list[dict[str, str]], logs: Path) -> None:
        self.url = url
        self.envs = envs
        self.logs = logs
        self.current: dict[int, subprocess.Popen[bytes]] = {}
        self.records: list[RunRecord] = []
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        self.give_up = threading.Event()
        self.started_total = 0

    def finished(self) -> bool:
        state = pending(self.url)
        return state is not None and state[0] == 0

    def slot(self, n: int) -> None:
        try:
            k = 0
            while not self.give_up.is_set() and not self.finished():
                state = pending(self.url)
                if state is not None and state[1] == 0:
                    time.sleep(0.5)  # only files waiting out their backoff: nothing to claim yet
                    continue
                out, err = self.logs / f"slot{n}-run{k}.out", self.logs / f"slot{n}-run{k}.err"
                with out.open("wb") as fo, err.open("wb") as fe:
                    proc = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "filesync", "run", "-q"],
                                            env=self.envs[n], stdout=fo, stderr=fe, cwd="/")
                    with self.lock:
                        self.current[n] = proc
                        self.started_total += 1
                    began = time.monotonic()
                    rc = proc.wait()
                with self.lock:
                    self.records.append(RunRecord(n, proc.pid, rc, out, err))
                k += 1
                if time.monotonic() - began < 3:
                    time.sleep(0.3)  # a short run found little to claim: do not spin
        except BaseException as exc:  # surfaced by the test
            self.errors.append(exc)

    def holding_claims(self, n: int) -> subprocess.Popen[bytes] | None:
        with self.lock:
            proc = self.current.get(n)
        if proc is None or proc.poll() is not None:
            return None
        rows = query(self.url, "SELECT count(*) FROM filesync.files WHERE claimed_by LIKE %s",
                     (f"%/{proc.pid}",))
        return proc if rows[0][0] > 0 else None


def reset_with_new_bytes(url: str, s3: S3Server, fresh: list[bytes]) -> dict[str, bytes]:
    """As an app does when a user replaces a photo: new bytes under the same key, the flag set to false."""
    rows = query(url, 'SELECT id, path FROM "File" WHERE "copiedToCloudflare" AND id LIKE %s ORDER BY id LIMIT %s',
                 ("img-%", len(fresh)))
    client = s3.client()  # type: ignore[no-untyped-call]
    renewed = {}
    for (file_id, path), data in zip(rows, fresh, strict=False):
        client.put_object(Bucket=s3.bucket, Key=path, Body=data, ContentType="image/jpeg")
        renewed[file_id] = data
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute('UPDATE "File" SET "copiedToCloudflare" = false WHERE id = ANY(%s)', (list(renewed),))
    return renewed


def copied_count(url: str) -> int:
    return int(query(url, 'SELECT count(DISTINCT id) FROM "File" WHERE "copiedToCloudflare"')[0][0])


def fault_kind(fault: str) -> str:
    """'status 503', 'reset', 'slow', 'answer held' (the fake logs 'slow 1s', 'answer held 5.0s')."""
    if fault.startswith(("slow", "answer held")):
        return fault.rsplit(" ", 1)[0]
    return fault


def log_events(paths: list[Path]) -> Counter[str]:
    events: Counter[str] = Counter()
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("level") in ("warning", "error", "critical"):
                events[str(event.get("event"))] += 1
    return events


def sprinkle_lost_answers(cf: FakeCloudflare, workers: Workers) -> None:
    """Now and then the answer to a request that did its work is lost: an image stored, a video created,
    a video's bytes received. The retry must find that work, not do it again. One at a time per kind,
    a bounded number, and none in the last files (so the tail is not all lost answers)."""
    images, stream = f"{cf.base_path}/images/v1", f"{cf.base_path}/stream"
    kinds = {("POST", images): 40, ("POST", stream): 6, ("PATCH", stream): 6}
    added = dict.fromkeys(kinds, 0)
    while not workers.give_up.wait(0.5):
        state = pending(workers.url)
        if state is not None and state[0] < 100:
            return
        with cf._lock:
            held = Counter((r.method, images if images in r.path else stream) for r in cf.requests
                           if r.fault and r.fault.startswith("answer held"))
        for (method, path), total in kinds.items():
            if added[(method, path)] < total and held[(method, path)] >= added[(method, path)]:
                cf.hold_response_next(HELD_SECONDS, method=method, path_contains=path)
                added[(method, path)] += 1


def test_four_workers_with_faults_and_a_kill_copy_everything_once(
    soak_db: str, s3: S3Server, cf: RecordingCloudflare, tmp_path: Path
) -> None:
    url = soak_db
    plan = seed(url, s3)
    cf.chaos(seed=11, p_5xx=0.10, p_429=0.02, p_reset=0.01, p_slow=0.01, slow_seconds=1)
    logs = tmp_path / "runs"
    logs.mkdir()
    local = tmp_path / "gifs"
    workers = Workers(url, [worker_env(url, s3, cf, wid, local) for wid in WORKER_IDS], logs)
    started = time.monotonic()
    threads = [threading.Thread(target=workers.slot, args=(n,), daemon=True) for n in range(WORKERS)]
    for t in threads:
        t.start()
    sprinkler = threading.Thread(target=sprinkle_lost_answers, args=(cf, workers), daemon=True)
    sprinkler.start()

    # Midway, kill one worker while it holds claims (mid-transfer); its slot starts it again. Around the
    # same time the app stores new bytes for some copied images and resets their flags.
    killed_pid = None
    renewed: dict[str, bytes] = {}
    fresh = small_jpegs(N_RESETS, seed=99)
    deadline = started + DEADLINE_SECONDS
    while (killed_pid is None or not renewed) and time.monotonic() < deadline and not workers.finished():
        done = copied_count(url)
        if not renewed and done >= N_FILES // 3:
            renewed = reset_with_new_bytes(url, s3, fresh)
        proc = workers.holding_claims(KILLED_SLOT) if killed_pid is None and done >= N_FILES // 4 else None
        if proc is not None:
            proc.send_signal(signal.SIGKILL)
            killed_pid = proc.pid
        else:
            time.sleep(0.05)
    claims_at_kill = query(url, "SELECT count(*) FROM filesync.files WHERE claimed_by LIKE %s",
                           (f"%/{killed_pid}",))[0][0]
    for t in threads:
        t.join(timeout=max(1.0, deadline - time.monotonic()))
    workers.give_up.set()
    sprinkler.join(timeout=10)
    timed_out = any(t.is_alive() for t in threads)
    hung: list[int] = []
    if timed_out:  # dump the stacks of what is still running (faulthandler), then end it
        with workers.lock:
            for proc in workers.current.values():
                if proc.poll() is None:
                    hung.append(proc.pid)
                    proc.send_signal(signal.SIGABRT)
        for t in threads:
            t.join(timeout=30)
    elapsed = time.monotonic() - started
    cf.calm()

    # --- what the ledger, the app's table and the fake hold ------------------------------------
    flags: dict[str, list[bool]] = {}
    for file_id, flag in query(url, 'SELECT id, "copiedToCloudflare" FROM "File"'):
        flags.setdefault(file_id, []).append(flag)
    ledger = {r[0]: r[1:] for r in query(url, "SELECT file_id, state, error, claimed_by FROM filesync.files")}
    transfers = {(r[0], r[1]): r[2] for r in query(
        url, "SELECT file_id, sink, remote_id FROM filesync.transfers WHERE state = 'done'")}
    images = Counter(i.key for i in cf.stored_images())
    ok_image_posts = Counter(i for i, status in cf.image_posts if status == 200)
    ready_videos: dict[str, list[str]] = {}
    for v in cf.videos(include_pending=False):
        ready_videos.setdefault(v.meta.get("name", "?"), []).append(v.uid)
    pending_videos = [v for v in cf.videos() if not v.ready]

    copied, skipped, failed, lost, duplicates = set(), set(), set(), set(), set()
    problems: list[str] = []
    for a, b, name in plan.clashes:  # one of each pair holds the name, with its own bytes; the other failed
        states = {a: ledger[a][0], b: ledger[b][0]}
        winner = a if states[a] == "done" else b
        loser = b if winner == a else a
        held = (local / name).read_bytes() if (local / name).exists() else b""
        if sorted(states.values()) != ["done", "failed"] or held != plan.gif_bytes[winner]:
            problems.append(f"name clash {name}: states {states}, holds {len(held)} bytes")
        elif f"file {winner}" not in (ledger[loser][1] or "") or not all(flags[winner]) or any(flags[loser]):
            problems.append(f"name clash {name}: {loser} failed with {ledger[loser][1]!r}")
    image_bytes_at = {i.key: i.sha256 for i in cf.stored_images()}
    for file_id, data in renewed.items():  # the new bytes, once, flagged
        if image_bytes_at.get(file_id) != hashlib.sha256(data).hexdigest() or not all(flags[file_id]):
            problems.append(f"{file_id}: reset with new bytes, holds {image_bytes_at.get(file_id)}")
    clashing = {i for a, b, _ in plan.clashes for i in (a, b)}
    for file_id in sorted(plan.all_ids - clashing):
        state, error, claimed_by = ledger.get(file_id, (None, None, None))
        at_dest = images[file_id] + len(ready_videos.get(file_id, []))
        posts_allowed = 2 if file_id in renewed else 1  # a renewed image is sent once per version
        if ok_image_posts[file_id] > posts_allowed or images[file_id] > 1 or len(ready_videos.get(file_id, [])) > 1:
            duplicates.add(file_id)
        if all(flags[file_id]) and state == "done":
            if at_dest == 1:
                copied.add(file_id)
            else:
                lost.add(file_id)
                problems.append(f"{file_id}: flagged copied, {at_dest} object(s) at its destination")
        elif state == "skipped" and error:
            skipped.add(file_id)
        elif state == "failed" and error:
            failed.add(file_id)
        else:
            lost.add(file_id)
            problems.append(f"{file_id}: flags {flags[file_id]}, ledger {state!r} {error!r} claimed by {claimed_by}")
        if at_dest and not all(flags[file_id]):
            problems.append(f"{file_id}: {at_dest} object(s) at a destination but not flagged copied")

    faults = Counter(fault_kind(r.fault) for r in cf.requests if r.fault)
    exit_codes = Counter(r.returncode for r in workers.records)
    tracebacks = [r.stderr.name for r in workers.records if "Traceback" in r.stderr.read_text(errors="replace")]
    events = log_events([r.stdout for r in workers.records])
    print(
        f"\nsoak: {N_FILES} files, {WORKERS} workers, {elapsed:.1f} s"
        f"\n  copied {len(copied)}, skipped {len(skipped)}, failed {len(failed)}, "
        f"duplicates {len(duplicates)}, lost {len(lost)}"
        f"\n  requests to Cloudflare {len(cf.requests)}, injected faults {sum(faults.values())}: {dict(faults)}"
        f"\n  image POSTs reaching the API {len(cf.image_posts)} "
        f"({sum(1 for _, s in cf.image_posts if s == 409)} answered 'already exists'), "
        f"videos created {cf.videos_created}, pending videos left {len(pending_videos)}"
        f"\n  runs {len(workers.records)}, exit codes {dict(exit_codes)}, killed pid {killed_pid} "
        f"holding {claims_at_kill} claim(s)"
        f"\n  warnings/errors logged: {dict(events)}"
    )
    for line in problems[:20]:
        print("  problem:", line)
    for record in workers.records:
        if record.pid in hung:
            print(f"  stacks of hung worker {record.pid}:\n{record.stderr.read_text(errors='replace')[-6000:]}")

    assert len(renewed) == N_RESETS, "the flags were never reset midway"
    assert not workers.errors, workers.errors
    assert not timed_out, f"backlog not empty after {DEADLINE_SECONDS} s: {pending(url)}"
    assert killed_pid is not None, "no worker was killed midway"
    assert not problems
    assert not duplicates and not lost
    assert copied == plan.copied
    assert skipped == plan.skipped
    assert failed == set(plan.failed)
    for file_id, words in plan.failed.items():
        assert words in (ledger[file_id][1] or ""), (file_id, ledger[file_id])
    assert all("application/pdf" in (ledger[f][1] or "") for f in plan.skipped)
    for file_id in plan.images:  # the ledger names the object that is there
        assert transfers[(file_id, "cloudflare-images")] == file_id
    for file_id in plan.videos:
        assert [transfers[(file_id, "cloudflare-stream")]] == ready_videos[file_id]
    assert not pending_videos, [v.meta.get("name") for v in pending_videos]
    assert not [f for f, (_, _, owner) in ledger.items() if owner], "claims left behind"
    assert set(exit_codes) <= {0, 1, -signal.SIGKILL}, exit_codes
    assert exit_codes[-signal.SIGKILL] == 1
    assert not tracebacks, tracebacks
    assert sum(faults.values()) > 0.05 * len(cf.requests)  # the faults really were there
