"""Login sessions of the web app: a session token in an HttpOnly cookie, only its hash in the store.

A session lasts ``feedback.session_hours``; expired sessions are cleared whenever someone logs in. The
CSRF token of a session's forms is derived from its token (:func:`rlhfkit.feedback.security.csrf_token`),
so nothing else is stored.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from rlhfkit.feedback.annotators import AnnotatorInfo, annotator_info
from rlhfkit.feedback.models import Annotator, LoginSession
from rlhfkit.feedback.security import hash_token, new_token
from rlhfkit.feedback.store import FeedbackStore, utcnow


def create_session(store: FeedbackStore, annotator_id: int) -> str:
    """A new login session for the annotator; returns its token (for the session cookie)."""
    token = new_token()
    now = utcnow()

    def work(session: Session) -> None:
        # Expired sessions are garbage; clearing them on login keeps the table small.
        for old in session.scalars(select(LoginSession).where(LoginSession.expires_at < now)):
            session.delete(old)
        session.add(
            LoginSession(
                token_hash=hash_token(token),
                annotator_id=annotator_id,
                created_at=now,
                expires_at=now + timedelta(hours=store.config.session_hours),
            )
        )

    store.write(work)
    return token


def session_annotator(store: FeedbackStore, session_token: str) -> AnnotatorInfo | None:
    """The annotator logged in with this session token, or None when unknown or expired."""
    if not session_token or len(session_token) > 200:
        return None
    digest = hash_token(session_token)

    def work(session: Session) -> Annotator | None:
        login = session.scalar(select(LoginSession).where(LoginSession.token_hash == digest))
        if login is None or login.expires_at < utcnow():
            return None
        return session.get(Annotator, login.annotator_id)

    row = store.read(work)
    return annotator_info(row) if row else None


def end_session(store: FeedbackStore, session_token: str) -> None:
    """Log out: the session token stops working."""
    digest = hash_token(session_token or "")

    def work(session: Session) -> None:
        login = session.scalar(select(LoginSession).where(LoginSession.token_hash == digest))
        if login is not None:
            session.delete(login)

    store.write(work)
