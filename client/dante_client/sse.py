"""A small parser for ``text/event-stream`` (the WHATWG rules this gateway needs)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass


@dataclass
class Event:
    event: str = "message"
    data: str | None = None
    id: str | None = None
    comment: bool = False  # a keep-alive (": …") with nothing else


class _Builder:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.event = "message"
        self.data: list[str] = []
        self.id: str | None = None
        self.comment = False

    def feed(self, line: str) -> Event | None:
        line = line.rstrip("\r")
        if line == "":
            if self.data or self.event != "message" or self.id is not None:
                ev = Event(self.event, "\n".join(self.data), self.id)
            elif self.comment:
                ev = Event(comment=True)
            else:
                ev = None
            self.reset()
            return ev
        if line.startswith(":"):
            self.comment = True
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self.data.append(value)
        elif name == "event":
            self.event = value
        elif name == "id":
            self.id = value
        return None


def parse(lines: Iterable[str]) -> Iterator[Event]:
    builder = _Builder()
    for line in lines:
        if (ev := builder.feed(line)) is not None:
            yield ev


async def aparse(lines: AsyncIterator[str]) -> AsyncIterator[Event]:
    builder = _Builder()
    async for line in lines:
        if (ev := builder.feed(line)) is not None:
            yield ev
