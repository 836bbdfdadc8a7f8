"""Who may call what: the token rules of the API.

- Routes that change state (`POST /api/retry`, `POST /api/run`) need `Authorization: Bearer
  <FILESYNC_HTTP_TOKEN>`; without a token configured they are disabled (403), so a daemon is never
  controllable by whoever reaches its port.
- Routes that read the ledger are open without a token only when the server listens on a loopback
  address (the default 127.0.0.1): reaching it then already means being on the machine. There the
  `Host` header must name a loopback host too, so a web page the operator visits cannot read the API
  through a DNS name rebound to 127.0.0.1. Once a token is set, they need it as well.
- The page and `/api/openapi.json` hold no data and are always served; the page asks for the token.

The token is compared in constant time, and it is a secret setting: redacted from every output.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from filesync.api.routing import Access, ApiError

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="filesync"'}


def is_loopback(host: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1 (a name or address without its port)."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str:
    """The host of a `Host` header: `[::1]:9090` -> `::1`, `localhost:9090` -> `localhost`."""
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


@dataclass(frozen=True)
class Gate:
    """The rules for one server: its listening address and the token, if one is set."""

    host: str
    token: str | None

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def check(self, access: Access, headers: Mapping[str, str]) -> None:
        """Return when the request may go on; ApiError 401 or 403 saying what is missing otherwise."""
        if access is Access.PUBLIC:
            return
        if self.token is None:
            if access is Access.WRITE:
                raise ApiError(403, "this endpoint changes state and is disabled: set FILESYNC_HTTP_TOKEN to "
                                    "enable it")
            if not self.loopback:
                raise ApiError(403, f"the API is closed on {self.host} without a token: set FILESYNC_HTTP_TOKEN, "
                                    "or listen on a loopback address")
            host = headers.get("host")
            if host is not None and not is_loopback(_host_name(host)):
                raise ApiError(403, "without FILESYNC_HTTP_TOKEN the API answers only requests addressed to "
                                    "localhost")
            return
        if not self._presented(headers.get("authorization", "")):
            raise ApiError(401, "this endpoint needs Authorization: Bearer <FILESYNC_HTTP_TOKEN>", headers=_CHALLENGE)

    def _presented(self, header: str) -> bool:
        assert self.token is not None
        scheme, _, given = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(), self.token.encode())
