"""Registering a source without a conformance case fails CI, as for sinks (rclone's fstests rule)."""

from __future__ import annotations

from importlib.metadata import entry_points

from filesync.sources import GROUP

from .conftest import load_cases


def test_every_registered_source_has_a_case() -> None:
    names = [c.name for c in load_cases()]
    assert len(names) == len(set(names)), f"two cases share a name: {sorted(names)}"
    registered = {ep.name for ep in entry_points(group=GROUP)}
    assert {"s3", "local", "gdrive"} <= registered, f"a built-in source is not registered: {sorted(registered)}"
    assert set(names) == registered, (
        f"without a case: {sorted(registered - set(names))}; cases for no registered source: "
        f"{sorted(set(names) - registered)}"
    )


def test_every_registered_source_loads_and_declares_its_settings() -> None:
    for ep in entry_points(group=GROUP):
        cls = ep.load()
        assert cls.name == ep.name, f"{ep.value} is registered as {ep.name!r} but names itself {cls.name!r}"
        assert cls.SETTINGS, f"{ep.name} declares no settings"
        assert all(s.env.isupper() for s in cls.SETTINGS)
