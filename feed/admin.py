"""Administration services: users, groups, memberships, bindings, API tokens.

They take plain values, validate them, and raise `FeedError`s with a message
fit for a CLI or an HTTP answer.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from feed.addresses import domain_of, normalize_address
from feed.bindings import Binding
from feed.errors import AlreadyExistsError, InvalidInputError, NotFoundError
from feed.groups import Group, Membership
from feed.policy import PolicyError, SenderPolicy, parse_policy
from feed.users import ApiToken, User, UserAddress

SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")


@dataclass(frozen=True)
class BindingInfo:
    address: str
    group_slug: str
    sender_policy: str


def add_user(session: Session, email: str, name: str, *, is_admin: bool = False) -> User:
    address = normalize_address(email)
    if session.scalar(select(UserAddress.id).where(UserAddress.email == address)):
        raise AlreadyExistsError(f"a user with address {address} already exists")
    if not name.strip():
        raise InvalidInputError("a user needs a name")
    user = User(email=address, name=name.strip(), is_admin=is_admin)
    user.addresses.append(UserAddress(email=address))
    session.add(user)
    session.flush()
    return user


def add_user_alias(session: Session, email: str, alias: str) -> UserAddress:
    user = get_user(session, email)
    address = normalize_address(alias)
    if session.scalar(select(UserAddress.id).where(UserAddress.email == address)):
        raise AlreadyExistsError(f"address {address} already belongs to a user")
    row = UserAddress(user_id=user.id, email=address)
    session.add(row)
    session.flush()
    return row


def get_user(session: Session, email: str) -> User:
    user = find_user_by_address(session, normalize_address(email))
    if user is None:
        raise NotFoundError(f"no user with address {email.strip()}")
    return user


# Built once: the delivery pipeline runs them for every message.
USER_BY_ADDRESS = select(User).join(UserAddress).where(UserAddress.email == bindparam("address"))
_MEMBERSHIP = (
    select(Membership.id)
    .where(Membership.group_id == bindparam("group_id"), Membership.user_id == bindparam("user_id"))
    .limit(1)
)


def find_user_by_address(session: Session, address: str) -> User | None:
    """The user who owns `address` (primary or alias), if any.

    On a Core connection, run `USER_BY_ADDRESS` with the lower-cased address
    for the same rule as a row.
    """
    return session.scalar(USER_BY_ADDRESS, {"address": address.lower()})


def add_group(session: Session, slug: str, name: str, *, private: bool = False) -> Group:
    if not SLUG_RE.match(slug):
        raise InvalidInputError(
            f"invalid group slug {slug!r}: use 1-64 lower-case letters, digits and hyphens"
        )
    if session.scalar(select(Group.id).where(Group.slug == slug)):
        raise AlreadyExistsError(f"group {slug} already exists")
    group = Group(slug=slug, name=name.strip() or slug, is_private=private)
    session.add(group)
    session.flush()
    return group


def get_group(session: Session, slug: str) -> Group:
    group = session.scalar(select(Group).where(Group.slug == slug))
    if group is None:
        raise NotFoundError(f"no group {slug!r}")
    return group


def add_member(session: Session, slug: str, email: str, *, role: str = "member") -> Membership:
    group = get_group(session, slug)
    user = get_user(session, email)
    if is_member(session, group.id, user.id):
        raise AlreadyExistsError(f"{user.email} is already a member of {slug}")
    membership = Membership(group_id=group.id, user_id=user.id, role=role)
    session.add(membership)
    session.flush()
    return membership


def is_member(db: Session | Connection, group_id: int, user_id: int) -> bool:
    params = {"group_id": group_id, "user_id": user_id}
    return db.execute(_MEMBERSHIP, params).first() is not None


def add_binding(session: Session, address: str, slug: str, senders: str) -> Binding:
    normalized = normalize_address(address)
    policy = sender_policy(senders)
    group = get_group(session, slug)
    if session.scalar(select(Binding.id).where(Binding.address == normalized)):
        raise AlreadyExistsError(f"address {normalized} is already bound")
    binding = Binding(
        address=normalized,
        domain=domain_of(normalized),
        group_id=group.id,
        sender_policy=str(policy),
    )
    session.add(binding)
    session.flush()
    return binding


def remove_binding(session: Session, address: str) -> None:
    normalized = normalize_address(address)
    binding = session.scalar(select(Binding).where(Binding.address == normalized))
    if binding is None:
        raise NotFoundError(f"address {normalized} is not bound")
    session.delete(binding)
    session.flush()


def sender_policy(senders: str) -> SenderPolicy:
    """A binding's sender policy from an admin's text, or the reason it is wrong."""
    try:
        return parse_policy(senders)
    except PolicyError as exc:
        raise InvalidInputError(str(exc)) from exc


def list_bindings(session: Session) -> list[BindingInfo]:
    rows = session.execute(
        select(Binding.address, Group.slug, Binding.sender_policy)
        .join(Group)
        .order_by(Binding.address)
    )
    return [BindingInfo(address, slug, policy) for address, slug, policy in rows]


def create_token(session: Session, email: str) -> str:
    """A new API token for the user; only its hash is kept, so show it once."""
    user = get_user(session, email)
    token = "mb_" + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_hash=hash_token(token)))
    session.flush()
    return token


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def user_for_token(session: Session, token: str) -> User | None:
    return session.scalar(
        select(User).join(ApiToken).where(ApiToken.token_hash == hash_token(token))
    )
