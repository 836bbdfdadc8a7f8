"""Every registered source against the shared suite, through the cases collected in conftest.py."""

from __future__ import annotations

from filesync.testing.source_conformance import SourceConformance


class TestSourceConformance(SourceConformance):
    pass
