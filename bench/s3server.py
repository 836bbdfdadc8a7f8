"""The benchmarks' S3 server: moto's WSGI app behind waitress, in a process of its own.

`python -m bench.s3server --port N [--threads 32] [--latency-ms 0]`. waitress keeps HTTP/1.1 connections
alive, as Spaces and S3 do; moto's own server (werkzeug) closes each one, so every request would pay a new
TCP connection and the figures would measure that. A latency, when given, is added before each answer.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def with_latency(app: WSGIApp, seconds: float) -> WSGIApp:
    def delayed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        time.sleep(seconds)
        return app(environ, start_response)

    return delayed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    import waitress
    from moto.server import DomainDispatcherApplication, create_backend_app  # type: ignore[attr-defined]

    logging.getLogger("waitress").setLevel(logging.ERROR)
    app: WSGIApp = DomainDispatcherApplication(create_backend_app)
    if args.latency_ms:
        app = with_latency(app, args.latency_ms / 1000)
    waitress.serve(app, host="127.0.0.1", port=args.port, threads=args.threads, ident=None,
                   connection_limit=1000, channel_timeout=300, max_request_body_size=8 * 1024**3,
                   _quiet=True)


if __name__ == "__main__":
    main()
