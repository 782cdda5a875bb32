"""The labeling queue: which item an annotator sees next, and submitting, skipping and undoing answers.

The web app and the simulated annotators both go through these functions, so they obey the same rules:

- an item is shown to an annotator at most once (unless they undo their answer to it);
- an item is *retired* once ``overlap`` different annotators gave it a live (non-skip) label; a
  retired item is never served again and a late submission for it is refused with
  :class:`ItemRetiredError`;
- the item an annotator is looking at is *reserved* for a while (``reservation_minutes``), so that
  ``overlap`` annotators are not all sent to an item that needs only one more label. When every open
  item is reserved by others, one of them is served anyway rather than leaving the annotator idle;
- an annotator may answer or skip only the item the queue serves them now (:func:`next_item`, or the
  item an :func:`undo` gave back), and only while it is open to them: not already answered or
  skipped by them and not retired. Anything else is refused (:class:`NotServedError`,
  :class:`AlreadyLabeledError`, :class:`ItemRetiredError`) and nothing is stored;
- every submission carries a client-chosen id; a retried request with the same id returns the stored
  answer instead of storing it twice;
- answers are stored in canonical terms (``first`` / ``second`` candidate of the item) together with
  the layout the annotator saw (``first_on_left``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rlhfkit.feedback.answers import (
    BINARY_CHOICES,
    PAIRWISE_CHOICES,
    SKIP,
    STRENGTH_MARGINS,
    STRENGTH_NAMES,
    STRENGTHS,
    AlreadyLabeledError,
    Answer,
    ClientIdConflictError,
    InvalidAnswerError,
    ItemRetiredError,
    LabelingError,
    NothingToUndoError,
    NotServedError,
    UnknownItemError,
    canonical_to_displayed,
    check_client_id,
    displayed_to_canonical,
    validate_answer,
)
from rlhfkit.feedback.live import (
    answered_by,
    live_count,
    live_counts,
    live_label_query,
    only_live,
    own_labels,
)
from rlhfkit.feedback.models import Item, Label, Reservation, Retraction
from rlhfkit.feedback.security import first_on_left
from rlhfkit.feedback.store import FeedbackStore, utcnow

# The answers, refusals and queries this module re-exports, so callers need only ``labeling``.
__all__ = [
    "BINARY_CHOICES", "PAIRWISE_CHOICES", "SKIP", "STRENGTHS", "STRENGTH_MARGINS", "STRENGTH_NAMES",
    "AlreadyLabeledError", "Answer", "ClientIdConflictError", "InvalidAnswerError", "ItemRetiredError",
    "ItemView", "Judgment", "LabelingError", "NotServedError", "NothingToUndoError", "Progress",
    "UnknownItemError",
    "canonical_to_displayed", "displayed_to_canonical", "live_label_query", "next_item", "progress", "skip",
    "submit", "undo", "utcnow", "validate_answer", "view_item",
]  # fmt: skip


@dataclass(frozen=True)
class Judgment:
    """A stored label or skip."""

    label_id: int
    item_id: int
    annotator_id: int
    choice: str
    strength: int | None
    toxic: tuple[bool, bool]
    comment: str | None
    first_on_left: bool | None
    created_at: datetime
    replayed: bool = False
    """True when this request repeated an earlier one (same client id) and nothing new was stored."""

    @property
    def answer(self) -> Answer:
        return Answer(choice=self.choice, strength=self.strength, toxic=self.toxic, comment=self.comment)


@dataclass(frozen=True)
class ItemView:
    """An item as one annotator is to see it."""

    item_id: int
    prompt: str
    candidates: tuple[str, ...]
    """Canonical order: ``candidates[0]`` is the item's first candidate."""
    reference: str | None
    first_on_left: bool | None
    """Pairwise: whether the first candidate is shown on the left for this annotator."""
    labels_so_far: int
    """Live labels the item already has from other annotators."""
    previous: Answer | None = None
    """This annotator's last retracted answer to the item (after an undo), to start from."""

    @property
    def left(self) -> str:
        return self.candidates[0] if self.first_on_left is not False else self.candidates[1]

    @property
    def right(self) -> str | None:
        if len(self.candidates) < 2:
            return None
        return self.candidates[1] if self.first_on_left else self.candidates[0]


@dataclass(frozen=True)
class Progress:
    done: int
    """Live labels (not skips) by this annotator."""
    skipped: int
    remaining: int
    """Items this annotator could still label (not retired, not yet answered or skipped by them)."""
    total_items: int
    retired_items: int


def _judgment(label: Label, replayed: bool = False) -> Judgment:
    return Judgment(
        label_id=label.id,
        item_id=label.item_id,
        annotator_id=label.annotator_id,
        choice=label.choice,
        strength=label.strength,
        toxic=(label.toxic_0, label.toxic_1),
        comment=label.comment,
        first_on_left=label.first_on_left,
        created_at=label.created_at,
        replayed=replayed,
    )


def _replay(session: Session, client_id: str, annotator_id: int, item_id: int) -> Judgment | None:
    """The judgment an earlier request with this client id stored, if any."""
    earlier = session.scalar(select(Label).where(Label.client_id == client_id))
    if earlier is None:
        return None
    if earlier.annotator_id != annotator_id or earlier.item_id != item_id:
        raise ClientIdConflictError(
            f"client id {client_id!r} was already used for another submission; send a fresh id per submission"
        )
    return _judgment(earlier, replayed=True)


# ------------------------------------------------------------------------------------------ actions


def next_item(store: FeedbackStore, annotator_id: int) -> ItemView | None:
    """The item this annotator should label now (the same one again until they answer it), or None."""
    overlap = store.project.overlap
    ttl = timedelta(minutes=store.config.reservation_minutes)

    def work(session: Session) -> ItemView | None:
        now = utcnow()
        reservation = session.get(Reservation, annotator_id)
        item_id = None
        if reservation is not None and _open_for(session, reservation.item_id, annotator_id, overlap):
            item_id = reservation.item_id
        else:
            counts = live_counts()
            n = func.coalesce(counts.c.n, 0)
            base = (
                select(Item.id)
                .outerjoin(counts, counts.c.item_id == Item.id)
                .where(Item.id.not_in(answered_by(annotator_id)), n < overlap)
                # Items closest to retirement first: finished items are the useful ones.
                .order_by(n.desc(), Item.id)
                .limit(1)
            )
            held = (
                select(Reservation.item_id.label("item_id"), func.count().label("r"))
                .where(Reservation.annotator_id != annotator_id, Reservation.reserved_at > now - ttl)
                .group_by(Reservation.item_id)
                .subquery()
            )
            unreserved = base.outerjoin(held, held.c.item_id == Item.id).where(
                n + func.coalesce(held.c.r, 0) < overlap
            )
            item_id = session.scalar(unreserved)
            if item_id is None:
                item_id = session.scalar(base)
        if item_id is None:
            if reservation is not None:
                session.delete(reservation)
            return None
        if reservation is None:
            session.add(Reservation(annotator_id=annotator_id, item_id=item_id, reserved_at=now))
        elif reservation.item_id != item_id:
            reservation.item_id = item_id
            reservation.reserved_at = now
        return _view(store, session, annotator_id, item_id)

    # Two tabs of one annotator may race to create the reservation row; the loser runs again.
    return store.write(work, retry_on_conflict=True)


def _open_for(session: Session, item_id: int, annotator_id: int, overlap: int) -> bool:
    if any(live for _, live in own_labels(session, annotator_id, item_id)):
        return False
    return live_count(session, item_id) < overlap


def _view(store: FeedbackStore, session: Session, annotator_id: int, item_id: int) -> ItemView:
    item = session.get(Item, item_id)
    assert item is not None
    own = own_labels(session, annotator_id, item_id)
    retracted = [label for label, live in own if not live and label.choice != SKIP]
    previous = _judgment(retracted[-1]).answer if retracted else None
    pairwise = item.candidate_1 is not None
    return ItemView(
        item_id=item.id,
        prompt=item.prompt,
        candidates=(item.candidate_0, item.candidate_1) if pairwise else (item.candidate_0,),  # type: ignore[arg-type]
        reference=item.reference,
        first_on_left=first_on_left(store.secret, annotator_id, item.id) if pairwise else None,
        labels_so_far=live_count(session, item_id),
        previous=previous,
    )


def view_item(store: FeedbackStore, annotator_id: int, item_id: int) -> ItemView:
    """How ``item_id`` looks to this annotator (for re-showing a form after a refused submission)."""

    def work(session: Session) -> ItemView:
        if session.get(Item, item_id) is None:
            raise UnknownItemError(f"there is no item {item_id}")
        return _view(store, session, annotator_id, item_id)

    return store.read(work)


def submit(
    store: FeedbackStore,
    annotator_id: int,
    item_id: int,
    answer: Answer,
    client_id: str,
) -> Judgment:
    """Store one answer (one transaction); a repeated ``client_id`` returns the stored answer instead."""
    answer = validate_answer(answer, store.project.question_type, store.config.max_comment_chars)
    check_client_id(client_id)
    overlap = store.project.overlap
    pairwise = store.project.question_type == "pairwise"

    def work(session: Session) -> Judgment:
        replayed = _replay(session, client_id, annotator_id, item_id)
        if replayed is not None:
            return replayed
        own, reservation = _claim(session, annotator_id, item_id, overlap, "answer")
        now = utcnow()
        seconds = (now - reservation.reserved_at).total_seconds()
        session.delete(reservation)
        label = Label(
            item_id=item_id,
            annotator_id=annotator_id,
            revision=len(own),
            client_id=client_id,
            choice=answer.choice,
            strength=answer.strength,
            toxic_0=answer.toxic[0],
            toxic_1=answer.toxic[1],
            comment=answer.comment,
            first_on_left=first_on_left(store.secret, annotator_id, item_id) if pairwise else None,
            seconds_spent=seconds,
            created_at=now,
        )
        session.add(label)
        session.flush()
        return _judgment(label)

    # A concurrent duplicate (same client id, or same annotator and item) loses on a unique constraint;
    # running again then finds the winner and replays it or explains the refusal.
    return store.write(work, retry_on_conflict=True)


def _claim(
    session: Session, annotator_id: int, item_id: int, overlap: int, what: str
) -> tuple[list[tuple[Label, bool]], Reservation]:
    """Check that the annotator may answer or skip the item now; their labels on it and their reservation.

    Allowed only for the item the queue serves them now (their reservation; an undo serves its item
    again), while it is still open to them: not answered or skipped by them, not retired.
    """
    # Lock the item row (PostgreSQL) so the retirement check and the insert are not interleaved with
    # another annotator's submission; SQLite's BEGIN IMMEDIATE already serialises all writers.
    if session.scalar(select(Item.id).where(Item.id == item_id).with_for_update()) is None:
        raise UnknownItemError(f"there is no item {item_id}")
    own = own_labels(session, annotator_id, item_id)
    if any(live for _, live in own):
        raise AlreadyLabeledError(
            f"you already answered (or skipped) item {item_id}; undo that answer first to change it"
        )
    if live_count(session, item_id) >= overlap:
        raise ItemRetiredError(
            f"item {item_id} already has its {overlap} label(s) from other annotators and is retired; "
            f"your {what} was not stored, go on with the next item"
        )
    reservation = session.scalar(
        select(Reservation).where(Reservation.annotator_id == annotator_id).with_for_update()
    )
    if reservation is None or reservation.item_id != item_id:
        # Otherwise a client could pick its items (or pass on ones never shown), bypassing the queue.
        raise NotServedError(
            f"item {item_id} was not served to you (or is no longer yours to answer), so your {what} was "
            "not stored; answer the item the labeling page shows you now"
        )
    return own, reservation


def skip(store: FeedbackStore, annotator_id: int, item_id: int, client_id: str) -> Judgment:
    """Pass on an item: this annotator will not be shown it again (unless they undo the skip)."""
    check_client_id(client_id)

    def work(session: Session) -> Judgment:
        replayed = _replay(session, client_id, annotator_id, item_id)
        if replayed is not None:
            return replayed
        own, reservation = _claim(session, annotator_id, item_id, store.project.overlap, "skip")
        session.delete(reservation)
        now = utcnow()
        label = Label(
            item_id=item_id,
            annotator_id=annotator_id,
            revision=len(own),
            client_id=client_id,
            choice=SKIP,
            created_at=now,
        )
        session.add(label)
        session.flush()
        return _judgment(label)

    return store.write(work, retry_on_conflict=True)


def undo(store: FeedbackStore, annotator_id: int, client_id: str) -> Judgment:
    """Retract this annotator's most recent live label or skip; returns what was retracted.

    The retraction is a new row. The undone item becomes the annotator's current item again, and the
    retracted answer is offered as the starting point (:attr:`ItemView.previous`).
    """
    check_client_id(client_id)

    def work(session: Session) -> Judgment:
        earlier = session.scalar(select(Retraction).where(Retraction.client_id == client_id))
        if earlier is not None:
            label = session.get(Label, earlier.label_id)
            assert label is not None
            if label.annotator_id != annotator_id:
                raise ClientIdConflictError(f"client id {client_id!r} was already used by someone else")
            return _judgment(label, replayed=True)
        last = session.scalar(
            live_label_query().where(Label.annotator_id == annotator_id).order_by(Label.id.desc()).limit(1)
        )
        if last is None:
            raise NothingToUndoError(
                "there is nothing to undo: you have no answers or skips left to take back"
            )
        now = utcnow()
        session.add(Retraction(label_id=last.id, client_id=client_id, created_at=now))
        reservation = session.get(Reservation, annotator_id)
        if reservation is None:
            session.add(Reservation(annotator_id=annotator_id, item_id=last.item_id, reserved_at=now))
        else:
            reservation.item_id = last.item_id
            reservation.reserved_at = now
        return _judgment(last)

    # Two undos at once may pick the same label; the retraction's unique key sends one back to pick the next.
    return store.write(work, retry_on_conflict=True)


def progress(store: FeedbackStore, annotator_id: int) -> Progress:
    """Done / skipped / remaining for one annotator, and project-wide totals."""
    overlap = store.project.overlap

    def work(session: Session) -> Progress:
        by_choice = session.execute(
            only_live(select(Label.choice, func.count()))
            .where(Label.annotator_id == annotator_id)
            .group_by(Label.choice)
        ).all()
        skipped = sum(count for choice, count in by_choice if choice == SKIP)
        done = sum(count for choice, count in by_choice if choice != SKIP)
        counts = live_counts()
        n = func.coalesce(counts.c.n, 0)
        total = session.scalar(select(func.count()).select_from(Item)) or 0
        retired = session.scalar(select(func.count()).select_from(counts).where(counts.c.n >= overlap)) or 0
        remaining = (
            session.scalar(
                select(func.count())
                .select_from(Item)
                .outerjoin(counts, counts.c.item_id == Item.id)
                .where(Item.id.not_in(answered_by(annotator_id)), n < overlap)
            )
            or 0
        )
        return Progress(
            done=done,
            skipped=skipped,
            remaining=remaining,
            total_items=total,
            retired_items=retired,
        )

    return store.read(work)
