"""Fixtures for the feedback tests: stores on SQLite and on a real PostgreSQL server started here.

The PostgreSQL server comes from Debian's packages (``postgresql``; ``scripts/install-test-extras.sh``
installs it). The session starts one throw-away cluster (initdb + pg_ctl, as the ``postgres`` user
when the tests run as root, since the server refuses to run as root) and every test starts from a
database without feedback tables. Set ``RLHFKIT_TEST_POSTGRES_URL`` to use an existing server instead:
a database whose feedback tables may be dropped. Without the server the PostgreSQL variants are skipped, except on CI
(``CI=true``), where they fail: CI must exercise them.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ON_CI = os.environ.get("CI") == "true"


def skip_or_fail(reason: str) -> None:
    """Skip locally, fail on CI (where every test must run)."""
    if ON_CI:
        pytest.fail(f"{reason} (CI=true, so this is an error rather than a skip)")
    pytest.skip(reason)


def _postgres_bindir() -> str | None:
    for candidate in sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True
    ):
        if os.path.exists(os.path.join(candidate, "initdb")):
            return candidate
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """A throw-away PostgreSQL cluster, or an existing server given by URL."""

    def __init__(self, admin_url: str, stop: list[str] | None = None, base: str | None = None) -> None:
        self.admin_url = admin_url
        self._stop = stop
        self._base = base

    def new_database(self) -> str:
        """The URL of the test database, emptied of feedback tables (faster than a database per test)."""
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        from rlhfkit.feedback.models import Base

        url = make_url(self.admin_url).set(drivername="postgresql+psycopg")
        engine = create_engine(url)
        Base.metadata.drop_all(engine)
        engine.dispose()
        return url.render_as_string(hide_password=False)

    def shutdown(self) -> None:
        if self._stop:
            subprocess.run(self._stop, check=False, capture_output=True, timeout=60)
        if self._base:
            shutil.rmtree(self._base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    given = os.environ.get("RLHFKIT_TEST_POSTGRES_URL")
    if given:
        yield PostgresServer(given)
        return
    bindir = _postgres_bindir()
    if bindir is None:
        skip_or_fail(
            "PostgreSQL server binaries (initdb, pg_ctl) not found; install Debian's postgresql package"
        )
    base = tempfile.mkdtemp(prefix="rlhfkit-pg-")
    as_user: list[str] = []
    if os.geteuid() == 0:
        # The server refuses to run as root; run it as the postgres user the Debian package creates.
        import pwd

        try:
            postgres = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(base, ignore_errors=True)
            skip_or_fail("running as root and there is no 'postgres' user to run the PostgreSQL server as")
        os.chown(base, postgres.pw_uid, postgres.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data = os.path.join(base, "data")
    port = _free_port()
    initdb = as_user + [
        f"{bindir}/initdb",
        "-D",
        data,
        "-U",
        "postgres",
        "--auth=trust",
        "-E",
        "UTF8",
        "--no-sync",
    ]
    result = subprocess.run(initdb, check=False, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"initdb failed: {result.stderr[-2000:]}")
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c max_connections=50"
    start = as_user + [
        f"{bindir}/pg_ctl",
        "-D",
        data,
        "-o",
        options,
        "-l",
        f"{base}/server.log",
        "-w",
        "-t",
        "60",
        "start",
    ]
    result = subprocess.run(start, check=False, capture_output=True, text=True, timeout=90)
    if result.returncode != 0:
        log = (
            Path(base, "server.log").read_text(errors="replace") if Path(base, "server.log").exists() else ""
        )
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"pg_ctl start failed: {result.stderr[-1000:]} {log[-2000:]}")
    server = PostgresServer(
        f"postgresql://postgres@127.0.0.1:{port}/postgres",
        # Immediate: no shutdown checkpoint, the cluster is thrown away anyway.
        stop=as_user + [f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"],
        base=base,
    )
    try:
        yield server
    finally:
        server.shutdown()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL (or path) where a new store can be created, once for each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "feedback.sqlite")
    return request.getfixturevalue("postgres_server").new_database()


@pytest.fixture
def sqlite_path(tmp_path: Path) -> str:
    return str(tmp_path / "feedback.sqlite")
