"""Issue 9: PostgreSQL problems named within seconds; the app's table checked against the settings.

Connection problems are made for real on a PostgreSQL of the test's own (pgserver's binaries, a private
data folder) that listens on TCP with password authentication and no TLS: a wrong password, a database
that does not exist, `sslmode=require`, a port nobody listens on, a host name that does not resolve. Each
must fail `filesync run` with exit 3 and libpq's reason, not the pool's "couldn't get a connection after
15.00 sec". A missing table or column, or one of a type filesync cannot use, is a configuration error
(exit 2) that names its setting, and `filesync check` prints a row per problem.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

PASSWORD = "pg-0xDBSECRET"
WRONG = "wrong-0xDBSECRET"
#: "Within a few seconds": a generous upper bound on the whole subprocess, well under the pool's 15 s wait
#: plus start-up that the old behaviour needed.
FAST = 12.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PasswordPostgres:
    """pgserver's PostgreSQL in a folder of ours, on 127.0.0.1 with scram-sha-256 and no TLS."""

    def __init__(self, root: Path) -> None:
        import pgserver
        from pgserver._commands import POSTGRES_BIN_PATH

        self._pg_ctl = str(POSTGRES_BIN_PATH / "pg_ctl")
        server = pgserver.get_server(str(root / "pgdata"), cleanup_mode=None)  # type: ignore[attr-defined]
        self.user = server.system_user
        self.pgdata = Path(server.pgdata)
        socket_dir = str(server.get_postmaster_info().socket_dir)
        with psycopg.connect(str(server.get_uri()), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'")
            conn.execute("CREATE DATABASE app OWNER app")
        (self.pgdata / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
        self._ctl("-m", "fast", "stop")
        self.port = free_port()
        self._ctl("-o", f"-h 127.0.0.1 -p {self.port}", "-o", f"-k {socket_dir}", "-l", str(self.pgdata / "log"),
                  "start")

    def _ctl(self, *args: str) -> None:
        subprocess.run([self._pg_ctl, "-D", str(self.pgdata), "-w", *args], check=True, user=self.user,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)

    def url(self, password: str = PASSWORD, database: str = "app", query: str = "") -> str:
        return f"postgresql://app:{password}@127.0.0.1:{self.port}/{database}{query}"

    def stop(self) -> None:
        self._ctl("-m", "immediate", "stop")


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PasswordPostgres]:
    server = PasswordPostgres(tmp_path_factory.mktemp("pg-password"))
    try:
        yield server
    finally:
        server.stop()


def cli(env: dict[str, str], *args: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    (tmp_path / "src").mkdir(exist_ok=True)
    full = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "FILESYNC_ENV_FILE": os.devnull,
            "FILESYNC_SOURCE": "local", "FILESYNC_SOURCE_DIR": str(tmp_path / "src"), "FILESYNC_ROUTES": "*=local",
            "FILESYNC_LOCAL_DIR": str(tmp_path / "dst"), "FILESYNC_LOG_FILE": os.devnull, **env}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "filesync", *args], env=full, capture_output=True, text=True,
                          timeout=120, cwd="/")
    return done, time.monotonic() - started


def test_the_right_settings_reach_the_server(pg: PasswordPostgres, tmp_path: Path) -> None:
    """The control: the same server and settings work when nothing is wrong."""
    done, _ = cli({"DATABASE_URL": pg.url()}, "migrate", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr


CASES = {
    "wrong-password": (lambda pg: pg.url(password=WRONG), 'password authentication failed for user "app"'),
    "unknown-database": (lambda pg: pg.url(database="nosuchdb"), 'database "nosuchdb" does not exist'),
    "tls-required": (lambda pg: pg.url(query="?sslmode=require"), "server does not support SSL"),
    "refused": (lambda pg: f"postgresql://app:{PASSWORD}@127.0.0.1:{free_port()}/app", "Connection refused"),
    "unknown-host": (lambda pg: f"postgresql://app:{PASSWORD}@no-such-host.invalid:5432/app", "no-such-host.invalid"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_connection_problem_is_named_within_seconds(pg: PasswordPostgres, tmp_path: Path, case: str) -> None:
    make_url, cause = CASES[case]
    done, seconds = cli({"DATABASE_URL": make_url(pg)}, "run", tmp_path=tmp_path)
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stderr.startswith("filesync: database unavailable: cannot connect to PostgreSQL: "), done.stderr
    assert cause in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    assert "couldn't get a connection" not in done.stderr and "Traceback" not in done.stderr
    assert "0xDBSECRET" not in done.stdout + done.stderr
    assert seconds < FAST, f"{seconds:.1f} s"


def test_check_names_the_connection_problem_in_the_database_row(pg: PasswordPostgres, tmp_path: Path) -> None:
    done, seconds = cli({"DATABASE_URL": pg.url(password=WRONG)}, "check", tmp_path=tmp_path)
    assert done.returncode == 5, done.stdout + done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("database"))
    assert "FAILED" in row and 'password authentication failed for user "app"' in row, done.stdout
    assert "0xDBSECRET" not in done.stdout + done.stderr
    assert seconds < FAST, f"{seconds:.1f} s"


def test_after_an_outage_the_pools_timeout_says_why_it_cannot_connect(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Once reached, an outage is the pool's to ride out; when its wait runs out, the error names the cause."""
    from filesync.errors import LedgerUnavailable
    from filesync.ledger import Database

    server = PasswordPostgres(tmp_path_factory.mktemp("pg-outage"))
    db = Database(server.url(), max_size=1, timeout=2.0)
    try:
        with db.transaction() as conn:
            conn.execute("SELECT 1")
        server.stop()
        with pytest.raises(LedgerUnavailable) as info, db.transaction() as conn:
            conn.execute("SELECT 1")
    finally:
        db.close()
    message = str(info.value)
    assert "couldn't get a connection after 2.00 sec; connecting now: " in message, message
    assert "Connection refused" in message and "0xDBSECRET" not in message


# --- the app's table ------------------------------------------------------------------------------

COLUMN_SETTINGS = {
    "FILESYNC_ID_COLUMN": "id", "FILESYNC_PATH_COLUMN": "path", "FILESYNC_DATE_TAKEN_COLUMN": "dateTaken",
    "FILESYNC_GPS_COLUMN": "gpsCoordinates", "FILESYNC_COPIED_COLUMN": "copiedToCloudflare",
}
COLUMNS = "id, path, dateTaken, gpsCoordinates, copiedToCloudflare"


def test_a_missing_table_is_a_configuration_error_naming_the_setting(database_url: str, tmp_path: Path) -> None:
    done, _ = cli({"DATABASE_URL": database_url, "FILESYNC_FILES_TABLE": "Files"}, "run", tmp_path=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == ("filesync: configuration error: FILESYNC_FILES_TABLE='Files': no such table; "
                           "tables here: File\n")


@pytest.mark.parametrize("setting", COLUMN_SETTINGS)
def test_a_missing_column_is_a_configuration_error_naming_the_setting(
    database_url: str, tmp_path: Path, setting: str
) -> None:
    done, _ = cli({"DATABASE_URL": database_url, setting: "nope"}, "run", tmp_path=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == (f"filesync: configuration error: {setting}='nope': table 'File' has no such column; "
                           f"its columns: {COLUMNS}\n")


def test_a_column_of_an_unusable_type_is_a_configuration_error(database_url: str, tmp_path: Path) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute('CREATE TABLE "Photo" (id text, path text, "dateTaken" timestamptz, "gpsCoordinates" text, '
                     '"copiedToCloudflare" integer)')
    done, _ = cli({"DATABASE_URL": database_url, "FILESYNC_FILES_TABLE": "Photo"}, "run", tmp_path=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == ("filesync: configuration error: FILESYNC_COPIED_COLUMN='copiedToCloudflare': the "
                           "column is integer; filesync needs boolean\n")


def test_check_prints_a_row_per_problem_with_the_app_table(database_url: str, tmp_path: Path) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute('CREATE SCHEMA media')
        conn.execute('CREATE TABLE media.items (id bytea, key text, taken interval, gps point, copied boolean)')
    env = {"DATABASE_URL": database_url, "FILESYNC_FILES_TABLE": "media.items", "FILESYNC_PATH_COLUMN": "path",
           "FILESYNC_DATE_TAKEN_COLUMN": "taken", "FILESYNC_GPS_COLUMN": "gps", "FILESYNC_COPIED_COLUMN": "copied"}
    done, _ = cli(env, "check", tmp_path=tmp_path)
    assert done.returncode == 5, done.stdout + done.stderr
    rows = [line.split(None, 3) for line in done.stdout.splitlines() if line.startswith("app table")]
    assert rows == [
        ["app", "table", "media.items", "FAILED  FILESYNC_ID_COLUMN='id': the column is bytea; filesync needs "
                                        "text, uuid or an integer"],
        ["app", "table", "media.items", "FAILED  FILESYNC_PATH_COLUMN='path': table 'media.items' has no such "
                                        "column; its columns: id, key, taken, gps, copied"],
        ["app", "table", "media.items", "FAILED  FILESYNC_DATE_TAKEN_COLUMN='taken': the column is interval; "
                                        "filesync needs timestamptz, timestamp, date or text"],
    ], done.stdout
    assert "hint:" not in done.stdout  # no index advice for a table filesync cannot use


def test_check_passes_the_table_the_readme_describes(database_url: str, tmp_path: Path) -> None:
    done, _ = cli({"DATABASE_URL": database_url}, "check", tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [line.split() for line in done.stdout.splitlines() if line.startswith("app table")] == [
        ["app", "table", "File", "ok"]]
