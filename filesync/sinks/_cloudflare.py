"""What the two Cloudflare sinks share: the account settings, paced sessions, the API envelope, and the
tokens of the Images batch host.

Cloudflare counts every API call of an account against one budget (1,200 requests per five minutes,
then a five-minute block), so Images and Stream transfers in one process share one pacer: a 429 seen
by any of them pauses all. The Images batch host is outside that budget: its calls carry a batch token
fetched through the account API, and each token has its own limit (200 requests per second) and so its
own pacer; a 429 there pauses that token's transfers only.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

import requests
import structlog

from filesync.errors import DestinationRefused, ErrorClass, ServerError, SinkError
from filesync.http import Pacer, error_for_status, make_session, pacer, translated
from filesync.settings import Setting, http_url, positive_float, setting, settings_of

GROUP = "Sink: Cloudflare (Images, Stream)"
DEFAULT_API_BASE = "https://api.cloudflare.com/client/v4"
DEFAULT_IMAGES_BATCH_BASE = "https://batch.imagedelivery.net"
PACER_NAME = "cloudflare"
#: Cloudflare's limit per batch token: "Each token is subject to a rate limit of 200 requests per second"
#: (developers.cloudflare.com/images/storage/upload-images/images-batch/).
BATCH_TOKEN_LIMIT = 200.0
#: What one token is paced at: 10 % under its limit, so requests bunched on the way stay under it.
BATCH_TOKEN_RPS = 0.9 * BATCH_TOKEN_LIMIT
#: Requests one token lets through at once: concurrent transfers are not queued 5.6 ms apart (a profile
#: of 8 transfers showed them waiting there), and no second holds more than 180 + 10 < 200.
BATCH_TOKEN_BURST = 10
#: A token is replaced this long before its `expiresAt` (a quarter of its life when that is shorter),
#: so no transfer meets an expired token; clocks a little apart are covered by the 401 refresh.
BATCH_REFRESH_MARGIN = 60.0
#: The documented answer shows `expiresAt` but not the lifetime; without a readable one, a token is used
#: this long.
BATCH_ASSUMED_LIFETIME = 300.0

log = structlog.get_logger("filesync")

@dataclass(frozen=True)
class CloudflareSettings:
    """The account settings both Cloudflare sinks read."""

    account_id: str = setting("CLOUDFLARE_ACCOUNT_ID", "Cloudflare account id (dashboard sidebar).",
                              required=True, group=GROUP)
    token: str = setting("CLOUDFLARE_API_TOKEN", "API token with Images Write and/or Stream Write.",
                         required=True, secret=True, group=GROUP)
    api_base: str = setting("CLOUDFLARE_API_BASE", "Cloudflare API base URL (tests point it at a fake).",
                            default=DEFAULT_API_BASE, parse=http_url, group=GROUP)
    rps: float = setting("FILESYNC_CLOUDFLARE_RPS", "Requests per second to the Cloudflare API, shared by every "
                         "transfer; Cloudflare blocks an account for 5 minutes past 1200 requests in 5 minutes.",
                         default="3.5", parse=positive_float, group=GROUP)


SETTINGS: tuple[Setting, ...] = settings_of(CloudflareSettings)

#: Cloudflare's error codes for a refused token or a token without access to the account. 10000
#: "Authentication error" is in the reference (cf-images issue #40); 5403 is Images' "account is not
#: valid or is not authorized to access this service" (reference: UNCONFIRMED).
AUTH_ERROR_CODES = frozenset({10000, 10001, 9106, 9109, 6003, 6111, 5403})
#: An account over what its plan holds: no upload succeeds until an operator acts, so the destination
#: stops for the run. Neither code is in Cloudflare's published docs: 5453 "The given account has
#: reached a service limit" (Images) and 10011 "Storage capacity exceeded" (Stream, HTTP 413) are
#: quoted from public code and logs; Stream's FAQ says only "429 or 413 with more information".
QUOTA_ERROR_CODES = {5453: "Images", 10011: "Stream"}


@dataclass(frozen=True)
class CloudflareAccount:
    """Where and as whom to call the API. The token never shows in a repr."""

    account_id: str
    token: str = field(repr=False)
    api_base: str = DEFAULT_API_BASE
    rps: float = 3.5

    @classmethod
    def from_settings(cls, values: CloudflareSettings) -> CloudflareAccount:
        return cls(account_id=values.account_id, token=values.token, api_base=values.api_base, rps=values.rps)

    def url(self, *parts: str) -> str:
        """An account URL; each part is one path segment, percent-encoded (a `/` inside becomes %2F)."""
        path = "/".join(quote(p, safe="") for p in parts)
        return f"{self.api_base.rstrip('/')}/accounts/{quote(self.account_id, safe='')}/{path}"


def batch_base_for(api_base: str, batch_base: str | None) -> str | None:
    """The Images batch host that tokens from `api_base` may go to: the one set, or Cloudflare's own when
    the API is Cloudflare's. A token fetched from another API (a fake, a staging or recording proxy) is
    never sent to Cloudflare's batch host; without a batch host of its own, the account API is used."""
    if batch_base and batch_base.rstrip("/") != DEFAULT_IMAGES_BATCH_BASE:
        return batch_base.rstrip("/")
    if api_base.rstrip("/") == DEFAULT_API_BASE:
        return DEFAULT_IMAGES_BATCH_BASE
    return None


def make_cloudflare_session(account: CloudflareAccount, timeout: float) -> requests.Session:
    """A session that sends the token and passes every request through the process-wide pacer."""
    return make_session(
        timeout=timeout,
        pacer=pacer(PACER_NAME, account.rps),
        headers={"Authorization": f"Bearer {account.token}"},
    )


def envelope(response: requests.Response) -> dict[str, Any]:
    """The JSON envelope, or {} when the body is not one (a proxy's HTML error page)."""
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def error_codes(response: requests.Response) -> list[int]:
    return codes_of(envelope(response))


def codes_from(content: bytes | None) -> list[int]:
    """The error codes of an envelope given as bytes (tuspy keeps a PATCH answer's body so)."""
    try:
        data = json.loads(content or b"")
    except ValueError:
        return []
    return codes_of(data) if isinstance(data, dict) else []


def codes_of(data: Mapping[str, Any]) -> list[int]:
    errors = data.get("errors")
    if not isinstance(errors, list):
        return []
    return [e["code"] for e in errors if isinstance(e, dict) and isinstance(e.get("code"), int)]


def reason_from(status: int, content: bytes | str | None, fallback: str = "") -> str:
    """First error's message and code, from an envelope given as bytes or text."""
    text = content.decode("utf-8", "replace") if isinstance(content, bytes) else (content or "")
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        data = {}
    errors = data.get("errors") if isinstance(data, dict) else None
    if errors and isinstance(errors[0], dict):
        first = errors[0]
        message = str(first.get("message") or "").strip() or f"HTTP {status}"
        code = first.get("code")
        return f"{message} (code {code})" if code is not None else message
    return " ".join(text.split())[:200] or fallback or f"HTTP {status}"


def reason(response: requests.Response) -> str:
    return reason_from(response.status_code, response.content, response.reason or "")


class Unclear(ServerError):
    """A 2xx answer that does not say whether the call took effect (`success: false`, a truncated or
    non-JSON body). Transient: the sink looks the object up before anything is recorded."""


Secrets = str | tuple[str, ...]


def hide(text: str, token: Secrets) -> str:
    """`text` with each token (the API token, a batch token) replaced."""
    for secret in (token,) if isinstance(token, str) else token:
        if secret:
            text = text.replace(secret, "<hidden>")
    return text


def api_error(
    status: int,
    text: str,
    *,
    sink: str,
    token: Secrets,
    headers: Mapping[str, str] | None = None,
    codes: list[int] | None = None,
) -> SinkError:
    """An HTTP failure as our error. Refused credentials and a full account stop the destination for the
    run (DestinationRefused) instead of failing file after file; no token shows in the text."""
    text = hide(text, token)
    if 400 <= status < 500:
        over = [QUOTA_ERROR_CODES[c] for c in codes or () if c in QUOTA_ERROR_CODES]
        if over:  # before the 401/403 and 429 rules: Stream answers its quota with 429 or 413
            return DestinationRefused(f"the Cloudflare {over[0]} account is over its quota: {text}", sink=sink,
                                      status=status, error_class=ErrorClass.QUOTA, setting="CLOUDFLARE_ACCOUNT_ID")
        if status in (401, 403) or AUTH_ERROR_CODES.intersection(codes or ()):
            return DestinationRefused(f"Cloudflare refused the credentials: {text}", sink=sink, status=status,
                                      error_class=ErrorClass.AUTH, setting="CLOUDFLARE_API_TOKEN")
    return error_for_status(status, text, sink=sink, headers=headers)


def raise_for_envelope(response: requests.Response, *, sink: str, token: Secrets) -> dict[str, Any]:
    """The envelope of a call whose body may be empty (HEAD, DELETE), or the error it describes.
    A 2xx with `success: false` is Unclear, unless its codes refuse the credentials or the quota."""
    status = response.status_code
    if status >= 400:
        raise api_error(status, reason(response), sink=sink, token=token, headers=response.headers,
                        codes=error_codes(response))
    data = envelope(response)
    if data.get("success") is False:
        refused = api_error(400, reason(response), sink=sink, token=token, codes=error_codes(response))
        if isinstance(refused, DestinationRefused):
            raise refused
        raise Unclear(f"HTTP {status} with success: false ({refused.reason})", sink=sink, status=status)
    return data


def answer(response: requests.Response, *, sink: str, token: Secrets) -> dict[str, Any]:
    """The `result` of a call whose answer we need: a complete success envelope, or an error (Unclear
    when a 2xx body is truncated, not JSON, or has no result)."""
    data = raise_for_envelope(response, sink=sink, token=token)
    result = data.get("result")
    if data.get("success") is not True or not isinstance(result, dict):
        text = hide(" ".join(response.text.split())[:100], token)
        raise Unclear(f"HTTP {response.status_code} without a complete Cloudflare answer: {text!r}", sink=sink,
                      status=response.status_code)
    return result


# --- the Images batch host ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchToken:
    """One batch token, when to replace it and when it expires (time.monotonic()), and its pacer (the
    limit is per token)."""

    value: str = field(repr=False)
    refresh_at: float
    expires_at: float
    pacer: Pacer

    @property
    def header(self) -> str:
        return f"Bearer {self.value}"


def token_times(expires_at: object, now: float) -> tuple[float, float]:
    """(seconds until replacement, seconds until expiry) from `now` (epoch) for a token whose `expiresAt`
    is given (RFC 3339, as Cloudflare writes it, with nanoseconds): replaced `BATCH_REFRESH_MARGIN` ahead
    of expiry, or a quarter of its life ahead when it lives less than four margins."""
    try:
        expires = datetime.fromisoformat(str(expires_at)).timestamp()
    except ValueError:
        expires = now + BATCH_ASSUMED_LIFETIME
    life = expires - now
    if life <= 0:  # already past on our clock: the clocks disagree, so trust the 401 refresh instead
        life = BATCH_ASSUMED_LIFETIME
    return max(1.0, life - min(BATCH_REFRESH_MARGIN, life / 4)), life


class ImagesBatch:
    """Batch tokens for the Images batch host, shared by every transfer of one sink.

    A token is fetched through the account API (so that one call is paced with the account), replaced
    before its `expiresAt` and, once, after a 401 from the batch host. Each token gets a pacer of its
    own at `BATCH_TOKEN_RPS`; `http` picks it per request from the Authorization header. If the account
    refuses the token call (a plan without the batch API: 403, 404, another 4xx, or an error code),
    `token()` answers None for the life of the sink and the sink uses the account API, logged once.
    One token serves all transfers: a process of this design peaks far below 180 requests per second.
    """

    def __init__(self, account: CloudflareAccount, base: str, api: requests.Session, *, sink: str,
                 timeout: float = 120.0, rps: float = BATCH_TOKEN_RPS) -> None:
        self.account = account
        self.base = base.rstrip("/")
        self.sink = sink
        self.rps = rps
        self.unavailable: str | None = None
        self.fetched = 0  # token calls answered with a token
        self._api = api
        self._lock = threading.Lock()
        self._current: BatchToken | None = None
        self._pacers: dict[str, Pacer] = {}  # Authorization header -> pacer, for the current and last token
        self.http = make_session(timeout=timeout, pacer=self.pacer_of)

    def url(self, *parts: str) -> str:
        """A batch-host URL below /images/v1; each part is one path segment, percent-encoded."""
        return "/".join([self.base, "images", "v1", *(quote(p, safe="") for p in parts)])

    def token(self) -> BatchToken | None:
        """A token that is not due for replacement (fetched now if need be), or None: use the account API.
        While one transfer fetches the successor, the others go on with a token that has not expired."""
        current, now = self._current, time.monotonic()
        if self.unavailable is None and current is not None and now < current.refresh_at:
            return current
        if not self._lock.acquire(blocking=current is None or now >= current.expires_at):
            return current
        try:
            current = self._current
            if self.unavailable is not None:
                return None
            if current is not None and time.monotonic() < current.refresh_at:
                return current
            return self._fetch()
        finally:
            self._lock.release()

    def refreshed(self, refused: BatchToken) -> BatchToken | None:
        """After the batch host answered 401 to `refused`: a new token, unless another transfer has
        already replaced it."""
        with self._lock:
            if self.unavailable is not None:
                return None
            if self._current is not None and self._current is not refused:
                return self._current
            return self._fetch()

    def give_up(self, reason: str) -> None:
        """Use the account API from now on (logged once)."""
        with self._lock:
            self._give_up(reason)

    @property
    def secrets(self) -> tuple[str, ...]:
        """The values of the current and the last token, for redaction."""
        return tuple(header.removeprefix("Bearer ") for header in self._pacers)

    def pacer_of(self, request: requests.PreparedRequest) -> Pacer | None:
        """The pacer of the token a request carries (lock-free: `_pacers` is replaced, never changed)."""
        found = self._pacers.get(str(request.headers.get("Authorization", "")))
        current = self._current
        return found if found is not None or current is None else current.pacer

    def close(self) -> None:
        self.http.close()

    def _give_up(self, reason: str) -> None:
        if self.unavailable is None:
            self.unavailable = reason
            self._current = None
            log.warning("images_batch_unavailable", sink=self.sink, reason=reason,
                        hint="Images calls go through the account API, paced at FILESYNC_CLOUDFLARE_RPS")

    def _fetch(self) -> BatchToken | None:
        """GET .../images/v1/batch_token: `{"result": {"token", "expiresAt"}, "success": true, ...}`.
        A refused call (4xx but 401 and 429, or an envelope with error codes) ends the batch path; refused
        credentials, 429, 5xx and unclear answers are raised, as for any call."""
        with translated(self.sink):
            response = self._api.get(self.account.url("images", "v1", "batch_token"))
        status, codes = response.status_code, error_codes(response)
        secret = self.account.token
        if status in (401, 429) or status >= 500:
            raise api_error(status, reason(response), sink=self.sink, token=secret, headers=response.headers,
                            codes=codes)
        if status >= 400:
            self._give_up(f"the batch token call answered HTTP {status}: {hide(reason(response), secret)}")
            return None
        data = envelope(response)
        if data.get("success") is False and codes:
            refused = api_error(400, reason(response), sink=self.sink, token=secret, codes=codes)
            if isinstance(refused, DestinationRefused):
                raise refused
            self._give_up(f"the batch token call was refused: {refused.reason}")
            return None
        result = answer(response, sink=self.sink, token=secret)
        value = result.get("token")
        if not isinstance(value, str) or not value:
            raise Unclear(f"HTTP {status}: the batch token call answered without a token", sink=self.sink,
                          status=status)
        refresh_in, life = token_times(result.get("expiresAt"), time.time())
        now = time.monotonic()
        fresh = BatchToken(value, now + refresh_in, now + life, Pacer(self.rps, burst=BATCH_TOKEN_BURST))
        old = self._current
        self._pacers = {fresh.header: fresh.pacer, **({old.header: old.pacer} if old is not None else {})}
        self._current = fresh
        self.fetched += 1
        return fresh
