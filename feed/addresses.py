"""Normalising the addresses that admins and mail give us."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email

from feed.errors import InvalidInputError


def normalize_address(text: str) -> str:
    """A syntactically valid address, lower-cased (we treat local parts case-blind).

    Deliverability is not checked (no DNS: MailBridge must work air-gapped).
    """
    try:
        info = validate_email(text.strip(), check_deliverability=False, globally_deliverable=False)
    except EmailNotValidError as exc:
        raise InvalidInputError(f"invalid address {text!r}: {exc}") from exc
    return info.normalized.lower()


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()
