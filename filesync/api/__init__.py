"""The daemon's JSON API and status page (issue 15), served beside /healthz and /metrics.

One module per concern: `routing` (requests, responses, the route table), `auth` (the token rules),
`endpoints` (what each route answers), `live` (the current run's progress, an Observer), `openapi` (the
document), `page` (the static page), `service` (`Api`: all of it behind one `handle` call).
"""

from __future__ import annotations

from filesync.api.live import LiveRun
from filesync.api.service import Api, Reply

__all__ = ["Api", "LiveRun", "Reply"]
