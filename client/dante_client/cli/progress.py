"""A rich progress bar for one transfer, on a terminal only (a log file gets one line)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from dante_client.cli.common import err, size
from dante_client.transfer import Progress as ProgressFn


@contextmanager
def transfer(label: str, total: int) -> Iterator[ProgressFn]:
    if not err.is_terminal:
        yield lambda done, total: None
        err.print(f"{label}: {size(total)}")
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
    )
    with bar:
        task = bar.add_task(label, total=total)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
