"""A PostgreSQL wire proxy that counts round trips, for tests that bound the ledger's database traffic.

It listens on a Unix socket of its own and forwards every byte to the real server, reading the client's
side of the protocol as it passes: each simple query ('Q') and each Sync ('S', which ends an extended
query: Parse/Bind/Execute) is one round trip, so the count is what a network in between would see, whatever
the driver, the pool or the ledger does above it.
"""

from __future__ import annotations

import socket
import struct
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: The startup-phase request codes that are followed by another startup message.
_NEGOTIATIONS = {80877103, 80877104}  # SSLRequest, GSSENCRequest
#: Client messages that each end one round trip.
_ROUND_TRIP_ENDS = {b"Q", b"S"}


def _upstream_address(url: str) -> tuple[int, str | tuple[str, int]]:
    """(address family, address) of the server a libpq URL names: its Unix socket or its TCP port."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    host = query.get("host") or parts.hostname or "/tmp"
    port = int(query.get("port") or parts.port or 5432)
    if host.startswith("/"):
        return socket.AF_UNIX, f"{host}/.s.PGSQL.{port}"
    return socket.AF_INET, (host, port)


class RoundTripCounter:
    """`with RoundTripCounter(url) as proxy:` then connect to `proxy.url`; `proxy.round_trips` counts."""

    def __init__(self, url: str) -> None:
        self._upstream = _upstream_address(url)
        self._dir = tempfile.TemporaryDirectory(prefix="pgwire-")
        self._port = 5432
        parts = urlsplit(url)
        query = {k: v for k, v in parse_qsl(parts.query) if k not in {"host", "port"}}
        query.update(host=self._dir.name, port=str(self._port), sslmode="disable")
        netloc = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        self.url = urlunsplit(parts._replace(netloc=netloc, query=urlencode(query)))
        self.round_trips = 0
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(Path(self._dir.name) / f".s.PGSQL.{self._port}"))
        self._listener.listen(64)
        self._stopping = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, name="pgwire-accept", daemon=True)

    def __enter__(self) -> RoundTripCounter:
        self._acceptor.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stopping.set()
        self._acceptor.join()
        self._listener.close()
        self._dir.cleanup()

    def _accept(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            family, address = self._upstream
            server = socket.socket(family, socket.SOCK_STREAM)
            try:
                server.connect(address)
            except OSError:  # the server is gone: the client sees its connection closed, as it would
                client.close()
                server.close()
                continue
            threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()
            threading.Thread(target=self._client_side, args=(client, server), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        """The server's answers, forwarded untouched."""
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _hang_up(source, sink)

    def _client_side(self, client: socket.socket, server: socket.socket) -> None:
        """The client's messages, forwarded whole, each read by its length; round-trip ends counted."""
        try:
            startup = True
            while True:
                if startup:  # untyped: int32 length (itself included), int32 code, body
                    head = _read(client, 8)
                    length, code = struct.unpack("!ii", head)
                    server.sendall(head + _read(client, length - 8))
                    startup = code in _NEGOTIATIONS
                    continue
                head = _read(client, 5)
                kind, length = head[:1], struct.unpack("!i", head[1:])[0]
                server.sendall(head + _read(client, length - 4))
                if kind in _ROUND_TRIP_ENDS:
                    with self._lock:
                        self.round_trips += 1
        except (OSError, EOFError):
            pass
        finally:
            _hang_up(client, server)


def _hang_up(*socks: socket.socket) -> None:
    """Both directions of a proxied connection end when either side does."""
    for sock in socks:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _read(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n > 0:
        data = sock.recv(min(n, 65536))
        if not data:
            raise EOFError
        chunks.append(data)
        n -= len(data)
    return b"".join(chunks)
