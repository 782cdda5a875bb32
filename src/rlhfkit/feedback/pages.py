"""The pages of the labeling app: templates, key bindings, notices, and the labeling page with its form.

Templates autoescape every text, so a candidate containing ``<script>`` is shown as text; the app's
Content-Security-Policy (:mod:`rlhfkit.feedback.guard`) would not let injected markup run anyway.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from rlhfkit.feedback import labeling
from rlhfkit.feedback.access import Refused, Visitor, csrf_for
from rlhfkit.feedback.annotators import AnnotatorInfo
from rlhfkit.feedback.backend import StoreError
from rlhfkit.feedback.config import FeedbackConfig
from rlhfkit.feedback.guard import log_store_trouble, retry_after, store_trouble
from rlhfkit.feedback.labeling import Answer, ItemView
from rlhfkit.feedback.store import FeedbackStore, ProjectInfo

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


def key_label(key: str) -> str:
    """How a key is printed on the page: ``A`` → ``Shift+A``."""
    return f"Shift+{key}" if len(key) == 1 and key.isupper() else key


def _keymap(question_type: str) -> dict[str, dict[str, str]]:
    table = PAIRWISE_KEYS if question_type == "pairwise" else BINARY_KEYS
    return {action: {"key": key, "label": key_label(key), "help": help_} for action, key, help_ in table}


@dataclass(frozen=True)
class Finish:
    """What the done page adds when someone waits on the labeler (``rlhfkit demo --human``'s terminal)."""

    message: str
    """Shown under the heading: what happens next, e.g. that the terminal now trains the reward model."""
    on_shown: Callable[[int], None] | None = None
    """Called with the annotator's id whenever their done page is rendered, so the waiting side can stop
    serving only once the labeler has seen it."""


@dataclass
class Pages:
    """Renders the app's pages for one store."""

    store: FeedbackStore
    config: FeedbackConfig
    finish: Finish | None = None
    project: ProjectInfo = field(init=False)
    keys: dict[str, dict[str, str]] = field(init=False)
    env: Environment = field(init=False)

    def __post_init__(self) -> None:
        self.project = self.store.project
        self.keys = _keymap(self.project.question_type)
        self.env = Environment(
            loader=PackageLoader("rlhfkit.feedback", "templates"),
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=True, default=True),
        )

    def render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("user", None)
        context.setdefault("project", self.project)
        html = self.env.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status)

    def refuse(self, status: int, message: str, user: AnnotatorInfo | None = None) -> HTMLResponse:
        return self.render("error.html", status=status, message=message, user=user)

    def refused(self, _request: Request, exc: Exception) -> Response:
        """The reply to a :class:`~rlhfkit.feedback.access.Refused` request: a redirect or an error page."""
        assert isinstance(exc, Refused)
        if exc.redirect is not None:
            return RedirectResponse(exc.redirect, status_code=exc.status)
        return self.refuse(exc.status, exc.message, exc.user)

    def store_error_page(self, status: int, message: str) -> HTMLResponse:
        return self.render("error.html", status=status, message=message, retry_url="/label")

    def label_page(
        self,
        visitor: Visitor,
        *,
        view: ItemView | None = None,
        notice: str | None = None,
        error: str | None = None,
        form: dict[str, Any] | None = None,
        client_id: str | None = None,
        status: int = 200,
    ) -> HTMLResponse:
        """The next item to label (or ``view``), or the page saying that everything is done."""
        user = visitor.user
        if view is None:
            view = labeling.next_item(self.store, user.id)
        progress = labeling.progress(self.store, user.id)
        common = {
            "user": user,
            "progress": progress,
            "notice": notice,
            "error": error,
            "csrf": csrf_for(self.store, visitor),
            "keys": self.keys,
            "new_id": lambda: uuid.uuid4().hex,
            "client_id": client_id,
        }
        if view is None:
            if self.finish is not None and self.finish.on_shown is not None:
                self.finish.on_shown(user.id)
            return self.render("done.html", status=status, finish=self.finish, **common)
        if form is None:
            form = form_from_answer(view, view.previous)
        return self.render(
            "label.html", status=status, item=view, form=form, max_comment=self.config.max_comment_chars, **common
        )

    def answer_not_stored(
        self, request: Request, visitor: Visitor, view: ItemView, form: dict, client_id: str, exc: StoreError
    ) -> HTMLResponse:
        """The store could not take the answer: show it again, filled in and with the same submission id,
        so sending it again is one click and can never store it twice."""
        log_store_trouble(request, exc)
        message = store_trouble(exc, answer_kept=True)
        response = self.label_page(visitor, view=view, error=message, form=form, client_id=client_id, status=503)
        response.headers["retry-after"] = retry_after(exc)
        return response


def form_from_answer(view: ItemView, answer: Answer | None) -> dict[str, Any]:
    """The form fields that show ``answer`` on a page with ``view``'s layout."""
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


def answer_from_form(question_type: str, view: ItemView, form: dict[str, Any]) -> Answer:
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
