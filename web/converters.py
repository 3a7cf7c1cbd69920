"""URL converters: a row id in a path is a small positive whole number, or no route.

Flask's `int` takes any run of digits, Unicode digits included, and a number
past the database's integer range then fails inside the driver (SQLite's
OverflowError, a 500). Ids are `Integer` columns (32-bit on PostgreSQL), so
anything outside 1..2**31-1 cannot name a row: it is a 404, like a missing one.
"""

from __future__ import annotations

from werkzeug.routing import IntegerConverter, Map

MAX_ROW_ID = 2**31 - 1


class RowIdConverter(IntegerConverter):
    """`<id:name>`: ASCII digits, 1 to MAX_ROW_ID; anything else matches no route."""

    regex = r"[0-9]{1,10}"

    def __init__(self, map: Map) -> None:
        super().__init__(map, min=1, max=MAX_ROW_ID)
