from __future__ import annotations

import re
from pathlib import Path

import pytest

from filesync.errors import ConfigError
from filesync.settings import Config, Environment, Setting, positive_int, tus_chunk_size


def test_environment_wins_over_dotenv(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("FILESYNC_CONCURRENCY=7\nFILESYNC_MAX_ATTEMPTS=9\n")
    env = Environment({"FILESYNC_CONCURRENCY": "2"}, env_file=str(env_file))
    config = Config.load(env)
    assert (config.concurrency, config.max_attempts) == (2, 9)


@pytest.mark.parametrize(
    ("name", "value"),
    [("FILESYNC_CONCURRENCY", "0"), ("FILESYNC_CONCURRENCY", "many"), ("DATABASE_URL", "mysql://x"),
     ("FILESYNC_FILES_TABLE", "x" * 64), ("FILESYNC_WORKER_ID", "a b")],
)
def test_malformed_setting_names_the_variable(name: str, value: str) -> None:
    env = Environment({name: value}, env_file="/nonexistent")
    with pytest.raises(ConfigError, match=name):
        Config.load(env)


def test_every_problem_is_reported_at_once_and_secrets_are_not_echoed() -> None:
    settings = (
        Setting("A_REQUIRED", "needed", required=True),
        Setting("B_SECRET", "a secret number", secret=True, parse=positive_int),
    )
    env = Environment({"B_SECRET": "hunter2-not-a-number"}, env_file="/nonexistent")
    with pytest.raises(ConfigError) as info:
        env.resolve(settings)
    message = str(info.value)
    assert "A_REQUIRED is required" in message and "B_SECRET" in message
    assert "hunter2" not in message


def test_secret_values_include_the_password_inside_database_url() -> None:
    from filesync.settings import CORE_SETTINGS

    env = Environment({"DATABASE_URL": "postgresql://app:S3cr3tPw@db:5432/app"}, env_file="/nonexistent")
    secrets = env.secret_values(CORE_SETTINGS)
    assert "S3cr3tPw" in secrets


@pytest.mark.parametrize("raw", ["1000", "5242881", str(201 * 1024 * 1024)])
def test_tus_chunk_size_obeys_streams_rules(raw: str) -> None:
    with pytest.raises(ValueError):
        tus_chunk_size(raw)
    assert tus_chunk_size(str(50 * 1024 * 1024)) == 52428800


# --- issue 9: errors that say what is wrong --------------------------------------------------------

from filesync.app import all_settings, resolve_settings  # noqa: E402
from filesync.settings import (  # noqa: E402
    CORE_SETTINGS,
    NOT_SETTINGS,
    ConfigProblems,
    bounded_float,
    bounded_int,
    postgres_url,
    unknown_variables,
)

PASSWORD = "pw-0xSECRET"


@pytest.mark.parametrize(
    ("url", "reason"),
    [(f"postgresql://u:{PASSWORD}@host:notaport/db", "port is not a number"),
     (f"postgresql://u:{PASSWORD}@host:99999/db", "port is not a number"),
     ("postgresql://u:pw%zz-0xSECRET@host/db", "percent-encode"),
     (f"postgresql://u:{PASSWORD}@/db", "names no host"),
     (f"postgresql://u:{PASSWORD}@:5432/db", "names no host"),
     (f"postgresql://u:{PASSWORD}@host/db?sslmode=requir", "sslmode must be one of"),
     ("postgresql://u:pw/0xSECRET@host/db", "port is not a number"),
     (f"mysql://u:{PASSWORD}@host/db", "must be a postgresql:// URL")],
)
def test_malformed_database_url_is_refused_without_showing_its_secret(url: str, reason: str) -> None:
    env = Environment({"DATABASE_URL": url}, env_file="/nonexistent")
    with pytest.raises(ConfigError) as info:
        Config.load(env)
    message = str(info.value)
    assert message.startswith("DATABASE_URL is invalid: ") and reason in message, message
    assert "0xSECRET" not in message and "\n" not in message


@pytest.mark.parametrize(
    "url",
    ["postgresql://u:p%40ss@db.example:5432/app?sslmode=require", "postgres://db/app",
     "postgresql://postgres:@/postgres?host=/tmp/pgdata", "postgresql://u@h1:5432,h2:5433/app"],
)
def test_well_formed_database_urls_pass(url: str) -> None:
    assert postgres_url(url) == url


@pytest.mark.parametrize(
    ("name", "value"),
    [("FILESYNC_HTTP_TIMEOUT", "inf"), ("FILESYNC_HTTP_TIMEOUT", "nan"), ("FILESYNC_HTTP_TIMEOUT", "1e30"),
     ("FILESYNC_LEASE_SECONDS", str(5000 * 365 * 86400)), ("FILESYNC_CONCURRENCY", "100000"),
     ("FILESYNC_RETRY_BACKOFF_SECONDS", "1e30"), ("FILESYNC_REQUEST_MAX_WAIT", "-inf"),
     ("FILESYNC_REQUEST_RETRIES", "1000000"), ("FILESYNC_CLAIM_BATCH", "1e3"), ("FILESYNC_MAX_ATTEMPTS", "0")],
)
def test_values_that_parse_but_cannot_work_are_refused_with_the_range(name: str, value: str) -> None:
    env = Environment({name: value}, env_file="/nonexistent")
    with pytest.raises(ConfigError, match=rf"^{name}='{re.escape(value)}' is invalid: must be a (whole )?number "
                                          r"from [\d.]+ to \d+$"):
        Config.load(env)


def test_bounded_parsers_take_their_limits() -> None:
    assert bounded_int(1, 256)("256") == 256 and bounded_int(0, 5)("0") == 0
    assert bounded_float(0.1, 3600)("0.1") == 0.1 and bounded_float(0.1, 3600)("3600") == 3600
    with pytest.raises(ValueError, match=r"from 0\.1 to 3600"):
        bounded_float(0.1, 3600)("0.09")


def test_every_bad_setting_of_every_group_is_reported_at_once() -> None:
    """Core, the chosen source's, each routed sink's, logs and daemon: one error listing all of them."""
    env = Environment({
        "FILESYNC_CONCURRENCY": "0",                      # core
        "FILESYNC_SOURCE": "s3",                          # source: SPACES_* missing
        "FILESYNC_ROUTES": "image/*=cloudflare-images;video/*=bunny",  # sinks: their credentials missing
        "FILESYNC_LOG_LEVEL": "LOUD",                     # logs
        "FILESYNC_SCHEDULE": "every now and then",        # daemon
    }, env_file="/nonexistent")
    with pytest.raises(ConfigProblems) as info:
        resolve_settings(env)
    text = str(info.value)
    for name in ("FILESYNC_CONCURRENCY", "SPACES_ENDPOINT", "SPACES_KEY", "SPACES_BUCKET", "CLOUDFLARE_API_TOKEN",
                 "CLOUDFLARE_ACCOUNT_ID", "BUNNY_STORAGE_ZONE", "BUNNY_API_KEY", "FILESYNC_LOG_LEVEL",
                 "FILESYNC_SCHEDULE"):
        assert name in text, name
    assert len(info.value.problems) == len(set(info.value.problems))


def test_an_unknown_sink_is_reported_with_the_other_groups() -> None:
    env = Environment({"FILESYNC_ROUTES": "image/*=nowhere", "FILESYNC_SOURCE": "local",
                       "FILESYNC_HTTP_TIMEOUT": "inf"}, env_file="/nonexistent")
    with pytest.raises(ConfigProblems) as info:
        resolve_settings(env)
    assert [p.split(" ", 1)[0] for p in info.value.problems] == [
        "FILESYNC_HTTP_TIMEOUT='inf'", "FILESYNC_SOURCE_DIR", "FILESYNC_ROUTES"]


@pytest.mark.parametrize(
    ("name", "meant"),
    [("FILESYNC_CONCURENCY", "FILESYNC_CONCURRENCY"), ("CLOUDFLARE_API_TOKN", "CLOUDFLARE_API_TOKEN"),
     ("SPACES_SECERT", "SPACES_SECRET"), ("filesync_concurrency", "FILESYNC_CONCURRENCY"),
     ("FILESYNC_NO_SUCH_THING", None)],
)
def test_unknown_and_misspelt_variables_are_found_with_what_they_probably_meant(name: str, meant: str | None) -> None:
    assert unknown_variables([name, "PATH", "HOME"], all_settings()) == [(name, meant)]


def test_known_variables_that_are_not_settings_are_not_reported() -> None:
    ordinary = ["PATH", "HOME", "HOSTNAME", "LANG", "TZ", "POSTGRES_PASSWORD", "AWS_SECRET_ACCESS_KEY",
                "XDG_RUNTIME_DIR", "S3_UPLOAD_PART_MIN_SIZE", "SPACES_REGION_NAME"]
    names = [s.env for s in all_settings()] + sorted(NOT_SETTINGS) + ordinary
    assert unknown_variables(names, all_settings()) == []


def test_every_filesync_variable_the_project_uses_is_a_setting_or_a_known_non_setting() -> None:
    """What the image, Compose, the deploy files, CI, the benchmarks and the test fixtures set or read must
    not draw a warning."""
    root = Path(__file__).resolve().parents[2]
    places = ["crontab", "Dockerfile", "docker-compose.yml", "Makefile", "docker", "deploy", "bench", ".ci",
              "tests/conftest.py", "tests/acceptance/daemon_support.py", "filesync/testing"]
    used: set[str] = set()
    for place in places:
        path = root / place
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
        for file in files:
            if "__pycache__" not in file.parts:
                used.update(re.findall(r"\bFILESYNC_[A-Z0-9_]*[A-Z0-9]\b", file.read_text(errors="replace")))
    assert {"FILESYNC_UID", "FILESYNC_TEST_PGROOT"} <= used, "the places above moved"
    assert [name for name, _ in unknown_variables(used, all_settings())] == []


def test_environment_warns_once_per_unknown_variable_and_says_where_it_was_set(tmp_path: Path) -> None:
    env_file = tmp_path / "settings.env"
    env_file.write_text("FILESYNC_CONCURENCY=3\n")
    env = Environment({"CLOUDFLARE_API_TOKN": "x", "FILESYNC_UID": "10001"}, env_file=str(env_file))
    assert env.unknown(all_settings()) == [
        "CLOUDFLARE_API_TOKN is not a filesync setting and is ignored; did you mean CLOUDFLARE_API_TOKEN?",
        "FILESYNC_CONCURENCY (in the settings file) is not a filesync setting and is ignored; "
        "did you mean FILESYNC_CONCURRENCY?",
    ]


def test_env_file_named_by_filesync_env_file_must_exist_unless_marked_optional(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.env")
    with pytest.raises(ConfigError, match=r"^FILESYNC_ENV_FILE='.*missing.env' names no file"):
        Environment({"FILESYNC_ENV_FILE": missing})
    assert Environment({"FILESYNC_ENV_FILE": f"-{missing}"}).get("FILESYNC_ENV_FILE") == f"-{missing}"
    present = tmp_path / "present.env"
    present.write_text("FILESYNC_CONCURRENCY=3\n")
    assert Environment({"FILESYNC_ENV_FILE": f"-{present}"})["FILESYNC_CONCURRENCY"] == "3"


@pytest.mark.parametrize("kind", ["folder", "not utf-8"])
def test_an_env_file_that_cannot_be_read_is_one_clear_error(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "bad.env"
    if kind == "folder":
        path.mkdir()
    else:
        path.write_bytes(b"FILESYNC_CONCURRENCY=\xff\xfe\n")
    with pytest.raises(ConfigError, match=r"^FILESYNC_ENV_FILE='.*bad.env' (is a folder|is not UTF-8)"):
        Environment({"FILESYNC_ENV_FILE": str(path)})


def test_core_settings_refuse_infinite_and_huge_values_by_their_parsers() -> None:
    """Every numeric core setting is bounded: `inf` parses as a float and 10**12 as an int."""
    numeric = [s for s in CORE_SETTINGS if s.default is not None and s.default.replace(".", "").isdigit()]
    assert numeric
    for setting in numeric:
        for value in ("inf", "nan", str(10**12)):
            with pytest.raises(ValueError):
                setting.parse(value)
