"""`filesync scan`: the source's listing into filesync's catalog, for runs without an app table.

The listing streams page by page into one transaction (a million objects are never held in memory); a
second scan of an unchanged source writes nothing; a changed object (ETag, size) is copied again by the
next run, replacing the old copy; an object gone from the source is marked so and no longer copied.
"""

from __future__ import annotations

import time

import structlog

from filesync.app import App
from filesync.model import ScanCounts

log = structlog.get_logger("filesync")


def scan(app: App, prefix: str | None = None) -> ScanCounts | None:
    """Record the source's objects under `prefix` (default FILESYNC_SCAN_PREFIX); None when another worker is
    scanning right now (its scan serves this run too)."""
    prefix = app.config.scan_prefix if prefix is None else prefix
    started = time.monotonic()
    counts = app.ledger.scan(app.source.list(prefix), prefix)
    if counts is None:
        log.info("scan_skipped", reason="another worker is scanning")
        return None
    log.info("scan_finished", source=app.config.source, prefix=prefix, listed=counts.listed, added=counts.added,
             changed=counts.changed, gone=counts.gone, skipped=counts.skipped,
             duration_ms=int((time.monotonic() - started) * 1000))
    return counts
