"""FILESYNC_ROUTES: which sinks each MIME type goes to. The first matching pattern wins."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass

from filesync.errors import ConfigError
from filesync.kinds import kind_of
from filesync.model import Kind

_SINK = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
#: A MIME type pattern that can match something: `type/subtype`, either part `*` or RFC 6838 characters,
#: `*` also inside the subtype (`image/x-*`). Brackets and `?` are refused: no MIME type holds them.
_PATTERN = re.compile(r"^(\*|[a-z0-9][a-z0-9!#$&^_.+-]*)/(\*|[a-z0-9*][a-z0-9!#$&^_.+*-]*)$")


@dataclass(frozen=True)
class Route:
    pattern: str  # "image/*", "video/mp4", "*/*"
    sinks: tuple[str, ...]


@dataclass(frozen=True)
class Routes:
    routes: tuple[Route, ...]

    @classmethod
    def parse(cls, text: str) -> Routes:
        """`image/*=cloudflare-images,bunny;video/*=cloudflare-stream`; `image` means `image/*`."""
        routes: list[Route] = []
        for part in (p.strip() for p in text.split(";")):
            if not part:
                continue
            pattern, sep, sinks_text = part.partition("=")
            pattern = pattern.strip().lower()
            sinks = tuple(s.strip() for s in sinks_text.split(",") if s.strip())
            if not sep or not pattern or not sinks:
                raise ConfigError(f"FILESYNC_ROUTES entry {part!r} is invalid: use pattern=sink[,sink]")
            if "/" not in pattern:
                pattern = "*/*" if pattern == "*" else f"{pattern}/*"
            if not _PATTERN.match(pattern):
                raise ConfigError(f"FILESYNC_ROUTES pattern {pattern!r} cannot match any MIME type: use "
                                  "type/subtype, e.g. image/*, video/mp4, */*")
            bad = [s for s in sinks if not _SINK.match(s)]
            if bad or len(set(sinks)) != len(sinks):
                raise ConfigError(f"FILESYNC_ROUTES entry {part!r} has an invalid or repeated sink name")
            routes.append(Route(pattern, sinks))
        if not routes:
            raise ConfigError("FILESYNC_ROUTES is empty: name at least one pattern=sink")
        return cls(tuple(routes))

    def sinks_for(self, mime: str) -> list[str]:
        mime = mime.lower()
        for route in self.routes:
            if fnmatch.fnmatchcase(mime, route.pattern):
                return list(route.sinks)
        return []

    def check_kinds(self, kinds_of: Mapping[str, frozenset[Kind]]) -> None:
        """A route whose pattern names one kind (`image/...`) and a sink that takes no file of that kind
        can never succeed: a configuration error before any work, not a failure on every file."""
        for route in self.routes:
            major = route.pattern.split("/", 1)[0]
            if major == "*":
                continue
            kind = kind_of(f"{major}/x")
            for sink in route.sinks:
                accepted = kinds_of.get(sink)
                if accepted is not None and kind not in accepted:
                    takes = ", ".join(sorted(str(k) for k in accepted)) or "nothing"
                    raise ConfigError(f"FILESYNC_ROUTES sends {route.pattern} to {sink}, which takes only "
                                      f"{takes} files: route {major} files to a destination that takes them")

    def all_sinks(self) -> list[str]:
        seen: dict[str, None] = {}
        for route in self.routes:
            for sink in route.sinks:
                seen.setdefault(sink, None)
        return list(seen)
