"""Errors the feed services raise; each message is fit to show a person."""

from __future__ import annotations


class FeedError(Exception):
    """Base of every error a feed service raises on bad input."""


class NotFoundError(FeedError):
    pass


class AlreadyExistsError(FeedError):
    pass


class InvalidInputError(FeedError):
    pass
