"""The one redaction: every text that leaves the process or is stored passes through `redact`.

Logs, the console, run summaries, `filesync status` and `check`, health answers and the error columns
of the ledger all call it, so a secret echoed by a destination (or a password inside a URL) is masked
in every output by the same rule. `install` is called once the settings are known.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote

MASK = "***"
MIN_SECRET = 4  # shorter values would mask ordinary words
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)(?P<pw>[^\s@/]+)(?=@)")


class Redactor:
    """Replaces every known secret value (plain and URL-encoded) and URL passwords in any value."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        variants: set[str] = set()
        for value in secrets:
            variants.update({value, unquote(value), quote(value, safe=""), quote_plus(value)})
        # Longest first, so a URL holding a password is masked whole before the password alone.
        self.secrets = sorted((v for v in variants if len(v) >= MIN_SECRET), key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self.secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return _URL_PASSWORD.sub(rf"\g<head>{MASK}", value)

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, Mapping):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(v) for v in value]
        # Anything else (exceptions, paths, objects) is rendered as text before it can leak.
        return self.text(str(value))


_active = Redactor()
_lock = threading.Lock()


def install(secrets: Iterable[str]) -> Redactor:
    """Make these the secrets every later `redact` call masks (the union with those installed before)."""
    global _active
    with _lock:
        _active = Redactor([*_active.secrets, *secrets])
        return _active


def reset() -> None:
    """Forget the installed secrets (tests, and a reconfiguration with other settings)."""
    global _active
    with _lock:
        _active = Redactor()


def active() -> Redactor:
    return _active


def redact(text: str) -> str:
    """`text` with every installed secret and URL password masked."""
    return _active.text(text)
