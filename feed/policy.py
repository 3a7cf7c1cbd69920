"""Sender policies of a binding: who may start or join threads through it."""

from __future__ import annotations

from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email


class PolicyError(ValueError):
    """The policy text is not one we know."""


@dataclass(frozen=True)
class SenderPolicy:
    """`members` (group members only), `anyone`, or `domain:example.com`."""

    kind: str
    domain: str = ""

    def __str__(self) -> str:
        return f"domain:{self.domain}" if self.kind == "domain" else self.kind

    @property
    def admits_anyone(self) -> bool:
        """Whether `refusal` is always None (no need to ask anything)."""
        return self.kind == "anyone"

    @property
    def needs_membership(self) -> bool:
        """Whether `refusal` depends on `is_member` (saves a query when not)."""
        return self.kind != "anyone"

    def refusal(self, sender: str, *, is_member: bool) -> str | None:
        """Why `sender` may not post, or None when it may."""
        if self.kind == "anyone":
            return None
        if self.kind == "members":
            return None if is_member else f"{sender or 'the sender'} is not a member of the group"
        if is_member or sender.rpartition("@")[2] == self.domain:
            return None
        return f"only members and senders from {self.domain} may post to this address"


def parse_policy(text: str) -> SenderPolicy:
    value = text.strip().lower()
    if value in {"members", "anyone"}:
        return SenderPolicy(value)
    if value.startswith("domain:"):
        domain = value.removeprefix("domain:")
        try:
            validate_email(f"x@{domain}", check_deliverability=False)
        except EmailNotValidError as exc:
            raise PolicyError(f"invalid domain in sender policy {text!r}: {exc}") from exc
        return SenderPolicy("domain", domain)
    raise PolicyError(f"unknown sender policy {text!r}: use members, anyone or domain:DOMAIN")
