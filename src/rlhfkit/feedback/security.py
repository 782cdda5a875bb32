"""Tokens, their hashes, CSRF tokens and the per-annotator left/right layout.

Login and session tokens are 256-bit random strings. Because they carry that much entropy, one round of
SHA-256 is enough to store them safely (a slow password hash only helps against guessable secrets),
and a hash can be looked up with an index. CSRF tokens are an HMAC of the session token under the
project secret: only a page served to that session can know one, and nothing extra is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_BYTES = 32


def new_token() -> str:
    """A fresh URL-safe random token (256 bits)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token, as stored in the database."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _hmac(secret: str, message: str) -> str:
    return hmac.new(secret.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()


def csrf_token(secret: str, session_token: str) -> str:
    """The CSRF token that forms of ``session_token``'s pages must send back."""
    return _hmac(secret, "csrf:" + session_token)


def csrf_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison; a missing token never matches."""
    return bool(given) and hmac.compare_digest(expected.encode("utf-8"), str(given).encode("utf-8"))


def first_on_left(secret: str, annotator_id: int, item_id: int) -> bool:
    """Whether ``annotator_id`` sees the item's first candidate on the left.

    Random-looking across annotators and items (so no position bias piles up on one candidate or one
    policy), but stable for a given pair, so a reload or an undo shows the same layout again.
    """
    return int(_hmac(secret, f"layout:{annotator_id}:{item_id}")[:2], 16) % 2 == 0
