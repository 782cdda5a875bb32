"""The database behind a feedback store: from a path or URL to an engine, and its failures as messages.

- :func:`resolve_url` and :func:`make_engine`: a SQLite path or a PostgreSQL URL, and the engine with
  the SQLite settings the store relies on (WAL, ``synchronous=FULL``, busy timeout, ``BEGIN IMMEDIATE``);
- :class:`StoreError` and the rules for what a database failure means: retry it, the store is
  unreachable, busy past every retry (:class:`StoreBusyError`), or on a full disk
  (:class:`StoreFullError`). The web app answers the last two with 503 and a Retry-After.

:mod:`rlhfkit.feedback.store` builds the store on top of this.
"""

from __future__ import annotations

import errno
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError

from rlhfkit.errors import RlhfkitError
from rlhfkit.feedback.config import FeedbackConfig

# SQLSTATEs after which PostgreSQL expects the client to run the transaction again.
_PG_RETRYABLE = {"40001", "40P01", "55P03"}
# PostgreSQL's disk_full; SQLite says SQLITE_FULL as "database or disk is full".
_PG_DISK_FULL = "53100"
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


class StoreError(RlhfkitError):
    """The store cannot be created, opened or reached."""


class StoreBusyError(StoreError):
    """Another writer held the store's lock through every retry; the same request may succeed soon."""


class StoreFullError(StoreError):
    """The disk (or quota) under the store is full: nothing can be written until someone makes room."""


def display(url: URL) -> str:
    """The URL for messages, any password hidden."""
    return url.render_as_string(hide_password=True)


def resolve_url(target: str | Path) -> URL:
    """A SQLAlchemy URL from a database URL or a file path (a path means SQLite)."""
    text = str(target).strip()
    if not text:
        raise StoreError("the store is empty: give a file path (SQLite) or a database URL (postgresql://...)")
    if "://" not in text:
        return URL.create("sqlite", database=str(Path(text).expanduser().resolve()))
    try:
        url = make_url(text)
    except ArgumentError:
        raise StoreError(
            f"{text!r} is not a valid database URL (expected e.g. postgresql://user@host/db)"
        ) from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise StoreError("an in-memory SQLite store would vanish with the process; give a file path")
        return url
    if backend == "postgresql":
        # psycopg 3 is the driver we ship with (the feedback extra); plain postgresql:// would pick psycopg2.
        return url.set(drivername="postgresql+psycopg") if url.drivername == "postgresql" else url
    raise StoreError(
        f"unsupported database {backend!r} in {display(url)}; use a SQLite path or postgresql://"
    )


def make_engine(url: URL, config: FeedbackConfig) -> Engine:
    if url.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": config.busy_timeout_ms / 1000})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            # Let SQLAlchemy's "begin" event below emit BEGIN itself (pysqlite's own is deferred-only).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(config.busy_timeout_ms)}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection):
            immediate = connection.get_execution_options().get("feedback_write", False)
            connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    try:
        return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    except NoSuchModuleError:
        raise StoreError(
            f"no driver for {display(url)}; install the feedback extra (pip install 'rlhfkit[feedback]'), "
            "which brings psycopg"
        ) from None
    except ModuleNotFoundError as exc:
        raise StoreError(
            f"the database driver for {display(url)} is not installed ({exc.name}); "
            "install the feedback extra: pip install 'rlhfkit[feedback]'"
        ) from None


def default_name(url: URL) -> str:
    if url.get_backend_name() == "sqlite":
        return Path(url.database or "feedback").stem
    return url.database or "feedback"


def is_retryable(exc: DBAPIError) -> bool:
    """A lock timeout, serialization failure or deadlock: running the transaction again may succeed."""
    if isinstance(exc, OperationalError) and exc.orig is not None:
        message = str(exc.orig).lower()
        if "database is locked" in message or "database is busy" in message:
            return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return sqlstate in _PG_RETRYABLE


def connect_check(engine: Engine, url: URL) -> None:
    """Open one connection now, so that an unreachable or unreadable store fails with a useful message."""
    try:
        with engine.connect() as connection:
            if url.get_backend_name() == "sqlite":
                connection.exec_driver_sql("SELECT count(*) FROM sqlite_master").all()
    except DBAPIError as exc:
        message = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        if url.get_backend_name() == "sqlite":
            raise StoreError(
                f"cannot open the SQLite store {url.database}: {message}; check the path, its "
                "permissions, and that it is a feedback store and not some other file"
            ) from None
        raise StoreError(
            f"cannot connect to the store {display(url)}: {message}. Check that the database server is "
            "running and that the URL (host, port, user, password, database name) is right"
        ) from None


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk or quota under the store is full, whichever layer reported it."""
    if isinstance(exc, OSError):
        return exc.errno in _FULL_ERRNOS
    if not isinstance(exc, DBAPIError) or exc.orig is None:
        return False
    if getattr(exc.orig, "sqlstate", None) == _PG_DISK_FULL:
        return True
    message = str(exc.orig).lower()
    return "database or disk is full" in message or "no space left on device" in message


def busy_error(url: URL, attempts: int, exc: DBAPIError) -> StoreBusyError:
    return StoreBusyError(
        f"the store {display(url)} stayed busy after {attempts} attempts ({exc.orig}); retry, or look for "
        "a stuck process holding the database"
    )


def full_error(url: URL, exc: BaseException) -> StoreFullError:
    detail = exc.orig if isinstance(exc, DBAPIError) else exc
    return StoreFullError(
        f"the store {display(url)} cannot save anything: no space left on device ({detail}). Nothing was "
        "written; free space on the disk (or raise the quota) that holds the store, then retry"
    )


class translate_store_errors:
    """Turn a connection lost mid-work or a full disk into a :class:`StoreError` that says what to do."""

    def __init__(self, url: URL) -> None:
        self.url = url

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, _tb: object) -> bool:
        if exc is not None and is_disk_full(exc):
            # The transaction is rolled back; the one-line cause is kept, the driver's SQL dump is not.
            raise full_error(self.url, exc) from None
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            raise StoreError(
                f"lost the connection to the store {display(self.url)} ({exc.orig}); check that the database "
                "server is still running, then retry"
            ) from None
        return False
