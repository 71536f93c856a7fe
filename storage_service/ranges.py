"""The one ``Range`` form objects need: a single byte range (RFC 9110 §14)."""

from __future__ import annotations

from storage_service.errors import RangeNotSatisfiable


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end_inclusive)`` for a satisfiable single range; ``None`` to send it all.

    Per RFC 9110 a server may ignore a Range it does not support or cannot parse, so malformed
    and multi-range headers get the whole object (200); a well-formed range that misses the
    object entirely is a 416.
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    if (first and not first.isdigit()) or (last and not last.isdigit()) or not (first or last):
        return None
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - n), size - 1
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(size)
    return start, min(int(last), size - 1) if last else size - 1
