"""Assemble a configured filesync: settings validated, the ledger, the source and every routed sink.

Everything is validated here, before any work, so a bad setting stops the program with its name.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from filesync import logs, schedule
from filesync import sinks as sink_registry
from filesync import sources as source_registry
from filesync.ledger import Database, Ledger, PostgresLedger, embedded_url
from filesync.routing import Routes
from filesync.settings import Config, Environment, Setting, registered
from filesync.sinks import Sink, SinkContext
from filesync.sources import Source, SourceContext

# Imported for their settings: they register them into the settings registry when imported.
_FEATURES = (logs, schedule)


def all_settings() -> tuple[Setting, ...]:
    """Every declared setting: core, logs, daemon schedule (registered when their modules were imported
    above) and those of every installed source and sink (found by entry point), once each."""
    return registered()


@dataclass
class App:
    config: Config
    ledger: Ledger
    source: Source
    routes: Routes
    sinks: dict[str, Sink] = field(default_factory=dict)

    @classmethod
    def build(cls, env: Environment | None = None) -> App:
        env = env or Environment()
        config = Config.load(env)
        routes = Routes.parse(config.routes)
        context = SinkContext(http_timeout=config.http_timeout, concurrency=config.concurrency)
        source_cls = source_registry.load(config.source)
        source_values = env.load(source_cls.Settings)
        sink_classes = {name: sink_registry.load(name) for name in routes.all_sinks()}
        sink_values = {name: env.load(cls_.Settings) for name, cls_ in sink_classes.items()}
        # Everything is valid: only now build clients and connect.
        source = source_cls.from_settings(
            source_values, SourceContext(http_timeout=config.http_timeout, concurrency=config.concurrency))
        built = {name: cls_.from_settings(sink_values[name], context) for name, cls_ in sink_classes.items()}
        url = config.database_url or embedded_url(config.home)
        db = Database(url, max_size=config.concurrency + 4)
        ledger: Ledger = PostgresLedger(db, config.schema, config.app)
        return cls(config=config, ledger=ledger, source=source, routes=routes, sinks=built)

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
