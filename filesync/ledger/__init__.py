"""filesync's own state in PostgreSQL. Only this package imports psycopg."""

from __future__ import annotations

from filesync.ledger.db import Database, embedded_url, redact_url
from filesync.ledger.store import Ledger, claim_token, host_prefix

__all__ = ["Database", "Ledger", "claim_token", "embedded_url", "host_prefix", "redact_url"]
