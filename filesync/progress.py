"""Progress on an operator's terminal for `filesync run` (rich), fed by the pipeline's callbacks."""

from __future__ import annotations

import threading
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from filesync.model import RunSummary
from filesync.observer import Observer
from filesync.report import human_bytes


class ProgressDisplay(Observer):
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

    def run_started(self, summary: RunSummary) -> None:
        self._progress.update(self._task, total=summary.total_files)

    def file_finished(self, file_id: str, outcome: str) -> None:
        self._progress.advance(self._task)

    def transfer_progress(self, file_id: str, sink: str, nbytes: int) -> None:
        with self._lock:
            self._bytes += nbytes
            sent = human_bytes(self._bytes)
        self._progress.update(self._task, sent=sent)

    def __enter__(self) -> ProgressDisplay:
        self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._progress.stop()

