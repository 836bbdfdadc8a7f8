"""Issue 11: an enqueue whose work follows what changed. The app's rows carry a version (xmin); the ledger
remembers the version it read, so a run skips rows it has seen without reading their values, and still
finds every change: a new row, a moved path, a new date or place, a row rewritten with the same values.
A view has no row versions: the enqueue compares values there, with the same outcome.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from filesync.ledger import Database, PostgresLedger
from filesync.settings import AppTable

APP = AppTable(table=("File",), id="id", path="path", date_taken="dateTaken", gps="gpsCoordinates",
               copied="copiedToCloudflare")
VIEW = AppTable(table=("File view",), id="id", path="path", date_taken="dateTaken", gps="gpsCoordinates",
                copied="copiedToCloudflare")


@pytest.fixture(params=["table", "view"])
def ledger(request: pytest.FixtureRequest, database_url: str) -> Iterator[PostgresLedger]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute('CREATE VIEW "File view" AS SELECT * FROM "File"')
    ledger = PostgresLedger(Database(database_url, max_size=2), "filesync", APP if request.param == "table" else VIEW)
    ledger.migrate()
    yield ledger
    ledger.close()


def sql(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, args)
        return [tuple(r) for r in cur.fetchall()] if cur.description else []


def ledger_rows(url: str) -> list[tuple[Any, ...]]:
    """Every ledger row with its own version: any write by enqueue shows."""
    return sql(url, "SELECT file_id, xmin::text, path, date_taken, gps, state, attempts FROM filesync.files "
                    "ORDER BY file_id")


def test_enqueue_writes_only_what_changed_and_misses_no_change(ledger: PostgresLedger, database_url: str) -> None:
    for i in range(5):
        sql(database_url, 'INSERT INTO "File" (id, path) VALUES (%s, %s)', f"f{i}", f"p/{i}.jpg")
    assert ledger.enqueue() == 5
    first = ledger_rows(database_url)

    assert ledger.enqueue() == 0
    assert ledger_rows(database_url) == first  # nothing new: nothing written

    sql(database_url, 'UPDATE "File" SET "gpsCoordinates" = %s WHERE id = %s', "48.85,2.29", "f1")
    sql(database_url, """UPDATE "File" SET "dateTaken" = '2024-05-06T07:08:09Z' WHERE id = %s""", "f2")
    sql(database_url, 'UPDATE "File" SET path = %s WHERE id = %s', "p/moved.jpg", "f3")
    sql(database_url, 'UPDATE "File" SET path = path WHERE id = %s', "f4")  # rewritten, values the same
    sql(database_url, "UPDATE filesync.files SET attempts = 2 WHERE file_id IN ('f3', 'f4')")
    sql(database_url, 'INSERT INTO "File" (id, path) VALUES (%s, %s)', "f5", "p/5.jpg")
    ledger.enqueue()
    after = {row[0]: row for row in ledger_rows(database_url)}
    before = {row[0]: row for row in ledger_rows(database_url)}

    assert after["f0"] == {r[0]: r for r in first}["f0"]  # untouched row: not written
    assert after["f1"][4] == "48.85,2.29"
    assert after["f2"][3] is not None and after["f2"][3].startswith("2024-05-06")
    assert after["f3"][2] == "p/moved.jpg" and after["f3"][6] == 0  # a new path: fresh attempts
    assert after["f4"][2] == "p/4.jpg" and after["f4"][6] == 2  # same values: attempts kept
    assert "f5" in after

    ledger.enqueue()
    assert {row[0]: row for row in ledger_rows(database_url)} == before  # and then nothing again


def test_the_versions_are_used_for_a_table_and_not_for_a_view(ledger: PostgresLedger, database_url: str) -> None:
    sql(database_url, 'INSERT INTO "File" (id, path) VALUES (%s, %s)', "a", "a.jpg")
    ledger.enqueue()
    (version,) = sql(database_url, "SELECT app_version::text FROM filesync.files WHERE file_id = 'a'")[0]
    (xmin,) = sql(database_url, 'SELECT xmin::text FROM "File" WHERE id = %s', "a")[0]

    if ledger.app.table == APP.table:
        assert version == xmin
    else:
        assert version is None


def test_a_row_that_moves_while_its_bytes_are_sent_is_not_recorded_and_goes_again(
    database_url: str,
) -> None:
    """The row moves mid-transfer and another replica's enqueue records the new path: the old bytes' result
    is refused (RowChanged), the transfer is marked to replace what it wrote, and the next claim reads the
    new path. The app's flag stays unset until the new bytes are confirmed."""
    from filesync.errors import RowChanged
    from filesync.model import RemoteObject

    worker, other = (PostgresLedger(Database(database_url, max_size=2), "filesync", APP) for _ in range(2))
    try:
        worker.migrate()
        sql(database_url, 'INSERT INTO "File" (id, path) VALUES (%s, %s)', "m", "old.jpg")
        worker.enqueue()
        (task,) = worker.claim("w1", 1, 300)
        worker.record_info("m", "image", "image/jpeg", 10)
        sql(database_url, 'UPDATE "File" SET path = %s WHERE id = %s', "new.jpg", "m")
        assert other.enqueue() == 1  # another replica's run, while w1 is still sending old.jpg

        old_bytes = RemoteObject(remote_id="m", url=None, size=10)
        with pytest.raises(RowChanged, match=r"new\.jpg"):
            worker.record_done("w1", "m", "local", old_bytes, ["local"], path=task.path)

        assert sql(database_url, "SELECT state, replace FROM filesync.transfers WHERE file_id = 'm'") == [
            ("pending", True)]
        assert sql(database_url, 'SELECT "copiedToCloudflare" FROM "File" WHERE id = %s', "m") == [(False,)]
        worker.release("w1", ["m"])
        (again,) = worker.claim("w1", 1, 300)
        assert again.path == "new.jpg" and again.replace_sinks == frozenset({"local"})
        new_bytes = RemoteObject(remote_id="m", url=None, size=11)
        assert worker.record_done("w1", "m", "local", new_bytes, ["local"], path=again.path)
        assert sql(database_url, 'SELECT "copiedToCloudflare" FROM "File" WHERE id = %s', "m") == [(True,)]
    finally:
        worker.close()
        other.close()
