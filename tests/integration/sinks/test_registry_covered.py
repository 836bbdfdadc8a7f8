"""Registering a sink without a conformance case fails CI (rclone's fstests rule)."""

from __future__ import annotations

import filesync.sinks

from .conftest import load_cases


def test_every_registered_sink_has_a_case() -> None:
    names = [c.name for c in load_cases()]
    assert len(names) == len(set(names)), f"two cases share a name: {sorted(names)}"
    registered = set(filesync.sinks.registry())
    assert set(names) == registered, (
        f"without a case: {sorted(registered - set(names))}; cases for no registered sink: "
        f"{sorted(set(names) - registered)}"
    )
