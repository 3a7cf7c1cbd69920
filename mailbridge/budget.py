"""The budget of bytes in flight: mail received and not yet answered, across
every SMTP and LMTP session of a server.

Each message's DATA claims its bytes as they arrive and gives them back once
it is answered. While the budget is full, new transactions are turned away
with a temporary failure (RFC 3463 4.3.1, "mail system full") instead of
the server taking on more than its memory and workers can hold: `452 4.3.1`
at MAIL (also when the client's SIZE hint does not fit) and RCPT, `451 4.3.1`
at the end of a DATA that overran it. Only the event loop touches it.
"""

from __future__ import annotations

# Claims grow by this much at a time, so that a message's lines are not
# counted against the budget one by one.
CLAIM_STEP = 64 * 1024


class InFlightBudget:
    """At most `limit` bytes claimed at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def has_room(self, size_hint: int = 0) -> bool:
        """Whether a new transaction, of `size_hint` bytes if known, may start."""
        return self.used < self.limit and self.used + size_hint <= self.limit

    def claim(self) -> Claim:
        return Claim(self)

    def _take(self, amount: int) -> bool:
        if self.used + amount > self.limit:
            return False
        self.used += amount
        return True

    def _give_back(self, amount: int) -> None:
        self.used -= amount


class Claim:
    """One message's share of the budget."""

    def __init__(self, budget: InFlightBudget) -> None:
        self.budget = budget
        self.amount = 0

    def cover(self, size: int) -> bool:
        """Make the claim cover `size` bytes; False when the budget cannot."""
        if size <= self.amount:
            return True
        step = max(CLAIM_STEP, size - self.amount)
        wanted = min(step, max(size - self.amount, self.budget.limit - self.budget.used))
        if not self.budget._take(wanted):
            return False
        self.amount += wanted
        return size <= self.amount

    def release(self) -> None:
        self.budget._give_back(self.amount)
        self.amount = 0


def size_hint(mail_options: list[str]) -> int:
    """The SIZE= parameter of MAIL FROM (RFC 1870), 0 when absent.

    aiosmtpd has already checked that it is a number within the size limit.
    """
    for option in mail_options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isdigit():
            return int(value)
    return 0
