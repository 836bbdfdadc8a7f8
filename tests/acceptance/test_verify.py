"""Issue 5: `filesync verify` finds a copy deleted behind filesync's back, and `--repair` copies it again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import requests

from filesync.testing.fakes.bunny import FakeBunny
from tests.acceptance.test_routing import env_for, run, seed, transfers


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run([sys.executable, "-m", "filesync", *args], env=full, capture_output=True, text=True,
                          timeout=60, cwd="/")


def test_verify_finds_deleted_object_and_repair_copies_it_again(tmp_path: Path, database_url: str) -> None:
    with FakeBunny() as bunny:
        src = seed(tmp_path, database_url, ["keep.jpg", "lost.jpg"])
        out = tmp_path / "out"
        env = env_for(database_url, src, out, bunny, "image/*=bunny,local")  # type: ignore[arg-type]
        assert run(env).copied == 2
        deleted = requests.delete(f"{bunny.url}/{bunny.zone}/lost.jpg",  # type: ignore[attr-defined]
                                  headers={"AccessKey": bunny.access_key}, timeout=5)
        assert deleted.status_code == 200
        local_mtime = (out / "lost.jpg").stat().st_mtime_ns

        clean_sample = _cli(env, "verify", "--sink", "local")
        found = _cli(env, "verify")

        assert clean_sample.returncode == 0 and "0 drifted" in clean_sample.stdout
        assert found.returncode == 1, found.stdout + found.stderr
        assert "checked 4 copies: 1 drifted" in found.stdout
        assert "lost  [bunny]  missing at the destination" in found.stdout
        assert transfers(database_url)[("lost", "bunny")][0] == "done"  # verify alone changes nothing

        repaired = _cli(env, "verify", "--repair")

        assert repaired.returncode == 0 and "1 queued again" in repaired.stdout
        assert transfers(database_url)[("lost", "bunny")][0] == "pending"
        again = run(env)
        assert again.per_sink == {"bunny": {"copied": 1}}
        assert sorted(o.key for o in bunny.stored()) == ["keep.jpg", "lost.jpg"]  # type: ignore[attr-defined]
        assert (out / "lost.jpg").stat().st_mtime_ns == local_mtime  # the intact copy was not re-sent
        assert _cli(env, "verify", "--sample", "3").stdout.startswith("checked 3 copies: 0 drifted")


def test_verify_refuses_an_unknown_sink_and_reports_unrouted_copies_as_not_checked(
    tmp_path: Path, database_url: str
) -> None:
    with FakeBunny() as bunny:
        src = seed(tmp_path, database_url, ["a.jpg", "b.jpg"])
        out = tmp_path / "out"
        env = env_for(database_url, src, out, bunny, "image/*=bunny,local")  # type: ignore[arg-type]
        assert run(env).copied == 2
        bunny_requests = len(bunny.requests)  # type: ignore[attr-defined]

        unknown = _cli(env, "verify", "--sink", "bunnny")
        unrouted = _cli({**env, "FILESYNC_ROUTES": "image/*=local"}, "verify")

        assert unknown.returncode == 2, unknown.stdout + unknown.stderr
        assert "bunnny" in unknown.stderr and "checked" not in unknown.stdout
        assert unrouted.returncode == 1, unrouted.stdout + unrouted.stderr
        assert unrouted.stdout.startswith("checked 2 copies: 0 drifted")  # the local copies only
        assert "[bunny]  2 copies not checked" in unrouted.stdout
        assert len(bunny.requests) == bunny_requests  # type: ignore[attr-defined]  # nothing asked Bunny
