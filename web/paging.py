"""Keyset paging: positions, pages, and the request's `limit` and `cursor`.

A cursor is an opaque, signed token naming the last row of a page (its sort
timestamp and id) and the list it belongs to, so a client can neither forge
a position nor replay one list's cursor on another.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from flask import abort, request
from itsdangerous import BadSignature, URLSafeSerializer

T = TypeVar("T")


@dataclass(frozen=True)
class Position:
    """Where a page ended: the sort timestamp (None when sorting on id alone) and the id."""

    at: datetime | None
    id: int


@dataclass(frozen=True)
class Page(Generic[T]):
    items: tuple[T, ...]
    next: Position | None


class BadCursorError(ValueError):
    """The cursor was not made by us for this list."""


def take_page(rows: Sequence[T], limit: int, position: Callable[[T], Position]) -> Page[T]:
    """The first `limit` rows of `limit + 1` fetched, and where the next page starts."""
    items = tuple(rows[:limit])
    more = len(rows) > limit and bool(items)
    return Page(items, position(items[-1]) if more else None)


def within_budget(
    page: Page[T], budget: int, size: Callable[[T], int], position: Callable[[T], Position]
) -> Page[T]:
    """The page's leading items whose sizes add up to at most `budget` (at
    least one, whatever its size); when some are left out, the next page
    starts after the last one kept, so keyset paging goes on from there."""
    spent = 0
    for count, item in enumerate(page.items):
        spent += size(item)
        if spent > budget and count:
            return Page(page.items[:count], position(page.items[count - 1]))
    return page


class CursorCodec:
    """Signs positions into opaque cursors and checks them on the way back."""

    def __init__(self, secret_key: str) -> None:
        self._secret_key = secret_key

    def encode(self, kind: str, scope: int, position: Position) -> str:
        at = position.at.isoformat() if position.at else None
        return str(self._serializer(kind).dumps([scope, at, position.id]))

    def decode(self, kind: str, scope: int, cursor: str) -> Position:
        try:
            payload = self._serializer(kind).loads(cursor)
        except BadSignature as exc:
            raise BadCursorError(
                "invalid cursor: pass the `next` value of a previous page"
            ) from exc
        match payload:
            case [int(found), str(at), int(row_id)] if found == scope:
                return Position(_parse_time(at), row_id)
            case [int(found), None, int(row_id)] if found == scope:
                return Position(None, row_id)
        raise BadCursorError("invalid cursor: it belongs to another list")

    def _serializer(self, kind: str) -> URLSafeSerializer:
        return URLSafeSerializer(self._secret_key, salt=f"mailbridge.cursor.{kind}")


def _parse_time(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise BadCursorError("invalid cursor: bad timestamp") from exc
    if at.tzinfo is None:
        raise BadCursorError("invalid cursor: bad timestamp")
    return at


def read_limit(default: int, maximum: int) -> int:
    """The request's `?limit=`, or 400 with the allowed range."""
    raw = request.args.get("limit")
    if raw is None:
        return default
    # str.isdigit() takes "²" and "٣", which int() then refuses: ASCII only,
    # and short, so that int() never sees thousands of digits.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6) or not 1 <= int(raw) <= maximum:
        abort(400, f"limit must be a whole number from 1 to {maximum}, got {raw!r}")
    return int(raw)


def read_cursor(codec: CursorCodec, kind: str, scope: int) -> Position | None:
    """The request's `?cursor=` decoded, or 400 when it is not one of ours."""
    raw = request.args.get("cursor")
    if not raw:
        return None
    try:
        return codec.decode(kind, scope, raw)
    except BadCursorError as exc:
        abort(400, str(exc))


def write_cursor(codec: CursorCodec, kind: str, scope: int, page: Page[T]) -> str | None:
    return codec.encode(kind, scope, page.next) if page.next else None
