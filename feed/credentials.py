"""Secrets kept at rest, such as IMAP passwords: sealed with Fernet.

The Fernet key is derived from the instance's secret key with HKDF
(RFC 5869), under a label of its own, so the secret key itself never
encrypts anything and another use can derive another key. A sealed value
is authenticated: a wrong key or a tampered value is an error, never
garbage.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from feed.errors import InvalidInputError

_LABEL = b"mailbridge credentials v1"


class SealedValueError(InvalidInputError):
    """A sealed value that the current secret key cannot open."""


def _fernet(secret_key: str) -> Fernet:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_LABEL).derive(
        secret_key.encode("utf-8")
    )
    return Fernet(base64.urlsafe_b64encode(derived))


def seal(secret_key: str, plaintext: str) -> str:
    return _fernet(secret_key).encrypt(plaintext.encode("utf-8")).decode("ascii")


def unseal(secret_key: str, sealed: str) -> str:
    try:
        return _fernet(secret_key).decrypt(sealed.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError) as exc:
        raise SealedValueError(
            "a stored password cannot be decrypted with this secret key "
            "(was MAILBRIDGE_SECRET_KEY changed?): set the password again"
        ) from exc
