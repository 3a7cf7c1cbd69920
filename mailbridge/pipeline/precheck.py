"""The sender pre-check: may any route take this message from its sender?

A read-only look after parsing and before extraction, the costly stage, so
that a stranger's mail to members-only addresses is refused having cost a
parse and two or three queries whatever its shape. The write transaction
decides again and records the outcome; this look only saves work.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from feed.db import Database
from mailbridge.message import ParsedMessage
from mailbridge.pipeline.authorize import authorize_sender
from mailbridge.pipeline.route import route_messages
from mailbridge.pipeline.types import Reject

log = logging.getLogger(__name__)

# Below this size extracting a message costs about what the check does (a
# read transaction and 2-4 statements: +0.3-0.5 ms a message measured with
# bench/pipeline.py when every message was checked); poison is large.
PRECHECK_MIN_BYTES = 16 * 1024


def sender_may_post(db: Database, rcpts: Sequence[str], message: ParsedMessage) -> bool:
    """False only when the envelope reaches no group, or every route's
    policies refuse the sender; True when unsure (the check failed)."""
    try:
        with db.reader() as session:
            conn = session.connection()
            routes = route_messages(conn, [rcpts])[0]
            if routes is None:
                return True
            for route in routes:
                if any(policy.admits_anyone for policy in route.policies):
                    return True  # no query needed
                try:
                    authorize_sender(conn, message, route)
                except Reject:
                    continue
                return True
            return False
    except Exception:
        log.exception("the sender pre-check failed; extracting the message anyway")
        return True
