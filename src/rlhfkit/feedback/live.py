"""What is live in the store: labels no retraction points at, and the counts built on them.

:func:`only_live` is the one place that says what "live" means; every query here and in the labeling
queue goes through it. These queries decide retirement (``overlap`` live non-skip labels), which items an
annotator has already answered, and what the export reads; the labeling queue and the export share them.
"""

from __future__ import annotations

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from rlhfkit.feedback.answers import SKIP
from rlhfkit.feedback.models import Label, Retraction


def _with_retractions(query: Select) -> Select:
    """``query`` (over :class:`Label`) with each label's retraction joined, when it has one."""
    return query.outerjoin(Retraction, Retraction.label_id == Label.id)


def only_live(query: Select) -> Select:
    """``query`` (over :class:`Label`) restricted to live labels and skips: those no retraction points at."""
    return _with_retractions(query).where(Retraction.id.is_(None))


def live_label_query() -> Select:
    """Labels no retraction points at (skips included)."""
    return only_live(select(Label))


def live_counts():
    """Per item, the number of live non-skip labels."""
    return (
        only_live(select(Label.item_id.label("item_id"), func.count().label("n")))
        .where(Label.choice != SKIP)
        .group_by(Label.item_id)
        .subquery()
    )


def answered_by(annotator_id: int) -> Select:
    """Ids of items with a live label or skip by this annotator."""
    return only_live(select(Label.item_id)).where(Label.annotator_id == annotator_id)


def live_count(session: Session, item_id: int) -> int:
    query = only_live(select(func.count()).select_from(Label)).where(Label.item_id == item_id, Label.choice != SKIP)
    return session.scalar(query) or 0


def own_labels(session: Session, annotator_id: int, item_id: int) -> list[tuple[Label, bool]]:
    """This annotator's labels on the item, oldest first, each with whether it is still live."""
    rows = session.execute(
        _with_retractions(select(Label, Retraction.id))
        .where(Label.annotator_id == annotator_id, Label.item_id == item_id)
        .order_by(Label.revision)
    ).all()
    return [(label, retraction_id is None) for label, retraction_id in rows]
