"""The durable preference store: one feedback project in SQLite (default) or PostgreSQL (by URL).

Durability and concurrency
--------------------------
- SQLite runs in WAL mode with ``synchronous=FULL`` (a commit is on disk when it returns, even after a
  power cut) and a busy timeout. Write transactions start with ``BEGIN IMMEDIATE`` so they take the
  write lock up front: a deferred transaction that upgrades from reader to writer can fail instantly
  with SQLITE_BUSY in WAL mode, without waiting for the busy timeout.
- PostgreSQL uses READ COMMITTED; a label submission locks its item row (``SELECT ... FOR UPDATE``) so
  the retirement check and the insert happen one submission at a time per item.
- Every unit of work is one transaction (:meth:`FeedbackStore.write`), retried with back-off when the
  database reports a lock timeout, a serialization failure or a deadlock.
- Only bound parameters reach SQL: every statement is built with SQLAlchemy expressions.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, inspect
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from rlhfkit.errors import RlhfkitError
from rlhfkit.feedback.backend import (
    StoreError,
    busy_error,
    connect_check,
    default_name,
    display,
    is_retryable,
    make_engine,
    resolve_url,
    translate_store_errors,
)
from rlhfkit.feedback.config import QUESTION_TYPES, FeedbackConfig
from rlhfkit.feedback.models import SCHEMA_VERSION, Base, Project

T = TypeVar("T")



def utcnow() -> datetime:
    """Naive UTC now: both backends store it unchanged and compare it correctly."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def check_text(value: str, field: str) -> str:
    """Refuse text that a database would mangle or reject (PostgreSQL refuses NUL characters)."""
    if not isinstance(value, str):
        raise RlhfkitError(f"{field} must be text, not {type(value).__name__}")
    if "\x00" in value:
        raise RlhfkitError(f"{field} contains a NUL character (\\x00); remove it before storing the text")
    return value


@dataclass(frozen=True)
class ProjectInfo:
    name: str
    question_type: str
    """``pairwise`` or ``binary``."""
    overlap: int
    """How many different annotators label an item before it is retired."""
    schema_version: int
    created_at: datetime


class FeedbackStore:
    """A handle on one feedback project; open it with :meth:`create` or :meth:`open`.

    Thread-safe: each unit of work checks a connection out of the engine's pool.
    """

    def __init__(self, engine: Engine, url: URL, config: FeedbackConfig) -> None:
        self._engine = engine
        self._write_engine = engine.execution_options(feedback_write=True)
        self.url = url
        self.config = config
        project = self._load_project()
        self.project = ProjectInfo(
            name=project.name,
            question_type=project.question_type,
            overlap=project.overlap,
            schema_version=project.schema_version,
            created_at=project.created_at,
        )
        self.secret = project.secret

    # ------------------------------------------------------------------------------------ lifecycle

    @classmethod
    def create(
        cls,
        target: str | Path,
        *,
        question_type: str | None = None,
        overlap: int | None = None,
        name: str | None = None,
        config: FeedbackConfig | None = None,
    ) -> FeedbackStore:
        """Create a new feedback project at a SQLite path or a database URL; refuse to overwrite one.

        ``question_type`` and ``overlap`` default to the config's (``pairwise``, 3).
        """
        config = config or FeedbackConfig()
        question_type = config.question_type if question_type is None else question_type
        overlap = config.overlap if overlap is None else overlap
        if question_type not in QUESTION_TYPES:
            raise StoreError(
                f"unknown question type {question_type!r}; choose one of {', '.join(QUESTION_TYPES)}"
            )
        if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 1:
            raise StoreError(f"overlap must be a whole number of annotators >= 1, not {overlap!r}")
        url = resolve_url(target)
        if url.get_backend_name() == "sqlite":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)  # type: ignore[arg-type]
        engine = make_engine(url, config)
        try:
            connect_check(engine, url)
            with translate_store_errors(url):
                if inspect(engine).has_table(Project.__tablename__):
                    raise StoreError(
                        f"{display(url)} already holds a feedback project; open it instead, "
                        "or choose another path or database"
                    )
                Base.metadata.create_all(engine)
                with Session(engine.execution_options(feedback_write=True)) as session, session.begin():
                    session.add(
                        Project(
                            id=1,
                            schema_version=SCHEMA_VERSION,
                            name=name or default_name(url),
                            question_type=question_type,
                            overlap=overlap,
                            secret=secrets.token_hex(32),
                            created_at=utcnow(),
                        )
                    )
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, url, config)

    @classmethod
    def open(cls, target: str | Path, *, config: FeedbackConfig | None = None) -> FeedbackStore:
        """Open an existing feedback project; a clear error when there is none or it cannot be reached."""
        config = config or FeedbackConfig()
        url = resolve_url(target)
        if url.get_backend_name() == "sqlite" and not Path(url.database).is_file():  # type: ignore[arg-type]
            # Connecting would silently create an empty database file.
            raise StoreError(
                f"no feedback project at {url.database}; create one with `rlhfkit feedback init --store {target}`"
            )
        engine = make_engine(url, config)
        try:
            connect_check(engine, url)
            with translate_store_errors(url):
                if not inspect(engine).has_table(Project.__tablename__):
                    raise StoreError(
                        f"{display(url)} is a database but holds no feedback project; "
                        f"create one with `rlhfkit feedback init --store {target}`"
                    )
                return cls(engine, url, config)
        except BaseException:
            engine.dispose()
            raise

    def close(self) -> None:
        """Release all pooled connections."""
        self._engine.dispose()

    def __enter__(self) -> FeedbackStore:  # noqa: PYI034 - Self needs Python 3.11; we support 3.10
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _load_project(self) -> Project:
        with translate_store_errors(self.url), Session(self._engine, expire_on_commit=False) as session:
            project = session.get(Project, 1)
        if project is None:
            raise StoreError(
                f"{display(self.url)} has an empty feedback_project table; it is not a usable project"
            )
        version = project.schema_version
        # SQLite keeps whatever a hand edit put in the column ('abc', '', 1.5); only a whole number is a version.
        if isinstance(version, bool) or not isinstance(version, int):
            raise StoreError(
                f"the store schema version is unreadable ({version!r}, expected a whole number such as "
                f"{SCHEMA_VERSION}) in the feedback_project table of {display(self.url)}; the table was edited "
                "or damaged. Restore the store from a backup, or, if you know it was written by this rlhfkit, "
                f"set feedback_project.schema_version back to {SCHEMA_VERSION}"
            )
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{display(self.url)} has store schema version {version}, this rlhfkit reads "
                f"version {SCHEMA_VERSION}; "
                + ("upgrade rlhfkit" if version > SCHEMA_VERSION else "export it with the older rlhfkit")
            )
        return project

    @property
    def display_url(self) -> str:
        """The store's URL with any password hidden, for messages."""
        return display(self.url)

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.url.get_backend_name()

    # ---------------------------------------------------------------------------------- transactions

    def write(self, work: Callable[[Session], T], *, retry_on_conflict: bool = False) -> T:
        """Run ``work`` in one write transaction; commit when it returns, roll back when it raises.

        Retried (from scratch, with jittered back-off) after a lock timeout, a serialization failure or
        a deadlock, and, with ``retry_on_conflict``, after a unique-constraint violation: ``work`` then
        sees the row the concurrent transaction committed and can act on it (e.g. idempotent replay).
        """
        return self._run(self._write_engine, work, retry_on_conflict)

    def read(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in one read transaction (a consistent snapshot on SQLite)."""
        return self._run(self._engine, work, False)

    def _run(self, engine: Engine, work: Callable[[Session], T], retry_on_conflict: bool) -> T:
        attempts = self.config.write_retries + 1
        for attempt in range(attempts):
            try:
                with (
                    translate_store_errors(self.url),
                    Session(engine, expire_on_commit=False) as session,
                    session.begin(),
                ):
                    return work(session)
            except IntegrityError:
                if not retry_on_conflict or attempt == attempts - 1:
                    raise
            except DBAPIError as exc:
                if not is_retryable(exc):
                    raise
                if attempt == attempts - 1:
                    raise busy_error(self.url, attempts, exc) from exc
            time.sleep(min(1.0, 0.02 * 2**attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
