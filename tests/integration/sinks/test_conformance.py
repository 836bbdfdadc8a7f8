"""Every registered sink against the shared suite, through the cases collected in conftest.py."""

from __future__ import annotations

from filesync.testing.sink_conformance import SinkConformance


class TestSinkConformance(SinkConformance):
    pass
