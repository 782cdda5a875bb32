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
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, inspect, select
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
from rlhfkit.feedback.models import SCHEMA_VERSION, Annotator, Base, LoginSession, Project
from rlhfkit.feedback.security import hash_token, new_token

T = TypeVar("T")

ANNOTATOR_KINDS = ("human", "simulated", "imported")
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,99}$")


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


@dataclass(frozen=True)
class AnnotatorInfo:
    id: int
    name: str
    kind: str
    """``human``, ``simulated`` or ``imported``."""
    is_admin: bool


def _annotator_info(row: Annotator) -> AnnotatorInfo:
    return AnnotatorInfo(id=row.id, name=row.name, kind=row.kind, is_admin=row.is_admin)


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

    # ------------------------------------------------------------------------------------ annotators

    def add_annotator(
        self, name: str, *, admin: bool = False, kind: str = "human"
    ) -> tuple[AnnotatorInfo, str | None]:
        """Create an annotator; returns it and, for humans, its login token (shown once, stored hashed)."""
        _check_name(name)
        if kind not in ANNOTATOR_KINDS:
            raise RlhfkitError(f"unknown annotator kind {kind!r}; choose one of {', '.join(ANNOTATOR_KINDS)}")
        token = new_token() if kind == "human" else None

        def work(session: Session) -> AnnotatorInfo:
            if session.scalar(select(Annotator.id).where(Annotator.name == name)) is not None:
                raise RlhfkitError(
                    f"annotator {name!r} already exists; pick another name, or issue a new token for it "
                    "with `rlhfkit feedback add-annotator NAME --new-token`"
                )
            row = Annotator(
                name=name,
                kind=kind,
                is_admin=admin,
                token_hash=hash_token(token) if token else None,
                created_at=utcnow(),
            )
            session.add(row)
            session.flush()
            return _annotator_info(row)

        try:
            return self.write(work), token
        except IntegrityError:  # a concurrent add of the same name won the race
            raise RlhfkitError(f"annotator {name!r} already exists; pick another name") from None

    def issue_token(self, name: str, *, admin: bool | None = None) -> str:
        """A new login token for a human annotator; the previous token and its sessions stop working."""
        token = new_token()

        def work(session: Session) -> None:
            row = session.scalar(select(Annotator).where(Annotator.name == name))
            if row is None:
                raise RlhfkitError(
                    f"no annotator named {name!r}; create it with `rlhfkit feedback add-annotator {name}`"
                )
            if row.kind != "human":
                raise RlhfkitError(f"annotator {name!r} is {row.kind}, not human, and cannot log in")
            row.token_hash = hash_token(token)
            if admin is not None:
                row.is_admin = admin
            for login in session.scalars(select(LoginSession).where(LoginSession.annotator_id == row.id)):
                session.delete(login)

        self.write(work)
        return token

    def ensure_annotator(self, name: str, kind: str) -> AnnotatorInfo:
        """The annotator called ``name``, created (without a token) when missing; for scripts and imports."""
        _check_name(name)
        existing = self.annotator(name)
        if existing is not None:
            if existing.kind != kind:
                raise RlhfkitError(f"annotator {name!r} already exists as {existing.kind}, not {kind}")
            return existing
        try:
            return self.add_annotator(name, kind=kind)[0]
        except RlhfkitError:
            found = self.annotator(name)  # created concurrently by another process
            if found is None:
                raise
            return found

    def annotator(self, name: str) -> AnnotatorInfo | None:
        row = self.read(lambda s: s.scalar(select(Annotator).where(Annotator.name == name)))
        return _annotator_info(row) if row else None

    def annotators(self) -> list[AnnotatorInfo]:
        rows = self.read(lambda s: list(s.scalars(select(Annotator).order_by(Annotator.id))))
        return [_annotator_info(r) for r in rows]

    def annotator_by_token(self, token: str) -> AnnotatorInfo | None:
        """The human annotator whose login token this is, or None."""
        if not token or len(token) > 200:
            return None
        digest = hash_token(token)
        row = self.read(lambda s: s.scalar(select(Annotator).where(Annotator.token_hash == digest)))
        return _annotator_info(row) if row and row.kind == "human" else None

    # -------------------------------------------------------------------------------------- sessions

    def create_session(self, annotator_id: int) -> str:
        """A new login session for the annotator; returns its token (for the session cookie)."""
        token = new_token()
        now = utcnow()

        def work(session: Session) -> None:
            # Expired sessions are garbage; clearing them on login keeps the table small.
            for old in session.scalars(select(LoginSession).where(LoginSession.expires_at < now)):
                session.delete(old)
            session.add(
                LoginSession(
                    token_hash=hash_token(token),
                    annotator_id=annotator_id,
                    created_at=now,
                    expires_at=now + timedelta(hours=self.config.session_hours),
                )
            )

        self.write(work)
        return token

    def session_annotator(self, session_token: str) -> AnnotatorInfo | None:
        """The annotator logged in with this session token, or None when unknown or expired."""
        if not session_token or len(session_token) > 200:
            return None
        digest = hash_token(session_token)

        def work(session: Session) -> Annotator | None:
            login = session.scalar(select(LoginSession).where(LoginSession.token_hash == digest))
            if login is None or login.expires_at < utcnow():
                return None
            return session.get(Annotator, login.annotator_id)

        row = self.read(work)
        return _annotator_info(row) if row else None

    def end_session(self, session_token: str) -> None:
        """Log out: the session token stops working."""
        digest = hash_token(session_token or "")

        def work(session: Session) -> None:
            login = session.scalar(select(LoginSession).where(LoginSession.token_hash == digest))
            if login is not None:
                session.delete(login)

        self.write(work)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise RlhfkitError(
            f"annotator name {name!r} is not allowed; use 1-100 letters, digits and _ . : @ + - "
            "starting with a letter or digit"
        )
