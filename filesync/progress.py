"""Progress on an operator's terminal for `filesync run` (rich), fed by the pipeline's callbacks."""

from __future__ import annotations

import threading
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from filesync.report import human_bytes


class ProgressDisplay:
    def __init__(self) -> None:
        self._progress = Progress(
            TextColumn("[bold]filesync[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("files"),
            TextColumn("{task.fields[sent]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._task = self._progress.add_task("run", total=None, sent="0 B")
        self._bytes = 0
        self._lock = threading.Lock()

    def set_total(self, total: int) -> None:
        self._progress.update(self._task, total=total)

    def file_done(self) -> None:
        self._progress.advance(self._task)

    def add_bytes(self, n: int) -> None:
        with self._lock:
            self._bytes += n
            sent = human_bytes(self._bytes)
        self._progress.update(self._task, sent=sent)

    def __enter__(self) -> ProgressDisplay:
        self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._progress.stop()

