"""Answers and refusals of the labeling queue: what an answer is, how it is checked, what can go wrong.

:mod:`rlhfkit.feedback.labeling` re-exports everything here; import it from there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rlhfkit.errors import RlhfkitError
from rlhfkit.feedback.store import check_text

PAIRWISE_CHOICES = ("first", "second", "tie", "both_bad")
BINARY_CHOICES = ("good", "bad")
SKIP = "skip"
STRENGTHS = {"slightly": 1, "clearly": 2, "much": 3}
"""Stated strength of a preference ("A is slightly / clearly / much better") and its stored level."""
STRENGTH_MARGINS = {1: 1.0, 2: 2.0, 3: 3.0}
"""TRL margin exported for each strength level."""
STRENGTH_NAMES = {level: name for name, level in STRENGTHS.items()}

_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:@+-]{1,100}$")


class LabelingError(RlhfkitError):
    """A labeling request that cannot be carried out; ``status`` is the matching HTTP status."""

    status = 400


class InvalidAnswerError(LabelingError):
    status = 400


class UnknownItemError(LabelingError):
    status = 404


class ItemRetiredError(LabelingError):
    status = 409


class AlreadyLabeledError(LabelingError):
    status = 409


class NothingToUndoError(LabelingError):
    status = 409


class ClientIdConflictError(LabelingError):
    status = 409


class NotServedError(LabelingError):
    """The item is not the one the queue serves this annotator now: never shown to them, or no longer theirs."""

    status = 409


@dataclass(frozen=True)
class Answer:
    """An annotator's answer in canonical terms (about the item's first and second candidate)."""

    choice: str
    """pairwise: ``first``, ``second``, ``tie`` or ``both_bad``; binary: ``good`` or ``bad``."""
    strength: int | None = None
    """1 slightly, 2 clearly, 3 much better; required for ``first`` / ``second``, else None."""
    toxic: tuple[bool, bool] = (False, False)
    """Per candidate, whether the annotator flagged it as toxic."""
    comment: str | None = None


# ------------------------------------------------------------------------------------------ answers


def displayed_to_canonical(choice: str, first_is_left: bool) -> str:
    """Map what the page offered (``left`` / ``right`` / ``tie`` / ``both_bad``) to canonical terms."""
    if choice == "left":
        return "first" if first_is_left else "second"
    if choice == "right":
        return "second" if first_is_left else "first"
    return choice


def canonical_to_displayed(choice: str, first_is_left: bool) -> str:
    """The inverse of :func:`displayed_to_canonical`."""
    if choice == "first":
        return "left" if first_is_left else "right"
    if choice == "second":
        return "right" if first_is_left else "left"
    return choice


def validate_answer(answer: Answer, question_type: str, max_comment_chars: int = 2000) -> Answer:
    """The answer normalised (strength dropped where it means nothing, empty comment → None), or an error."""
    choices = PAIRWISE_CHOICES if question_type == "pairwise" else BINARY_CHOICES
    if answer.choice not in choices:
        raise InvalidAnswerError(f"answer {answer.choice!r} is not one of {', '.join(choices)}")
    strength = answer.strength
    if answer.choice in ("first", "second"):
        if strength not in STRENGTH_NAMES:
            raise InvalidAnswerError(
                "say how much better the preferred candidate is: strength 1 (slightly), 2 (clearly) or 3 (much)"
            )
    else:
        strength = None
    toxic = (bool(answer.toxic[0]), bool(answer.toxic[1]))
    if question_type == "binary" and toxic[1]:
        raise InvalidAnswerError("a binary item has one candidate; only the first can be flagged toxic")
    comment = answer.comment
    if comment is not None:
        comment = check_text(comment, "the comment").strip() or None
        if comment is not None and len(comment) > max_comment_chars:
            raise InvalidAnswerError(
                f"the comment has {len(comment)} characters; the limit is {max_comment_chars}"
            )
    return Answer(choice=answer.choice, strength=strength, toxic=toxic, comment=comment)


def check_client_id(client_id: str) -> None:
    if not isinstance(client_id, str) or not _CLIENT_ID.match(client_id):
        raise InvalidAnswerError("the client id must be 1-100 characters of letters, digits and . _ : @ + -")
