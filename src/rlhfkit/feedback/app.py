"""The labeling web app: FastAPI, server-rendered Jinja2 pages and one small script for the keyboard.

Security, in one place:
- login with a token → a server-side session; the cookie is HttpOnly and SameSite=Strict;
- every POST carries a CSRF token (an HMAC of the session token; the login form uses a double-submit
  cookie) and is refused with 403 without it;
- admin pages answer 403 to annotators;
- templates autoescape every text (a candidate containing ``<script>`` is shown as text), and the
  Content-Security-Policy allows scripts from this app only, so injected markup could not run anyway;
- request bodies above ``max_request_bytes`` get 413 and every response gets the security headers
  (:mod:`rlhfkit.feedback.guard`); malformed forms get 4xx from validation.

Written without ``from __future__ import annotations``: FastAPI reads the route signatures at runtime.
"""

import json
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape

from rlhfkit.data.preferences import pair_to_trl, unpaired_to_trl
from rlhfkit.errors import RlhfkitError
from rlhfkit.feedback import labeling
from rlhfkit.feedback.annotators import AnnotatorInfo, annotator_by_token
from rlhfkit.feedback.backend import StoreError
from rlhfkit.feedback.config import FeedbackConfig
from rlhfkit.feedback.export import preference_pairs, unpaired_labels
from rlhfkit.feedback.guard import (
    RequestGuard,
    install_error_handlers,
    log_store_trouble,
    retry_after,
    store_trouble,
)
from rlhfkit.feedback.labeling import Answer, ItemView, LabelingError
from rlhfkit.feedback.security import csrf_matches, csrf_token, new_token
from rlhfkit.feedback.sessions import create_session, end_session, session_annotator
from rlhfkit.feedback.stats import compute_stats
from rlhfkit.feedback.store import FeedbackStore

SESSION_COOKIE = "rlhfkit_session"
LOGIN_CSRF_COOKIE = "rlhfkit_login_csrf"

# (action, key as KeyboardEvent.key reports it, what it does). The page's help and its data-key
# attributes are both rendered from these tables, so what is shown is what works.
PAIRWISE_KEYS = (
    ("left", "a", "A is better"),
    ("right", "b", "B is better"),
    ("tie", "t", "tie: equally good"),
    ("both_bad", "x", "both are bad"),
    ("strength1", "1", "slightly better"),
    ("strength2", "2", "clearly better"),
    ("strength3", "3", "much better"),
    ("toxic_left", "A", "flag A as toxic"),
    ("toxic_right", "B", "flag B as toxic"),
    ("comment", "c", "write a comment (Esc leaves it, Ctrl+Enter submits)"),
    ("submit", "Enter", "submit"),
    ("skip", "s", "skip this item"),
    ("undo", "u", "undo your last answer"),
)
BINARY_KEYS = (
    ("good", "g", "good response"),
    ("bad", "b", "bad response"),
    ("toxic_left", "T", "flag as toxic"),
    ("comment", "c", "write a comment (Esc leaves it, Ctrl+Enter submits)"),
    ("submit", "Enter", "submit"),
    ("skip", "s", "skip this item"),
    ("undo", "u", "undo your last answer"),
)

NOTICES = {
    "saved": "Saved.",
    "skipped": "Skipped; you will not see that item again.",
    "undone": "Undone. Your previous answer is selected: change it and submit again.",
    "undone-skip": "Undone: the skipped item is back.",
    "welcome": "Logged in.",
}

ClientId = Annotated[str, Form(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:@+-]+$")]
CsrfField = Annotated[str, Form(alias="csrf_token", max_length=200)]
# Bounded so an absurd id is a validation error (422), not an integer overflow inside the driver.
ItemId = Annotated[int, Form(ge=1, le=2**62)]


def key_label(key: str) -> str:
    """How a key is printed on the page: ``A`` → ``Shift+A``."""
    return f"Shift+{key}" if len(key) == 1 and key.isupper() else key


def _keymap(question_type: str) -> dict[str, dict[str, str]]:
    table = PAIRWISE_KEYS if question_type == "pairwise" else BINARY_KEYS
    return {action: {"key": key, "label": key_label(key), "help": help_} for action, key, help_ in table}


def create_app(store: "FeedbackStore | str | Path", *, config: FeedbackConfig | None = None) -> FastAPI:
    """The labeling app for ``store`` (an open store, or a path / URL to open).

    A store opened here is closed when the app shuts down; a store passed in stays the caller's.
    """
    config = config or (store.config if isinstance(store, FeedbackStore) else FeedbackConfig())
    owns_store = not isinstance(store, FeedbackStore)
    the_store = FeedbackStore.open(store, config=config) if owns_store else store
    assert isinstance(the_store, FeedbackStore)
    project = the_store.project
    keys = _keymap(project.question_type)
    max_comment = config.max_comment_chars

    env = Environment(
        loader=PackageLoader("rlhfkit.feedback", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=True, default=True),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        if owns_store:
            the_store.close()

    app = FastAPI(
        title="rlhfkit feedback", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.state.store = the_store
    app.mount("/static", StaticFiles(packages=[("rlhfkit.feedback", "static")]), name="static")
    app.add_middleware(RequestGuard, max_bytes=config.max_request_bytes)

    # ----------------------------------------------------------------------------------- helpers

    def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("user", None)
        context.setdefault("project", project)
        html = env.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status)

    def session_of(request: Request) -> tuple[AnnotatorInfo | None, str]:
        token = request.cookies.get(SESSION_COOKIE, "")
        user = session_annotator(the_store, token) if token else None
        return user, token

    def refuse(status: int, message: str, user: AnnotatorInfo | None = None) -> HTMLResponse:
        return render("error.html", status=status, message=message, user=user)

    def store_error_page(status: int, message: str) -> HTMLResponse:
        return render("error.html", status=status, message=message, retry_url="/label")

    install_error_handlers(app, store_error_page)

    def check_csrf(token: str, given: str) -> bool:
        return bool(token) and csrf_matches(csrf_token(the_store.secret, token), given)

    def form_from_answer(view: ItemView, answer: Answer | None) -> dict[str, Any]:
        if answer is None:
            return {}
        fol = view.first_on_left if view.first_on_left is not None else True
        return {
            "choice": labeling.canonical_to_displayed(answer.choice, fol),
            "strength": str(answer.strength) if answer.strength else "",
            "toxic_left": answer.toxic[0] if fol else answer.toxic[1],
            "toxic_right": answer.toxic[1] if fol else answer.toxic[0],
            "comment": answer.comment or "",
        }

    def label_page(
        user: AnnotatorInfo,
        session_token: str,
        *,
        view: ItemView | None = None,
        notice: str | None = None,
        error: str | None = None,
        form: dict[str, Any] | None = None,
        client_id: str | None = None,
        status: int = 200,
    ) -> HTMLResponse:
        if view is None:
            view = labeling.next_item(the_store, user.id)
        progress = labeling.progress(the_store, user.id)
        common = {
            "user": user,
            "progress": progress,
            "notice": notice,
            "error": error,
            "csrf": csrf_token(the_store.secret, session_token),
            "keys": keys,
            "new_id": lambda: uuid.uuid4().hex,
            "client_id": client_id,
        }
        if view is None:
            return render("done.html", status=status, **common)
        if form is None:
            form = form_from_answer(view, view.previous)
        return render("label.html", status=status, item=view, form=form, max_comment=max_comment, **common)

    def answer_not_stored(
        request: Request,
        user: AnnotatorInfo,
        token: str,
        view: ItemView,
        form: dict,
        client_id: str,
        exc: StoreError,
    ) -> HTMLResponse:
        """The store could not take the answer: show it again, filled in and with the same submission id,
        so sending it again is one click and can never store it twice."""
        log_store_trouble(request, exc)
        message = store_trouble(exc, answer_kept=True)
        response = label_page(
            user, token, view=view, error=message, form=form, client_id=client_id, status=503
        )
        response.headers["retry-after"] = retry_after(exc)
        return response

    # ------------------------------------------------------------------------------------ routes

    @app.get("/", include_in_schema=False)
    def index(request: Request) -> Response:
        user, _ = session_of(request)
        return RedirectResponse("/label" if user else "/login", status_code=303)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, Any]:
        return {"ok": True, "project": project.name}

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> Response:
        login_csrf = request.cookies.get(LOGIN_CSRF_COOKIE) or new_token()
        response = render("login.html", login_csrf=login_csrf)
        _set_cookie(response, LOGIN_CSRF_COOKIE, login_csrf, config, max_age=3600)
        return response

    @app.post("/login")
    def login(
        request: Request,
        token: Annotated[str, Form(max_length=200)],
        csrf_token_field: CsrfField,
    ) -> Response:
        expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not expected or not csrf_matches(expected, csrf_token_field):
            return refuse(
                403, "The login form expired or did not come from this site. Reload the login page."
            )
        annotator = annotator_by_token(the_store, token.strip())
        if annotator is None:
            return render(
                "login.html", status=401, login_csrf=expected, error="Unknown token. Check it and try again."
            )
        session_token = create_session(the_store, annotator.id)
        response = RedirectResponse("/label?notice=welcome", status_code=303)
        _set_cookie(response, SESSION_COOKIE, session_token, config, max_age=int(config.session_hours * 3600))
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
        return response

    @app.post("/logout")
    def logout(request: Request, csrf: CsrfField) -> Response:
        user, token = session_of(request)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        if not check_csrf(token, csrf):
            return refuse(403, "Missing or wrong CSRF token; reload the page and try again.", user)
        end_session(the_store, token)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.get("/label", response_class=HTMLResponse)
    def label_get(request: Request, notice: Annotated[str | None, Query(max_length=30)] = None) -> Response:
        user, token = session_of(request)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        return label_page(user, token, notice=NOTICES.get(notice or ""))

    @app.post("/label")
    def label_post(
        request: Request,
        item_id: ItemId,
        client_id: ClientId,
        csrf: CsrfField,
        choice: Annotated[str, Form(max_length=20)] = "",
        strength: Annotated[str, Form(max_length=10)] = "",
        toxic_left: Annotated[str, Form(max_length=10)] = "",
        toxic_right: Annotated[str, Form(max_length=10)] = "",
        comment: Annotated[str, Form(max_length=max_comment * 2)] = "",
    ) -> Response:
        user, token = session_of(request)
        if user is None:
            return refuse(401, "Your session expired; log in again (your answer was not stored).")
        if not check_csrf(token, csrf):
            return refuse(403, "Missing or wrong CSRF token; reload the page and try again.", user)
        form = {
            "choice": choice,
            "strength": strength,
            "toxic_left": bool(toxic_left),
            "toxic_right": bool(toxic_right),
            "comment": comment,
        }
        try:
            view = labeling.view_item(the_store, user.id, item_id)
        except LabelingError as exc:
            return label_page(user, token, error=str(exc), status=exc.status)
        try:
            answer = _answer_from_form(project.question_type, view, form)
            labeling.submit(the_store, user.id, item_id, answer, client_id)
        except labeling.InvalidAnswerError as exc:
            return label_page(user, token, view=view, error=str(exc), form=form, status=400)
        except LabelingError as exc:
            return label_page(user, token, error=str(exc), status=exc.status)
        except StoreError as exc:  # busy past every retry, full disk, lost connection
            return answer_not_stored(request, user, token, view, form, client_id, exc)
        except RlhfkitError as exc:  # e.g. a NUL character in the comment
            return label_page(user, token, view=view, error=str(exc), form=form, status=400)
        return RedirectResponse("/label?notice=saved", status_code=303)

    @app.post("/skip")
    def skip_post(request: Request, item_id: ItemId, client_id: ClientId, csrf: CsrfField) -> Response:
        user, token = session_of(request)
        if user is None:
            return refuse(401, "Your session expired; log in again.")
        if not check_csrf(token, csrf):
            return refuse(403, "Missing or wrong CSRF token; reload the page and try again.", user)
        try:
            labeling.skip(the_store, user.id, item_id, client_id)
        except LabelingError as exc:
            return label_page(user, token, error=str(exc), status=exc.status)
        return RedirectResponse("/label?notice=skipped", status_code=303)

    @app.post("/undo")
    def undo_post(request: Request, client_id: ClientId, csrf: CsrfField) -> Response:
        user, token = session_of(request)
        if user is None:
            return refuse(401, "Your session expired; log in again.")
        if not check_csrf(token, csrf):
            return refuse(403, "Missing or wrong CSRF token; reload the page and try again.", user)
        try:
            undone = labeling.undo(the_store, user.id, client_id)
        except LabelingError as exc:
            return label_page(user, token, error=str(exc), status=exc.status)
        notice = "undone-skip" if undone.choice == labeling.SKIP else "undone"
        return RedirectResponse(f"/label?notice={notice}", status_code=303)

    def admin_or_refusal(request: Request) -> tuple[AnnotatorInfo | None, str, Response | None]:
        user, token = session_of(request)
        if user is None:
            return None, token, refuse(401, "Log in first: this page is for admins.")
        if not user.is_admin:
            return user, token, refuse(403, "This page is for admins only.", user)
        return user, token, None

    @app.get("/admin", response_class=HTMLResponse)
    def admin(request: Request) -> Response:
        user, token, refusal = admin_or_refusal(request)
        if refusal is not None:
            return refusal
        stats = compute_stats(the_store)
        return render(
            "admin.html",
            user=user,
            stats=stats,
            csrf=csrf_token(the_store.secret, token),
            display_url=the_store.display_url,
        )

    @app.get("/admin/export/pairs.jsonl")
    def export_pairs(
        request: Request,
        aggregate: Literal["label", "majority"] = "label",
        complete_only: bool = False,
    ) -> Response:
        _, _, refusal = admin_or_refusal(request)
        if refusal is not None:
            return refusal
        try:
            pairs = preference_pairs(the_store, aggregate=aggregate, complete_only=complete_only)
        except RlhfkitError as exc:
            return refuse(400, str(exc))
        return _jsonl_download((pair_to_trl(p) for p in pairs), "preferences.jsonl")

    @app.get("/admin/export/unpaired.jsonl")
    def export_unpaired(
        request: Request,
        aggregate: Literal["label", "majority"] = "label",
        complete_only: bool = False,
    ) -> Response:
        _, _, refusal = admin_or_refusal(request)
        if refusal is not None:
            return refusal
        labels = unpaired_labels(the_store, aggregate=aggregate, complete_only=complete_only)
        return _jsonl_download((unpaired_to_trl(u) for u in labels), "unpaired.jsonl")

    return app


def _answer_from_form(question_type: str, view: ItemView, form: dict[str, Any]) -> Answer:
    """The canonical answer for what the annotator picked on a page with ``view``'s layout."""
    choice = form["choice"]
    if not choice:
        raise labeling.InvalidAnswerError("choose an answer before submitting")
    if question_type == "pairwise":
        if choice not in ("left", "right", "tie", "both_bad"):
            raise labeling.InvalidAnswerError(f"unknown answer {choice!r}")
        fol = bool(view.first_on_left)
        strength = None
        if choice in ("left", "right"):
            if form["strength"] not in ("1", "2", "3"):
                raise labeling.InvalidAnswerError(
                    "say how much better: 1 (slightly), 2 (clearly) or 3 (much better)"
                )
            strength = int(form["strength"])
        toxic_first, toxic_second = (
            (form["toxic_left"], form["toxic_right"]) if fol else (form["toxic_right"], form["toxic_left"])
        )
        return Answer(
            choice=labeling.displayed_to_canonical(choice, fol),
            strength=strength,
            toxic=(toxic_first, toxic_second),
            comment=form["comment"],
        )
    if choice not in ("good", "bad"):
        raise labeling.InvalidAnswerError(f"unknown answer {choice!r}")
    return Answer(choice=choice, toxic=(form["toxic_left"], False), comment=form["comment"])


def _set_cookie(response: Response, name: str, value: str, config: FeedbackConfig, *, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=config.cookie_secure,
    )


def _jsonl_download(objects: Any, filename: str) -> Response:
    body = "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects)
    return Response(
        body,
        media_type="application/x-ndjson",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )
