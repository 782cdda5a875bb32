"""Who is asking: the session cookie, the CSRF check, and the FastAPI dependencies that do both.

Every form POST of a logged-in page runs the same preamble before its route: find the annotator of the
session cookie (else 401, or back to the login page), then check the form's CSRF token, an HMAC of the
session token (else 403). :func:`signed_in` is that preamble as one dependency; :func:`admin` guards
the admin pages. A refusal is raised as :class:`Refused` and rendered by the app (error page or
redirect), so a route runs only for a visitor it may serve. The login form has no session yet; it uses a
double-submit cookie instead (``LOGIN_CSRF_COOKIE``). See docs/feedback.md, "Security".
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import Response

from rlhfkit.feedback.annotators import AnnotatorInfo
from rlhfkit.feedback.config import FeedbackConfig
from rlhfkit.feedback.security import csrf_matches, csrf_token
from rlhfkit.feedback.sessions import session_annotator
from rlhfkit.feedback.store import FeedbackStore

SESSION_COOKIE = "rlhfkit_session"
LOGIN_CSRF_COOKIE = "rlhfkit_login_csrf"
BAD_CSRF = "Missing or wrong CSRF token; reload the page and try again."

CsrfField = Annotated[str, Form(alias="csrf_token", max_length=200)]


@dataclass(frozen=True)
class Visitor:
    """A logged-in annotator and the token of their session."""

    user: AnnotatorInfo
    session_token: str


class Refused(Exception):
    """A request turned away before its route ran: an error page with ``status``, or a redirect."""

    def __init__(self, status: int, message: str = "", user: AnnotatorInfo | None = None,
                 redirect: str | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.message = message
        self.user = user
        self.redirect = redirect


def store_of(request: Request) -> FeedbackStore:
    return request.app.state.store


def current_visitor(request: Request) -> Visitor | None:
    """The visitor of the session cookie, or None when there is no (live) session."""
    token = request.cookies.get(SESSION_COOKIE, "")
    user = session_annotator(store_of(request), token) if token else None
    return Visitor(user, token) if user is not None else None


def csrf_for(store: FeedbackStore, visitor: Visitor) -> str:
    """The CSRF token the forms of ``visitor``'s pages carry."""
    return csrf_token(store.secret, visitor.session_token)


def signed_in(expired: str | None) -> Callable[..., Visitor]:
    """The preamble of a form POST as a dependency: a live session, then the form's CSRF token.

    Without a session the request is refused with 401 and ``expired`` (or, when ``expired`` is None,
    sent to the login page); with a missing or wrong CSRF token, with 403.
    """

    def dependency(request: Request, csrf: CsrfField) -> Visitor:
        visitor = current_visitor(request)
        if visitor is None:
            raise Refused(401, expired) if expired is not None else Refused(303, redirect="/login")
        if not csrf_matches(csrf_for(store_of(request), visitor), csrf):
            raise Refused(403, BAD_CSRF, visitor.user)
        return visitor

    return dependency


def page_visitor(request: Request) -> Visitor:
    """A page for logged-in annotators: without a session, the login page instead."""
    visitor = current_visitor(request)
    if visitor is None:
        raise Refused(303, redirect="/login")
    return visitor


def admin(request: Request) -> Visitor:
    """An admin page: 401 without a session, 403 for an annotator who is not an admin."""
    visitor = current_visitor(request)
    if visitor is None:
        raise Refused(401, "Log in first: this page is for admins.")
    if not visitor.user.is_admin:
        raise Refused(403, "This page is for admins only.", visitor.user)
    return visitor


def set_cookie(response: Response, name: str, value: str, config: FeedbackConfig, *, max_age: int) -> None:
    """An HttpOnly, SameSite=Strict cookie (and Secure when ``feedback.cookie_secure``)."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=config.cookie_secure,
    )
