"""Annotators and their login sessions: tokens stored hashed, a new token ends the old sessions, names checked."""

from __future__ import annotations

import hashlib

import pytest

from rlhfkit.errors import RlhfkitError
from rlhfkit.feedback.annotators import add_annotator, annotator_by_token, issue_token
from rlhfkit.feedback.models import Annotator
from rlhfkit.feedback.sessions import create_session, session_annotator
from rlhfkit.feedback.store import FeedbackStore


def test_tokens_are_stored_hashed_and_can_be_replaced(store_url: str) -> None:
    with FeedbackStore.create(store_url) as store:
        alice, token = add_annotator(store, "alice", admin=True)
        stored = store.read(lambda s: s.get(Annotator, alice.id).token_hash)
        assert stored == hashlib.sha256(token.encode()).hexdigest() and token not in stored
        assert annotator_by_token(store, token) == alice and alice.is_admin
        assert annotator_by_token(store, token + "x") is None
        session = create_session(store, alice.id)
        assert session_annotator(store, session) == alice
        new = issue_token(store, "alice")
        assert annotator_by_token(store, token) is None and annotator_by_token(store, new) == alice
        assert session_annotator(store, session) is None, "a new token ends the old sessions"


def test_duplicate_or_invalid_annotator_names(store_url: str) -> None:
    with FeedbackStore.create(store_url) as store:
        add_annotator(store, "bob")
        with pytest.raises(RlhfkitError, match="already exists.*--new-token"):
            add_annotator(store, "bob")
        with pytest.raises(RlhfkitError, match="not allowed"):
            add_annotator(store, "<script>")
