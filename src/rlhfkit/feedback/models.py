"""The tables of the preference store (SQLAlchemy 2 declarative models).

Labels are append-only. Undo inserts a :class:`Retraction` that points at a label; nothing is ever
updated or deleted in ``feedback_labels`` or ``feedback_retractions``. A label is *live* when no
retraction points at it. A skip is a label with choice ``skip``: it hides the item from that
annotator (until undone) but never counts towards retirement, agreement or export.

"At most one live label per (annotator, item)" is enforced by the database without mutable flags:
each new label of an annotator on an item gets ``revision`` = the number of earlier labels of that
pair, and (annotator, item, revision) is unique. The store only inserts revision k after reading that
revisions 0..k-1 are all retracted, and retractions are permanent, so two live labels of one pair
would need two inserts of the same revision, which the unique constraint refuses.

Sessions and reservations are bookkeeping of the web app, not labels, and may be updated.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 1
"""Bumped whenever a table changes; a store written by another version is refused with a clear error."""


class Base(DeclarativeBase):
    pass


class Project(Base):
    """The single row describing the feedback project held by this database."""

    __tablename__ = "feedback_project"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    schema_version: Mapped[int] = mapped_column(Integer, nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    question_type: Mapped[str] = mapped_column(String(20), nullable=False)
    overlap: Mapped[int] = mapped_column(Integer, nullable=False)
    # Keys the HMACs of CSRF tokens and of the left/right layout; random per project, never shown.
    secret: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)


class Annotator(Base):
    __tablename__ = "feedback_annotators"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    # "human" (logs in with a token), "simulated" (scripted), "imported" (a labeler in an imported file).
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    is_admin: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # SHA-256 of the login token; the token itself is printed once and never stored.
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)


class Item(Base):
    """A prompt with two candidates (pairwise) or one candidate (binary) to be judged."""

    __tablename__ = "feedback_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt: Mapped[str] = mapped_column(Text, nullable=False)
    candidate_0: Mapped[str] = mapped_column(Text, nullable=False)
    candidate_1: Mapped[str | None] = mapped_column(Text)
    source_0: Mapped[str | None] = mapped_column(String(200))
    source_1: Mapped[str | None] = mapped_column(String(200))
    reference: Mapped[str | None] = mapped_column(Text)
    """A reference answer (e.g. the human summary) shown to annotators on request."""
    metadata_json: Mapped[str | None] = mapped_column(Text)
    # SHA-256 of the prompt and the (unordered) candidates: the same comparison is stored once.
    content_key: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)


class Label(Base):
    """One annotator's answer about one item (append-only)."""

    __tablename__ = "feedback_labels"
    __table_args__ = (
        UniqueConstraint("annotator_id", "item_id", "revision", name="uq_feedback_label_revision"),
        Index("ix_feedback_labels_item", "item_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("feedback_items.id"), nullable=False)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("feedback_annotators.id"), nullable=False)
    revision: Mapped[int] = mapped_column(Integer, nullable=False)
    # Idempotency key chosen by the client: a retried request with the same key is stored once.
    client_id: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    # pairwise: first | second | tie | both_bad;  binary: good | bad;  both: skip.
    choice: Mapped[str] = mapped_column(String(20), nullable=False)
    # 1 slightly, 2 clearly, 3 much better; only for first/second.
    strength: Mapped[int | None] = mapped_column(SmallInteger)
    # TRL margin as stated by an imported file; None for labels made here (derived from strength).
    margin: Mapped[float | None] = mapped_column(Float)
    toxic_0: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    toxic_1: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    comment: Mapped[str | None] = mapped_column(Text)
    # Which candidate this annotator saw on the left (pairwise only): the layout is part of the record.
    first_on_left: Mapped[bool | None] = mapped_column(Boolean)
    seconds_spent: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)


class Retraction(Base):
    """An undo: the label it points at is no longer live (append-only)."""

    __tablename__ = "feedback_retractions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    label_id: Mapped[int] = mapped_column(ForeignKey("feedback_labels.id"), nullable=False, unique=True)
    client_id: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)


class Reservation(Base):
    """The item an annotator is looking at now; held back from others for a while."""

    __tablename__ = "feedback_reservations"

    annotator_id: Mapped[int] = mapped_column(ForeignKey("feedback_annotators.id"), primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("feedback_items.id"), nullable=False, index=True)
    reserved_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)


class LoginSession(Base):
    __tablename__ = "feedback_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("feedback_annotators.id"), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
