"""The app when the store cannot take a write (lock held too long, disk full), and what error replies reveal."""

from __future__ import annotations

import errno
import logging
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from test_feedback_app import client_for, forms, login, submit

from rlhfkit.feedback import labeling
from rlhfkit.feedback.annotators import add_annotator
from rlhfkit.feedback.app import create_app
from rlhfkit.feedback.backend import StoreFullError
from rlhfkit.feedback.config import FeedbackConfig
from rlhfkit.feedback.export import live_labels
from rlhfkit.feedback.guard import SECURITY_HEADERS
from rlhfkit.feedback.items import add_comparisons
from rlhfkit.feedback.store import FeedbackStore

# A short busy timeout and one retry: a held lock turns into an error after ~0.1 s instead of ~30 s.
IMPATIENT = FeedbackConfig(busy_timeout_ms=50, write_retries=1)
NOTE = "my careful note about both summaries"


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "labels.sqlite"


@pytest.fixture
def store(store_path: Path) -> Iterator[FeedbackStore]:
    store = FeedbackStore.create(store_path, overlap=1, name="demo", config=IMPATIENT)
    add_comparisons(store, ["first prompt", "second prompt"], [["a1", "a2"], ["b1", "b2"]])
    yield store
    store.close()


@pytest.fixture
def token(store: FeedbackStore) -> str:
    return add_annotator(store, "alice")[1]


@contextmanager
def write_lock_held(path: Path) -> Iterator[None]:
    """Another connection holds the SQLite write lock (as a stuck writer or a long backup would)."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


@contextmanager
def label_inserts_fail(store: FeedbackStore, error: Exception) -> Iterator[None]:
    """Every INSERT of a label fails in the driver with ``error``, as on a full disk."""

    def fail(_conn, _cursor, statement, *_args) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO FEEDBACK_LABELS"):
            raise error

    event.listen(store._engine, "before_cursor_execute", fail)
    try:
        yield
    finally:
        event.remove(store._engine, "before_cursor_execute", fail)


DISK_FULL = [
    pytest.param(lambda: sqlite3.OperationalError("database or disk is full"), id="sqlite-full"),
    pytest.param(lambda: OSError(errno.ENOSPC, "No space left on device"), id="enospc"),
]


def assert_store_trouble(response, store_path: Path) -> None:
    """503 with Retry-After and the security headers, and nothing about where the store lives."""
    assert response.status_code == 503, response.text[:500]
    assert int(response.headers["retry-after"]) > 0
    for name, value in SECURITY_HEADERS:
        assert response.headers[name] == value, name
    for secret in (str(store_path), store_path.name, "sqlite:", "Traceback"):
        assert secret not in response.text, secret


def assert_answer_kept(response, page: str) -> None:
    """The label page again, with the annotator's choice, strength and comment still filled in."""
    kept = forms(response.text)["label-form"]
    sent = forms(page)["label-form"]
    assert kept["item_id"] == sent["item_id"]
    assert kept["client_id"] == sent["client_id"], "a retry must reuse the submission id"
    assert re.search(r'value="left"\s+data-key="a" checked', response.text)
    assert re.search(r'value="2"\s+data-key="2" checked', response.text)
    assert NOTE in response.text
    assert "not saved" in response.text


# ------------------------------------------------------------------------------------ lock timeout


def test_a_held_write_lock_answers_503_and_keeps_the_answer(
    store: FeedbackStore, store_path: Path, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_for(store)
    page = login(client, token)
    with caplog.at_level(logging.WARNING, logger="rlhfkit.feedback"), write_lock_held(store_path):
        response = submit(client, page, choice="left", strength="2", comment=NOTE)
    assert_store_trouble(response, store_path)
    assert_answer_kept(response, page)
    assert "busy" in response.text
    assert any("database is locked" in r.getMessage() for r in caplog.records), "the detail goes to the log"
    assert live_labels(store) == []

    # Once the lock is gone, sending the kept form again stores the answer, once.
    retry = {**forms(response.text)["label-form"], "choice": "left", "strength": "2", "comment": NOTE}
    assert client.post("/label", data=retry, follow_redirects=False).status_code == 303
    assert client.post("/label", data=retry, follow_redirects=False).status_code == 303
    (record,) = live_labels(store)
    assert record.comment == NOTE and record.strength == 2


def test_a_held_write_lock_on_other_pages_answers_503(
    store: FeedbackStore, store_path: Path, token: str
) -> None:
    client = client_for(store)
    page = login(client, token)
    with write_lock_held(store_path):
        shown = client.get("/label")  # serving an item reserves it: a write
        skipped = client.post("/skip", data=forms(page)["skip-form"], follow_redirects=False)
        fresh = client_for(store)
        login_page = fresh.get("/login").text
        logged_in = fresh.post(
            "/login", data={"token": token, **forms(login_page)["login-form"]}, follow_redirects=False
        )
    for response in (shown, skipped, logged_in):
        assert_store_trouble(response, store_path)
    assert live_labels(store, include_skips=True) == []


# --------------------------------------------------------------------------------------- full disk


@pytest.mark.parametrize("make_error", DISK_FULL)
def test_a_full_disk_answers_503_and_keeps_the_answer(
    store: FeedbackStore, store_path: Path, token: str, make_error, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_for(store)
    page = login(client, token)
    with caplog.at_level(logging.WARNING, logger="rlhfkit.feedback"), label_inserts_fail(store, make_error()):
        response = submit(client, page, choice="left", strength="2", comment=NOTE)
    assert_store_trouble(response, store_path)
    assert_answer_kept(response, page)
    assert "space" in response.text
    assert any(str(store_path) in r.getMessage() for r in caplog.records), "the log says which store"
    assert live_labels(store) == []
    retry = {**forms(response.text)["label-form"], "choice": "left", "strength": "2", "comment": NOTE}
    assert client.post("/label", data=retry, follow_redirects=False).status_code == 303
    assert len(live_labels(store)) == 1


@pytest.mark.parametrize("make_error", DISK_FULL)
def test_a_full_disk_is_a_store_error_in_python(store: FeedbackStore, make_error) -> None:
    bob = add_annotator(store, "bob")[0]
    view = labeling.next_item(store, bob.id)
    with label_inserts_fail(store, make_error()), pytest.raises(StoreFullError) as refused:
        labeling.submit(store, bob.id, view.item_id, labeling.Answer("tie"), "c-full-1")
    message = str(refused.value)
    assert "no space left on device" in message and "free space" in message and "INSERT" not in message
    assert live_labels(store) == []


# ------------------------------------------------------------------------------------- other errors


def test_an_unexpected_error_is_a_500_page_with_the_security_headers(
    store: FeedbackStore, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = TestClient(create_app(store), base_url="http://127.0.0.1", raise_server_exceptions=False)
    login(client, token)

    def broken(*_args, **_kwargs):
        raise RuntimeError("a bug with /secret/details in it")

    monkeypatch.setattr(labeling, "progress", broken)
    response = client.get("/label")
    assert response.status_code == 500
    for name, value in SECURITY_HEADERS:
        assert response.headers[name] == value, name
    assert "/secret/details" not in response.text and "Traceback" not in response.text


# --------------------------------------------------------------------------------- validation (422)


def test_a_validation_error_never_echoes_what_was_sent(store: FeedbackStore, token: str) -> None:
    client = client_for(store)
    login_fields = forms(client.get("/login").text)["login-form"]
    secret_comment = "private remark " * 400  # over the form's limit
    replies = {
        "login without its CSRF field": client.post("/login", data={"token": token}),
        "login with an over-long token": client.post("/login", data={**login_fields, "token": token * 5}),
        "login as JSON": client.post("/login", json={"token": token}),
    }
    page = login(client, token)
    label_fields = forms(page)["label-form"]
    replies["over-long comment"] = client.post(
        "/label", data={**label_fields, "choice": "tie", "comment": secret_comment}
    )
    replies["bad item id"] = client.post("/label", data={**label_fields, "item_id": f"x{token}"})
    for what, reply in replies.items():
        assert reply.status_code == 422, what
        assert token not in reply.text and "private remark" not in reply.text, what
        for name, value in SECURITY_HEADERS:
            assert reply.headers[name] == value, (what, name)
        detail = reply.json()["detail"]
        assert detail and all(set(error) == {"loc", "msg", "type"} for error in detail), what
    assert replies["over-long comment"].json()["detail"][0]["loc"] == ["body", "comment"], (
        "it names the field"
    )
