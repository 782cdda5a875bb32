"""The labeling web app: FastAPI, server-rendered Jinja2 pages and one small script for the keyboard.

Security, in one place (docs/feedback.md, "Security"):
- login with a token → a server-side session; the cookie is HttpOnly and SameSite=Strict;
- every POST carries a CSRF token (an HMAC of the session token; the login form uses a double-submit
  cookie) and is refused with 403 without it (:mod:`rlhfkit.feedback.access`);
- admin pages answer 403 to annotators;
- templates autoescape every text (a candidate containing ``<script>`` is shown as text), and the
  Content-Security-Policy allows scripts from this app only, so injected markup could not run anyway;
- request bodies above ``max_request_bytes`` get 413 and every response gets the security headers
  (:mod:`rlhfkit.feedback.guard`); malformed forms get 4xx from validation.

The app is assembled here; its routes are :mod:`rlhfkit.feedback.routes` and its pages
:mod:`rlhfkit.feedback.pages`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from rlhfkit.feedback.access import Refused
from rlhfkit.feedback.config import FeedbackConfig
from rlhfkit.feedback.guard import RequestGuard, install_error_handlers
from rlhfkit.feedback.pages import BINARY_KEYS, PAIRWISE_KEYS, Finish, Pages
from rlhfkit.feedback.routes import build_router
from rlhfkit.feedback.store import FeedbackStore

__all__ = ["BINARY_KEYS", "PAIRWISE_KEYS", "Finish", "create_app"]


def create_app(store: FeedbackStore | str | Path, *, config: FeedbackConfig | None = None,
               finish: Finish | None = None) -> FastAPI:  # fmt: skip
    """The labeling app for ``store`` (an open store, or a path / URL to open).

    A store opened here is closed when the app shuts down; a store passed in stays the caller's.
    ``finish`` tells a labeler with nothing left what happens next (see :class:`~rlhfkit.feedback.pages.Finish`).
    """
    config = config or (store.config if isinstance(store, FeedbackStore) else FeedbackConfig())
    owns_store = not isinstance(store, FeedbackStore)
    the_store = FeedbackStore.open(store, config=config) if owns_store else store
    assert isinstance(the_store, FeedbackStore)
    pages = Pages(the_store, config, finish)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if owns_store:
            the_store.close()

    app = FastAPI(
        title="rlhfkit feedback", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.state.store = the_store
    app.mount("/static", StaticFiles(packages=[("rlhfkit.feedback", "static")]), name="static")
    app.add_middleware(RequestGuard, max_bytes=config.max_request_bytes)
    install_error_handlers(app, pages.store_error_page)
    app.add_exception_handler(Refused, pages.refused)
    app.include_router(build_router(pages))
    return app
