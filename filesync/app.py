"""Assemble a configured filesync: settings validated, the ledger, the source and every routed sink.

Everything is validated here, before any work, so a bad setting stops the program with its name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from filesync import alerts, logs, schedule, stats, transforms
from filesync import sinks as sink_registry
from filesync import sources as source_registry
from filesync.errors import ConfigError
from filesync.ledger import Database, Ledger, PostgresLedger, embedded_url
from filesync.routing import Routes
from filesync.settings import (
    CORE_SETTINGS,
    Config,
    ConfigProblems,
    Environment,
    Setting,
    problems_of,
    registered,
    setting_index,
)
from filesync.sinks import Sink, SinkContext
from filesync.sources import Source, SourceContext

# Imported for their settings: they register them into the settings registry when imported.
_FEATURES = (logs, schedule, stats, alerts, transforms)


T = TypeVar("T")


def all_settings() -> tuple[Setting, ...]:
    """Every declared setting: core, logs, daemon schedule (registered when their modules were imported
    above) and those of every installed source and sink (found by entry point), once each."""
    return registered()


@dataclass(frozen=True)
class Resolved:
    """Every setting a run needs, validated: the core, the routes, the source's and each routed sink's."""

    config: Config
    routes: Routes
    source_cls: type[Source]
    source_values: Any
    sinks: dict[str, tuple[type[Sink], Any]]
    transforms: dict[str, transforms.TransformSpec]


def resolve_settings(env: Environment) -> Resolved:
    """Validate every setting at once: core, source, each routed sink, logs and daemon.

    One ConfigProblems lists every bad variable, so an operator fixes them in one edit instead of one
    failed start per group. A group that cannot be read (an unknown source, unparsable routes) is
    reported and the groups that depend on it are skipped.
    """
    problems = _Problems()
    attempt = problems.attempt
    core = setting_index(CORE_SETTINGS)
    config = attempt(partial(Config.load, env))
    routes = attempt(lambda: Routes.parse(env.get_value(core["FILESYNC_ROUTES"])))
    source_cls = attempt(lambda: source_registry.load(env.get_value(core["FILESYNC_SOURCE"])))
    source_values = attempt(partial(env.load, source_cls.Settings)) if source_cls else None
    sinks: dict[str, tuple[type[Sink], Any]] = {}
    for name in routes.all_sinks() if routes else ():
        sink_cls = attempt(partial(sink_registry.load, name))
        if sink_cls is not None:
            sinks[name] = (sink_cls, attempt(partial(env.load, sink_cls.Settings)))
    if routes is not None:  # a kind routed to a destination that cannot take it would fail every file
        attempt(partial(routes.check_kinds, {name: cls_.capabilities.kinds for name, (cls_, _) in sinks.items()}))
    specs = attempt(partial(env.get_value, transforms.TRANSFORMS_SETTING)) or {}
    unrouted = sorted(set(specs) - set(sinks)) if routes is not None else []
    if unrouted:
        problems.lines.append(f"FILESYNC_TRANSFORMS names {', '.join(unrouted)}, which no route in "
                              "FILESYNC_ROUTES sends to")
    attempt(partial(env.resolve, logs.LOG_SETTINGS))
    attempt(partial(env.resolve, schedule.DAEMON_SETTINGS))
    problems.raise_any()
    assert config is not None and routes is not None and source_cls is not None
    return Resolved(config, routes, source_cls, source_values, sinks, specs)


class _Problems:
    """Configuration problems gathered across groups, raised together."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def attempt(self, fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except ConfigError as exc:
            self.lines.extend(problems_of(exc))
            return None

    def raise_any(self) -> None:
        if self.lines:
            raise ConfigProblems(self.lines)


@dataclass
class App:
    config: Config
    ledger: Ledger
    source: Source
    routes: Routes
    sinks: dict[str, Sink] = field(default_factory=dict)
    #: FILESYNC_TRANSFORMS; a destination it does not name gets its default (`fit` for Cloudflare Images)
    transforms: dict[str, transforms.TransformSpec] = field(default_factory=dict)

    @classmethod
    def build(cls, env: Environment | None = None) -> App:
        env = env or Environment()
        resolved = resolve_settings(env)
        config = resolved.config
        # Every value parsed: only now build clients (whose checks across settings are reported together too).
        problems = _Problems()
        source = problems.attempt(partial(
            resolved.source_cls.from_settings, resolved.source_values,
            SourceContext(http_timeout=config.http_timeout, concurrency=config.concurrency)))
        context = SinkContext(http_timeout=config.http_timeout, concurrency=config.concurrency)
        built = {name: problems.attempt(partial(cls_.from_settings, values, context))
                 for name, (cls_, values) in resolved.sinks.items()}
        if problems.lines:
            for client in (source, *built.values()):
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close()
            problems.raise_any()
        assert source is not None
        sinks = {name: sink for name, sink in built.items() if sink is not None}
        url = config.database_url or embedded_url(config.home)
        db = Database(url, max_size=config.concurrency + 4)
        ledger: Ledger = PostgresLedger(db, config.schema, config.app)
        return cls(config=config, ledger=ledger, source=source, routes=resolved.routes, sinks=sinks,
                   transforms=resolved.transforms)

    def close(self) -> None:
        for sink in self.sinks.values():
            with contextlib.suppress(Exception):
                sink.close()
        with contextlib.suppress(Exception):
            self.source.close()
        self.ledger.close()

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
