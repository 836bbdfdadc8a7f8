from __future__ import annotations

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
