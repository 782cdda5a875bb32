"""Who labels: annotators, their kinds and their login tokens.

A *human* annotator logs in to the web app with a token that is shown once and stored only as its
SHA-256 hash (:mod:`rlhfkit.feedback.security`); issuing a new token ends the old one and its sessions.
*Simulated* and *imported* annotators never log in: they are created without a token by scripts and
imports (:func:`ensure_annotator`). Login sessions are :mod:`rlhfkit.feedback.sessions`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rlhfkit.errors import RlhfkitError
from rlhfkit.feedback.models import Annotator, LoginSession
from rlhfkit.feedback.security import hash_token, new_token
from rlhfkit.feedback.store import FeedbackStore, utcnow

ANNOTATOR_KINDS = ("human", "simulated", "imported")
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,99}$")


@dataclass(frozen=True)
class AnnotatorInfo:
    id: int
    name: str
    kind: str
    """``human``, ``simulated`` or ``imported``."""
    is_admin: bool


def annotator_info(row: Annotator) -> AnnotatorInfo:
    return AnnotatorInfo(id=row.id, name=row.name, kind=row.kind, is_admin=row.is_admin)


def add_annotator(
    store: FeedbackStore, name: str, *, admin: bool = False, kind: str = "human"
) -> tuple[AnnotatorInfo, str | None]:
    """Create an annotator; returns it and, for humans, its login token (shown once, stored hashed)."""
    _check_name(name)
    if kind not in ANNOTATOR_KINDS:
        raise RlhfkitError(f"unknown annotator kind {kind!r}; choose one of {', '.join(ANNOTATOR_KINDS)}")
    token = new_token() if kind == "human" else None

    def work(session: Session) -> AnnotatorInfo:
        if session.scalar(select(Annotator.id).where(Annotator.name == name)) is not None:
            raise RlhfkitError(
                f"annotator {name!r} already exists; pick another name, or issue a new token for it "
                "with `rlhfkit feedback add-annotator NAME --new-token`"
            )
        row = Annotator(
            name=name,
            kind=kind,
            is_admin=admin,
            token_hash=hash_token(token) if token else None,
            created_at=utcnow(),
        )
        session.add(row)
        session.flush()
        return annotator_info(row)

    try:
        return store.write(work), token
    except IntegrityError:  # a concurrent add of the same name won the race
        raise RlhfkitError(f"annotator {name!r} already exists; pick another name") from None


def issue_token(store: FeedbackStore, name: str, *, admin: bool | None = None) -> str:
    """A new login token for a human annotator; the previous token and its sessions stop working."""
    token = new_token()

    def work(session: Session) -> None:
        row = session.scalar(select(Annotator).where(Annotator.name == name))
        if row is None:
            raise RlhfkitError(
                f"no annotator named {name!r}; create it with `rlhfkit feedback add-annotator {name}`"
            )
        if row.kind != "human":
            raise RlhfkitError(f"annotator {name!r} is {row.kind}, not human, and cannot log in")
        row.token_hash = hash_token(token)
        if admin is not None:
            row.is_admin = admin
        for login in session.scalars(select(LoginSession).where(LoginSession.annotator_id == row.id)):
            session.delete(login)

    store.write(work)
    return token


def ensure_annotator(store: FeedbackStore, name: str, kind: str) -> AnnotatorInfo:
    """The annotator called ``name``, created (without a token) when missing; for scripts and imports."""
    _check_name(name)
    existing = find_annotator(store, name)
    if existing is not None:
        if existing.kind != kind:
            raise RlhfkitError(f"annotator {name!r} already exists as {existing.kind}, not {kind}")
        return existing
    try:
        return add_annotator(store, name, kind=kind)[0]
    except RlhfkitError:
        found = find_annotator(store, name)  # created concurrently by another process
        if found is None:
            raise
        return found


def find_annotator(store: FeedbackStore, name: str) -> AnnotatorInfo | None:
    """The annotator called ``name``, or None."""
    row = store.read(lambda s: s.scalar(select(Annotator).where(Annotator.name == name)))
    return annotator_info(row) if row else None


def list_annotators(store: FeedbackStore) -> list[AnnotatorInfo]:
    """Every annotator of the project, in the order they were added."""
    rows = store.read(lambda s: list(s.scalars(select(Annotator).order_by(Annotator.id))))
    return [annotator_info(r) for r in rows]


def annotator_by_token(store: FeedbackStore, token: str) -> AnnotatorInfo | None:
    """The human annotator whose login token this is, or None."""
    if not token or len(token) > 200:
        return None
    digest = hash_token(token)
    row = store.read(lambda s: s.scalar(select(Annotator).where(Annotator.token_hash == digest)))
    return annotator_info(row) if row and row.kind == "human" else None


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise RlhfkitError(
            f"annotator name {name!r} is not allowed; use 1-100 letters, digits and _ . : @ + - "
            "starting with a letter or digit"
        )
