"""filesync: copy media listed in PostgreSQL from a bucket to Cloudflare Images, Stream and other sinks."""

from __future__ import annotations

__version__ = "0.1.0"
