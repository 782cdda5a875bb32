"""The routes of the labeling app, on one :class:`fastapi.APIRouter`: login, labeling, admin and export.

Each logged-in form POST takes its visitor from :func:`rlhfkit.feedback.access.signed_in` (session, then
CSRF), so a route body runs only for a visitor it may serve; the admin routes take theirs from
:func:`rlhfkit.feedback.access.admin`. Malformed fields are refused with 422 by FastAPI's validation.

Written without ``from __future__ import annotations``: FastAPI reads the route signatures at runtime.
"""

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from rlhfkit.data.preferences import pair_to_trl, unpaired_to_trl
from rlhfkit.errors import RlhfkitError
from rlhfkit.feedback import labeling
from rlhfkit.feedback.access import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    CsrfField,
    Visitor,
    admin,
    csrf_for,
    current_visitor,
    page_visitor,
    set_cookie,
    signed_in,
)
from rlhfkit.feedback.annotators import annotator_by_token
from rlhfkit.feedback.backend import StoreError
from rlhfkit.feedback.export import preference_pairs, unpaired_labels
from rlhfkit.feedback.labeling import LabelingError
from rlhfkit.feedback.pages import NOTICES, Pages, answer_from_form
from rlhfkit.feedback.security import csrf_matches, new_token
from rlhfkit.feedback.sessions import create_session, end_session
from rlhfkit.feedback.stats import compute_stats

ClientId = Annotated[str, Form(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:@+-]+$")]
# Bounded so an absurd id is a validation error (422), not an integer overflow inside the driver.
ItemId = Annotated[int, Form(ge=1, le=2**62)]
Aggregate = Literal["label", "majority"]

# A visitor the route may serve (access.py): a form POST with a session and its CSRF token, a page, an admin.
Poster = Annotated[Visitor, Depends(signed_in("Your session expired; log in again."))]
AnswerPoster = Annotated[
    Visitor, Depends(signed_in("Your session expired; log in again (your answer was not stored)."))
]
LoggingOut = Annotated[Visitor, Depends(signed_in(None))]
Reader = Annotated[Visitor, Depends(page_visitor)]
Admin = Annotated[Visitor, Depends(admin)]


def build_router(pages: Pages) -> APIRouter:
    """Every route of the app for the store ``pages`` renders; ``feedback.max_comment_chars`` bounds the
    comment field (twice the limit the answer check explains, so only an absurd comment is a 422)."""
    router = APIRouter()
    store, config, project = pages.store, pages.config, pages.project
    max_comment = config.max_comment_chars

    @router.get("/", include_in_schema=False)
    def index(request: Request) -> Response:
        return RedirectResponse("/label" if current_visitor(request) else "/login", status_code=303)

    @router.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, Any]:
        return {"ok": True, "project": project.name}

    # ------------------------------------------------------------------------------------------- login

    @router.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> Response:
        login_csrf = request.cookies.get(LOGIN_CSRF_COOKIE) or new_token()
        response = pages.render("login.html", login_csrf=login_csrf)
        set_cookie(response, LOGIN_CSRF_COOKIE, login_csrf, config, max_age=3600)
        return response

    @router.post("/login")
    def login(
        request: Request,
        token: Annotated[str, Form(max_length=200)],
        csrf_token_field: CsrfField,
    ) -> Response:
        expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not expected or not csrf_matches(expected, csrf_token_field):
            return pages.refuse(
                403, "The login form expired or did not come from this site. Reload the login page."
            )
        annotator = annotator_by_token(store, token.strip())
        if annotator is None:
            return pages.render(
                "login.html", status=401, login_csrf=expected, error="Unknown token. Check it and try again."
            )
        session_token = create_session(store, annotator.id)
        response = RedirectResponse("/label?notice=welcome", status_code=303)
        set_cookie(response, SESSION_COOKIE, session_token, config, max_age=int(config.session_hours * 3600))
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
        return response

    @router.post("/logout")
    def logout(visitor: LoggingOut) -> Response:
        end_session(store, visitor.session_token)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # ---------------------------------------------------------------------------------------- labeling

    @router.get("/label", response_class=HTMLResponse)
    def label_get(visitor: Reader, notice: Annotated[str | None, Query(max_length=30)] = None) -> Response:
        return pages.label_page(visitor, notice=NOTICES.get(notice or ""))

    @router.post("/label")
    def label_post(
        request: Request,
        visitor: AnswerPoster,
        item_id: ItemId,
        client_id: ClientId,
        choice: Annotated[str, Form(max_length=20)] = "",
        strength: Annotated[str, Form(max_length=10)] = "",
        toxic_left: Annotated[str, Form(max_length=10)] = "",
        toxic_right: Annotated[str, Form(max_length=10)] = "",
        comment: Annotated[str, Form(max_length=max_comment * 2)] = "",
    ) -> Response:
        user = visitor.user
        form = {
            "choice": choice,
            "strength": strength,
            "toxic_left": bool(toxic_left),
            "toxic_right": bool(toxic_right),
            "comment": comment,
        }
        try:
            view = labeling.view_item(store, user.id, item_id)
        except LabelingError as exc:
            return pages.label_page(visitor, error=str(exc), status=exc.status)
        try:
            answer = answer_from_form(project.question_type, view, form)
            labeling.submit(store, user.id, item_id, answer, client_id)
        except labeling.InvalidAnswerError as exc:
            return pages.label_page(visitor, view=view, error=str(exc), form=form, status=400)
        except LabelingError as exc:
            return pages.label_page(visitor, error=str(exc), status=exc.status)
        except StoreError as exc:  # busy past every retry, full disk, lost connection
            return pages.answer_not_stored(request, visitor, view, form, client_id, exc)
        except RlhfkitError as exc:  # e.g. a NUL character in the comment
            return pages.label_page(visitor, view=view, error=str(exc), form=form, status=400)
        return RedirectResponse("/label?notice=saved", status_code=303)

    @router.post("/skip")
    def skip_post(visitor: Poster, item_id: ItemId, client_id: ClientId) -> Response:
        try:
            labeling.skip(store, visitor.user.id, item_id, client_id)
        except LabelingError as exc:
            return pages.label_page(visitor, error=str(exc), status=exc.status)
        return RedirectResponse("/label?notice=skipped", status_code=303)

    @router.post("/undo")
    def undo_post(visitor: Poster, client_id: ClientId) -> Response:
        try:
            undone = labeling.undo(store, visitor.user.id, client_id)
        except LabelingError as exc:
            return pages.label_page(visitor, error=str(exc), status=exc.status)
        notice = "undone-skip" if undone.choice == labeling.SKIP else "undone"
        return RedirectResponse(f"/label?notice={notice}", status_code=303)

    # ------------------------------------------------------------------------------------------- admin

    @router.get("/admin", response_class=HTMLResponse)
    def admin_page(visitor: Admin) -> Response:
        return pages.render(
            "admin.html",
            user=visitor.user,
            stats=compute_stats(store),
            csrf=csrf_for(store, visitor),
            display_url=store.display_url,
        )

    @router.get("/admin/export/pairs.jsonl")
    def export_pairs(_visitor: Admin, aggregate: Aggregate = "label", complete_only: bool = False) -> Response:
        try:
            pairs = preference_pairs(store, aggregate=aggregate, complete_only=complete_only)
        except RlhfkitError as exc:
            return pages.refuse(400, str(exc))
        return _jsonl_download((pair_to_trl(p) for p in pairs), "preferences.jsonl")

    @router.get("/admin/export/unpaired.jsonl")
    def export_unpaired(_visitor: Admin, aggregate: Aggregate = "label", complete_only: bool = False) -> Response:
        labels = unpaired_labels(store, aggregate=aggregate, complete_only=complete_only)
        return _jsonl_download((unpaired_to_trl(u) for u in labels), "unpaired.jsonl")

    return router


def _jsonl_download(objects: Any, filename: str) -> Response:
    body = "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects)
    return Response(
        body,
        media_type="application/x-ndjson",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )
