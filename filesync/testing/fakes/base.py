"""A base for local fakes of HTTP services: a real server on 127.0.0.1, a request log, scripted faults.

Each fake is an ASGI app (FastAPI) served by uvicorn in a background thread on a free port. Faults
are injected on the wire by a middleware, never by patching a client:

    with FakeBunny() as fake:
        fake.fail_next(503, times=2)                # next two requests answer 503
        fake.fail_next(429, headers={"Retry-After": "1"})
        fake.slow_next(3.0)                          # next request answers after 3 s
        fake.reset_next()                            # next connection is cut mid-response
        fake.hold_response_next(10, method="POST")   # handled for real, answered 10 s later
        fake.chaos(seed=1, p_5xx=0.1, p_429=0.02)    # random faults from now on
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Fault:
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0
    delay_response: float = 0.0  # handled normally, but the answer is held back (crash-after-commit tests)
    reset: bool = False
    times: int = 1
    method: str | None = None
    path_contains: str | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method:
            return False
        return not (self.path_contains and self.path_contains not in path)


@dataclass
class Chaos:
    rng: random.Random
    p_5xx: float = 0.0
    p_429: float = 0.0
    p_reset: float = 0.0
    p_slow: float = 0.0
    slow_seconds: float = 2.0
    retry_after: str = "1"
    statuses: tuple[int, ...] = (500, 502, 503, 504, 524)

    def draw(self) -> Fault | None:
        r = self.rng.random()
        edge = self.p_5xx
        if r < edge:
            return Fault(status=self.rng.choice(self.statuses), body=b'{"success":false}')
        edge += self.p_429
        if r < edge:
            return Fault(status=429, headers={"Retry-After": self.retry_after})
        edge += self.p_reset
        if r < edge:
            return Fault(reset=True)
        edge += self.p_slow
        if r < edge:
            return Fault(delay=self.slow_seconds)
        return None


@dataclass
class LoggedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    status: int | None = None
    fault: str | None = None


class FaultMiddleware:
    """Consults the fake's fault script before the real app sees a request."""

    def __init__(self, app: ASGIApp, fake: FakeService) -> None:
        self.app = app
        self.fake = fake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        path = scope["path"]
        entry = LoggedRequest(
            method=method,
            path=path,
            query=scope.get("query_string", b"").decode(),
            headers={k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]},
        )
        self.fake.log_request(entry)
        fault = self.fake.take_fault(method, path)
        if fault is not None and fault.delay:
            entry.fault = f"slow {fault.delay}s"
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.reset:
            entry.fault = "reset"
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"1000")]})
            await send({"type": "http.response.body", "body": b"partial", "more_body": True})
            raise ConnectionResetError("fault injected: connection cut")
        if fault is not None and fault.status is not None:
            entry.fault = f"status {fault.status}"
            entry.status = fault.status
            await self._drain(receive)
            body = fault.body or self.fake.fault_body(fault.status)
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            headers += [(k.lower().encode(), v.encode()) for k, v in fault.headers.items()]
            await send({"type": "http.response.start", "status": fault.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return

        hold = fault.delay_response if fault is not None else 0.0
        if hold:
            entry.fault = f"answer held {hold}s"

        async def send_logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry.status = message["status"]
                if hold:
                    await asyncio.sleep(hold)
            await send(message)

        await self.app(scope, receive, send_logged)

    @staticmethod
    async def _drain(receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                return


class FakeService:
    """Start with `with Fake() as fake:`; `fake.url` is its base URL."""

    name = "fake"

    def __init__(self) -> None:
        self._faults: deque[Fault] = deque()
        self._chaos: Chaos | None = None
        self._lock = threading.Lock()
        self.requests: list[LoggedRequest] = []
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # --- to override -------------------------------------------------------------------------
    def build_app(self) -> ASGIApp:
        raise NotImplementedError

    def fault_body(self, status: int) -> bytes:
        """The body an injected error status carries; fakes answer in their service's format."""
        return json.dumps({"error": f"injected {status}"}).encode()

    # --- fault script ------------------------------------------------------------------------
    def fail_next(self, status: int, *, headers: dict[str, str] | None = None, body: bytes = b"",
                  times: int = 1, method: str | None = None, path_contains: str | None = None) -> None:
        self._add(Fault(status=status, headers=headers or {}, body=body, times=times, method=method,
                        path_contains=path_contains))

    def slow_next(self, seconds: float, *, times: int = 1, method: str | None = None,
                  path_contains: str | None = None) -> None:
        self._add(Fault(delay=seconds, times=times, method=method, path_contains=path_contains))

    def hold_response_next(self, seconds: float, *, times: int = 1, method: str | None = None,
                           path_contains: str | None = None) -> None:
        """Handle the request for real, then wait `seconds` before answering."""
        self._add(Fault(delay_response=seconds, times=times, method=method, path_contains=path_contains))

    def reset_next(self, *, times: int = 1, method: str | None = None, path_contains: str | None = None) -> None:
        self._add(Fault(reset=True, times=times, method=method, path_contains=path_contains))

    def chaos(self, *, seed: int = 0, p_5xx: float = 0.0, p_429: float = 0.0, p_reset: float = 0.0,
              p_slow: float = 0.0, slow_seconds: float = 2.0, retry_after: str = "1") -> None:
        self._chaos = Chaos(random.Random(seed), p_5xx, p_429, p_reset, p_slow, slow_seconds, retry_after)

    def calm(self) -> None:
        """Drop every scripted and random fault."""
        with self._lock:
            self._faults.clear()
            self._chaos = None

    def _add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
            return self._chaos.draw() if self._chaos else None

    def log_request(self, entry: LoggedRequest) -> None:
        with self._lock:
            self.requests.append(entry)

    def requests_to(self, method: str, path_contains: str = "") -> list[LoggedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == method and path_contains in r.path]

    # --- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeService:
        logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
        self.port = free_port()
        config = uvicorn.Config(
            FaultMiddleware(self.build_app(), self), host="127.0.0.1", port=self.port,
            log_level="critical", access_log=False, lifespan="off", timeout_keep_alive=30,
            http="h11",  # httptools would reject Bunny's DESCRIBE method
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"{self.name}-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"{self.name} fake did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
