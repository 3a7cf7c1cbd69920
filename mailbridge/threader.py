"""Pure threading helpers: subjects, reference chains, Thread-Index and JWZ.

Nothing here does I/O or touches the database. The DB-backed threading stage
threads mail incrementally with these building blocks; `thread_messages` is
the batch form of Jamie Zawinski's algorithm (https://www.jwz.org/doc/threading.html)
used for imports and as the reference the incremental stage is tested against.

Message-IDs are compared exactly as given; `references_chain` normalises them
the way `ParsedMessage` does (angle brackets and surrounding white space off).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

# Reply and forward prefixes, as clients write them in their own language:
# Re/AW (de)/SV (sv, da, no)/VS (fi, no)/Antw (nl)/Réf (fr)/RIF, R (it)/Odp (pl)/
# Ynt (tr)/RES (pt-BR)/Vá (hu)/Atb (lv)/Ats (lt)/Отв, Ответ (ru)/ΑΠ, ΣΧΕΤ (el)/
# 回复, 回覆, 答复 (zh); forwards Fwd/FW/TR (fr)/WG (de)/RV (es)/Enc (pt)/
# Doorst (nl)/VL (fi)/PD (pl)/转发 (zh). A counter may follow: re[2], Re^2, Re(2).
# French typography puts a space before the colon; CJK clients use a full-width one.
_PREFIX = re.compile(
    r"""
    (?:
        (?:re|aw|sv|vs|antw|rif|r|odp|ynt|res|vá|atb|ats|отв|ответ|απ|σχετ
          |fwd|fw|tr|wg|rv|enc|doorst|vl|pd|回复|回覆|答复|转发)
        (?:\[\d+\]|\^\d+|\(\d+\))?
        \s*[:：]
      | r[ée]f(?:\.\s*[:：]?|\s*[:：])
    )
    """,
    re.IGNORECASE | re.VERBOSE,
)
# A mailing-list tag such as "[fedora-devel]"; lists add it before or after "Re:".
_LIST_TAG = re.compile(r"\[[^\[\]]+\]")
# Pine and other old clients mark forwards with a trailing "(fwd)".
_FWD_SUFFIX = re.compile(r"\s*\(fwd\)\s*$", re.IGNORECASE)
_SPACE = re.compile(r"\s+")

# Outlook's Thread-Index ([MS-OXOMSG] §2.2.1.3, PidTagConversationIndex) is
# base64 of a 22-byte header and one 5-byte block per reply level. The header
# is one reserved byte (0x01) and the top 40 bits of the FILETIME the
# conversation started (together the 6-byte "date"), then a 16-byte GUID made
# for the conversation: those 22 bytes are the same on every message of the
# conversation. Each reply or forward appends 5 bytes (a delta-code bit, a
# 31-bit time delta from the header date and 8 random bits), so the number of
# blocks is the message's depth in the conversation.
_THREAD_INDEX_HEADER = 22
_THREAD_INDEX_LEVEL = 5


def _strip_prefixes(subject: str) -> tuple[str, bool]:
    """The subject without leading prefixes and list tags, and whether a prefix went."""
    rest = _SPACE.sub(" ", subject).strip()
    replied = False
    while True:
        match = _PREFIX.match(rest) or _LIST_TAG.match(rest)
        if match is None or match.end() == 0:
            break
        replied = replied or match.re is _PREFIX
        rest = rest[match.end() :].lstrip()
    without_suffix = _FWD_SUFFIX.sub("", rest)
    return without_suffix, replied or without_suffix != rest


def normalize_subject(subject: str) -> str:
    """The subject reduced for comparison: no Re:/Fwd:/list tags, case-folded.

    Expects a decoded subject (RFC 2047 encoded words already decoded).
    """
    return _strip_prefixes(subject)[0].casefold()


def is_reply_subject(subject: str) -> bool:
    """Whether the subject carries a reply or forward prefix (list tags don't count)."""
    return _strip_prefixes(subject)[1]


def _clean_id(value: str) -> str:
    """A Message-ID without surrounding white space and angle brackets."""
    value = value.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1].strip()
    return value


def references_chain(
    in_reply_to: Sequence[str], references: Sequence[str], *, message_id: str = ""
) -> list[str]:
    """The ancestor ids of a message, oldest first and parent last.

    RFC 5322 §3.6.4: a reply's References is its parent's References plus
    the parent's id, and In-Reply-To names the parent. References is the chain;
    In-Reply-To's first id is the parent when References is missing or does not
    end with one of its ids. If that id sits earlier in References, the chain is
    cut after it rather than reordered, so no ancestry is invented. Ids equal to
    `message_id` (a message citing itself) and repeats are dropped.
    """
    own = _clean_id(message_id)
    chain: list[str] = []
    for raw in references:
        ref = _clean_id(raw)
        if ref and ref != own and ref not in chain:
            chain.append(ref)
    parents = [pid for pid in map(_clean_id, in_reply_to) if pid and pid != own]
    if not parents or (chain and chain[-1] in parents):
        return chain
    parent = parents[0]
    if parent in chain:
        return chain[: chain.index(parent) + 1]
    return [*chain, parent]


def parse_thread_index(value: str) -> tuple[bytes, int] | None:
    """Outlook's Thread-Index as (22-byte conversation key, reply depth), or None.

    None when the value is not base64 or its length is not 22 + 5·n bytes.
    """
    text = "".join(value.split())  # a long value may be folded over lines
    text += "=" * (-len(text) % 4)  # some clients drop the padding
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    levels, extra = divmod(len(raw) - _THREAD_INDEX_HEADER, _THREAD_INDEX_LEVEL)
    if levels < 0 or extra:
        return None
    return raw[:_THREAD_INDEX_HEADER], levels


@dataclass(frozen=True)
class ThreadInput:
    """One message to thread: its id, decoded subject and ancestor ids (oldest first)."""

    message_id: str
    subject: str
    references: tuple[str, ...]


@dataclass(frozen=True)
class ThreadNode:
    """A node of a thread tree; `message_id` is None for a missing (dummy) message."""

    message_id: str | None
    children: list[ThreadNode] = field(default_factory=list)

    def walk(self) -> Iterator[ThreadNode]:
        """This node and all its descendants, depth first, parents before children."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def message_ids(self) -> list[str]:
        """The ids of the real (non-dummy) messages in this subtree."""
        return [node.message_id for node in self.walk() if node.message_id is not None]


class _Container:
    """JWZ's container: a message slot (maybe empty) linked into a forest."""

    __slots__ = ("children", "message_id", "order", "parent", "subject")

    def __init__(self, message_id: str | None, order: int) -> None:
        self.message_id = message_id
        self.subject: str | None = None  # None while the message is missing
        self.order = order  # first time the id was seen: fixes output order
        self.parent: _Container | None = None
        self.children: list[_Container] = []

    def is_ancestor_of(self, other: _Container) -> bool:
        """Whether self is `other` or above it (the links are always a forest)."""
        node: _Container | None = other
        while node is not None:
            if node is self:
                return True
            node = node.parent
        return False

    def adopt(self, child: _Container) -> None:
        """Make `child` a child of self, unlinking it from its previous parent."""
        child.detach()
        child.parent = self
        self.children.append(child)

    def detach(self) -> None:
        """Unlink self from its parent, making it a root."""
        if self.parent is not None:
            self.parent.children.remove(self)
            self.parent = None


def _link_message(table: dict[str, _Container], message: ThreadInput) -> None:
    """JWZ step 1: file one message and link its References chain."""

    def container(key: str) -> _Container:
        return table.setdefault(key, _Container(key, len(table)))

    this = container(message.message_id)
    if this.subject is not None:
        return  # a duplicate Message-ID: the same message delivered twice
    this.subject = message.subject
    prev: _Container | None = None
    for ref in dict.fromkeys(message.references):  # ordered and unique
        if ref == message.message_id:
            continue  # a message citing itself would be a loop
        current = container(ref)
        # Step 1B: trust earlier links and never make a loop.
        if prev is not None and current.parent is None and not current.is_ancestor_of(prev):
            prev.adopt(current)
        prev = current
    # Step 1C: the message's own References are definitive for its parent,
    # even against links guessed from other messages, unless it makes a loop.
    if prev is None:
        this.detach()
    elif not this.is_ancestor_of(prev):
        prev.adopt(this)


def _postorder(roots: Sequence[_Container]) -> list[_Container]:
    """Every container under `roots`, children before their parent (no recursion)."""
    ordered: list[_Container] = []
    stack = list(roots)
    while stack:
        node = stack.pop()
        ordered.append(node)
        stack.extend(node.children)
    ordered.reverse()
    return ordered


def _prune(roots: list[_Container]) -> list[_Container]:
    """JWZ step 4: drop empty containers and splice dummies' children upwards."""
    for node in _postorder(roots):
        kept: list[_Container] = []
        for child in node.children:
            if child.subject is None:
                kept.extend(child.children)  # empty leaves simply vanish
            else:
                kept.append(child)
        node.children = kept
        for child in kept:
            child.parent = node
    pruned: list[_Container] = []
    for root in roots:
        # A dummy root stays only when it really joins several siblings.
        if root.subject is not None or len(root.children) > 1:
            pruned.append(root)
        elif root.children:
            root.children[0].parent = None
            pruned.append(root.children[0])
    return pruned


def _root_subject(root: _Container) -> str:
    """The subject standing for a root: its own, or its first child's for a dummy."""
    if root.subject is not None:
        return root.subject
    return min(root.children, key=lambda c: c.order).subject or ""


def _merge_roots(that: _Container, this: _Container) -> _Container:
    """JWZ step 5C: join two roots with the same subject; returns the surviving root."""
    if that.subject is None:
        if this.subject is None:
            for child in list(this.children):
                that.adopt(child)
        else:
            that.adopt(this)
        return that
    if this.subject is None:
        this.adopt(that)
        return this
    this_reply, that_reply = is_reply_subject(this.subject), is_reply_subject(that.subject)
    if this_reply and not that_reply:
        that.adopt(this)
        return that
    if that_reply and not this_reply:
        this.adopt(that)
        return this
    joint = _Container(None, min(this.order, that.order))
    joint.adopt(that)
    joint.adopt(this)
    return joint


def _outranks(candidate: _Container, held: _Container | None) -> bool:
    """JWZ step 5B: a dummy beats a message, a subject without "Re:" beats a reply."""
    if held is None:
        return True
    if held.subject is None:
        return False
    if candidate.subject is None:
        return True
    return is_reply_subject(held.subject) and not is_reply_subject(candidate.subject)


def _group_by_subject(roots: list[_Container]) -> list[_Container]:
    """JWZ step 5: gather roots whose normalised subjects are equal."""
    table: dict[str, _Container] = {}
    for root in roots:
        key = normalize_subject(_root_subject(root))
        if key and _outranks(root, table.get(key)):
            table[key] = root
    merged = list(roots)
    for root in roots:
        if root.parent is not None or (root.subject is None and not root.children):
            continue  # already joined to another root
        key = normalize_subject(_root_subject(root))
        held = table.get(key)
        if not key or held is None or held is root:
            continue
        table[key] = survivor = _merge_roots(held, root)
        if survivor not in merged:
            merged.append(survivor)
    return [r for r in merged if r.parent is None and (r.subject is not None or r.children)]


def _to_node(root: _Container) -> ThreadNode:
    """Convert a container tree, ordering children by when their id was first seen."""
    built: dict[int, ThreadNode] = {}
    for node in _postorder([root]):
        ordered = sorted(node.children, key=lambda c: c.order)
        built[id(node)] = ThreadNode(
            node.message_id if node.subject is not None else None,
            [built[id(child)] for child in ordered],
        )
    return built[id(root)]


def thread_messages(
    messages: Iterable[ThreadInput], *, group_by_subject: bool = True
) -> list[ThreadNode]:
    """Thread messages with JWZ's algorithm; roots in the order their ids were first seen.

    An id is "seen" when it first appears in the input, as a message or as a
    reference; children are ordered the same way. A repeated Message-ID is
    ignored after its first message. With `group_by_subject`, roots whose
    normalised subjects match are joined (JWZ step 5).
    """
    table: dict[str, _Container] = {}
    for message in messages:
        _link_message(table, message)
    roots = _prune([node for node in table.values() if node.parent is None])
    if group_by_subject:
        roots = _group_by_subject(roots)
    return [_to_node(root) for root in sorted(roots, key=lambda r: r.order)]
