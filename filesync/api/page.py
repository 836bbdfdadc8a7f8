"""The status page: three static files shipped in the package, served as they are.

No build step and nothing from a CDN: the page works in a closed network. It holds no data; its script
reads the JSON API, so the page follows the API's token rules without rules of its own. The
Content-Security-Policy allows scripts, styles and requests only from the daemon itself.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from filesync.api.routing import ApiError, Request, Response

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@cache
def _asset(name: str) -> bytes:
    return files("filesync.api").joinpath("static", name).read_bytes()


def _serve(name: str) -> Response:
    if name not in ASSETS:
        raise ApiError(404, f"no such file: {name}")
    return Response(200, _asset(name), ASSETS[name], HEADERS)


def index(request: Request) -> Response:
    return _serve("index.html")


def asset(request: Request) -> Response:
    return _serve(request.params["name"])
