"""Every Prometheus metric, defined once. The pipeline updates them; `health.py` serves them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

files_total = Counter(
    "filesync_files_total", "Files handled, by destination and outcome (copied, skipped, failed, retry).",
    ["sink", "outcome"], registry=REGISTRY,
)
bytes_total = Counter(
    "filesync_bytes_sent_total", "Bytes sent to each destination.", ["sink"], registry=REGISTRY,
)
run_duration_seconds = Histogram(
    "filesync_run_duration_seconds", "Duration of one run.", registry=REGISTRY,
    buckets=(1, 5, 15, 60, 300, 900, 1800, 3600, 7200),
)
runs_total = Counter(
    "filesync_runs_total", "Runs, by result (ok, failed, interrupted, error).", ["result"], registry=REGISTRY,
)
last_success_timestamp = Gauge(
    "filesync_last_success_timestamp_seconds", "Unix time of the last run that ended without error.",
    registry=REGISTRY,
)
backlog = Gauge(
    "filesync_backlog_files", "Files due for a transfer at the end of the last run.", registry=REGISTRY,
)
ticks_total = Counter(
    "filesync_scheduler_ticks_total",
    "Daemon ticks, by outcome (ran, skipped: a run was still going, missed, database_unavailable, "
    "source_unavailable, error).",
    ["outcome"], registry=REGISTRY,
)
