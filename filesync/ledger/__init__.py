"""filesync's own state. Only this package imports psycopg; `base.Ledger` is the contract the engine uses."""

from __future__ import annotations

from filesync.ledger.base import CopiedTransfer, Ledger, Problem, claim_token, host_prefix
from filesync.ledger.db import Database, embedded_url, redact_url
from filesync.ledger.store import PostgresLedger

__all__ = [
    "CopiedTransfer",
    "Database",
    "Ledger",
    "PostgresLedger",
    "Problem",
    "claim_token",
    "embedded_url",
    "host_prefix",
    "redact_url",
]
