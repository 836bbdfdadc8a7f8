"""What the two Cloudflare sinks share: the account settings, one paced session, and the API envelope.

Cloudflare counts every API call of an account against one budget (1,200 requests per five minutes,
then a five-minute block), so Images and Stream transfers in one process share one pacer: a 429 seen
by any of them pauses all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests

from filesync.errors import DestinationRefused, ErrorClass, ServerError, SinkError
from filesync.http import error_for_status, make_session, pacer
from filesync.settings import Setting, http_url, positive_float, setting, settings_of

GROUP = "Sink: Cloudflare (Images, Stream)"
DEFAULT_API_BASE = "https://api.cloudflare.com/client/v4"
PACER_NAME = "cloudflare"

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


def api_error(
    status: int,
    text: str,
    *,
    sink: str,
    token: str,
    headers: Mapping[str, str] | None = None,
    codes: list[int] | None = None,
) -> SinkError:
    """An HTTP failure as our error. Refused credentials and a full account stop the destination for the
    run (DestinationRefused) instead of failing file after file; the token never shows in the text."""
    if token:
        text = text.replace(token, "<hidden>")
    if 400 <= status < 500:
        over = [QUOTA_ERROR_CODES[c] for c in codes or () if c in QUOTA_ERROR_CODES]
        if over:  # before the 401/403 and 429 rules: Stream answers its quota with 429 or 413
            return DestinationRefused(f"the Cloudflare {over[0]} account is over its quota: {text}", sink=sink,
                                      status=status, error_class=ErrorClass.QUOTA, setting="CLOUDFLARE_ACCOUNT_ID")
        if status in (401, 403) or AUTH_ERROR_CODES.intersection(codes or ()):
            return DestinationRefused(f"Cloudflare refused the credentials: {text}", sink=sink, status=status,
                                      error_class=ErrorClass.AUTH, setting="CLOUDFLARE_API_TOKEN")
    return error_for_status(status, text, sink=sink, headers=headers)


def raise_for_envelope(response: requests.Response, *, sink: str, token: str) -> dict[str, Any]:
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


def answer(response: requests.Response, *, sink: str, token: str) -> dict[str, Any]:
    """The `result` of a call whose answer we need: a complete success envelope, or an error (Unclear
    when a 2xx body is truncated, not JSON, or has no result)."""
    data = raise_for_envelope(response, sink=sink, token=token)
    result = data.get("result")
    if data.get("success") is not True or not isinstance(result, dict):
        text = " ".join(response.text.split())[:100]
        text = text.replace(token, "<hidden>") if token else text
        raise Unclear(f"HTTP {response.status_code} without a complete Cloudflare answer: {text!r}", sink=sink,
                      status=response.status_code)
    return result
