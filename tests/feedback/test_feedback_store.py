"""The store and the labeling rules, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import socket
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from rlhfkit.errors import RlhfkitError
from rlhfkit.feedback import labeling
from rlhfkit.feedback.annotators import add_annotator
from rlhfkit.feedback.config import FeedbackConfig
from rlhfkit.feedback.export import live_labels
from rlhfkit.feedback.items import add_comparisons, add_completions
from rlhfkit.feedback.labeling import Answer
from rlhfkit.feedback.models import SCHEMA_VERSION, Label, Project, Retraction
from rlhfkit.feedback.security import first_on_left
from rlhfkit.feedback.store import FeedbackStore, StoreError


def make_store(url: str, items: int = 4, overlap: int = 2, **kwargs) -> FeedbackStore:
    store = FeedbackStore.create(url, overlap=overlap, **kwargs)
    if items:
        add_comparisons(
            store, [f"prompt {i}" for i in range(items)], [[f"good {i}", f"bad {i}"] for i in range(items)]
        )
    return store


def annotators(store: FeedbackStore, *names: str) -> list[int]:
    return [add_annotator(store, name)[0].id for name in names]


CLEARLY_FIRST = Answer("first", strength=2)


def label_all(store: FeedbackStore, annotator_id: int, answer: Answer = CLEARLY_FIRST) -> list[int]:
    seen = []
    while (view := labeling.next_item(store, annotator_id)) is not None:
        labeling.submit(
            store, annotator_id, view.item_id, answer, f"client-{annotator_id}-{view.item_id}-{len(seen)}"
        )
        seen.append(view.item_id)
    return seen


# ------------------------------------------------------------------------------------ create / open


def test_create_records_project_and_schema_version(store_url: str) -> None:
    with make_store(store_url, items=0, overlap=3, question_type="pairwise", name="dialogsum") as store:
        row = store.read(lambda s: s.get(Project, 1))
        assert (row.schema_version, row.question_type, row.overlap, row.name) == (
            SCHEMA_VERSION,
            "pairwise",
            3,
            "dialogsum",
        )
    with FeedbackStore.open(store_url) as reopened:
        assert reopened.project.overlap == 3
        assert reopened.project.schema_version == SCHEMA_VERSION


def test_create_refuses_to_overwrite_a_project(store_url: str) -> None:
    make_store(store_url, items=0).close()
    with pytest.raises(StoreError, match="already holds a feedback project"):
        FeedbackStore.create(store_url)


def test_unknown_question_type_and_bad_overlap_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="unknown question type 'ranking'.*pairwise, binary"):
        FeedbackStore.create(tmp_path / "a.sqlite", question_type="ranking")
    with pytest.raises(StoreError, match="overlap must be"):
        FeedbackStore.create(tmp_path / "b.sqlite", overlap=0)


def test_sqlite_store_uses_wal_and_full_sync(sqlite_path: str) -> None:
    with make_store(sqlite_path, items=0) as store, store._engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000


def test_opening_a_missing_store_says_how_to_create_one(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sqlite"
    with pytest.raises(StoreError, match=r"no feedback project at .*rlhfkit feedback init"):
        FeedbackStore.open(missing)
    assert not missing.exists(), "opening must not create an empty database file"


def test_opening_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.sqlite"
    bogus.write_text("just some text, not SQLite\n" * 100)
    with pytest.raises(StoreError, match="cannot open the SQLite store"):
        FeedbackStore.open(bogus)


def test_unreachable_database_url_is_a_clear_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(
        StoreError, match=r"cannot connect to the store postgresql\+psycopg://u:\*\*\*@127\.0\.0\.1"
    ):
        FeedbackStore.open(f"postgresql://u:secret@127.0.0.1:{port}/feedback")
    assert time.monotonic() - started < 15


def test_unsupported_database_url() -> None:
    with pytest.raises(StoreError, match="unsupported database 'mysql'"):
        FeedbackStore.open("mysql://u@localhost/x")


def test_a_newer_schema_version_is_refused(store_url: str) -> None:
    with make_store(store_url, items=0) as store:
        store.write(lambda s: s.execute(text("UPDATE feedback_project SET schema_version = 99")))
    with pytest.raises(StoreError, match="schema version 99.*upgrade rlhfkit"):
        FeedbackStore.open(store_url)


@pytest.mark.parametrize("stored", ["'abc'", "''", "1.5", "'2'"])
def test_a_schema_version_edited_into_text_is_a_clear_error(sqlite_path: str, stored: str) -> None:
    make_store(sqlite_path, items=0).close()
    with sqlite3.connect(sqlite_path) as db:  # someone edited the file by hand
        db.execute(f"UPDATE feedback_project SET schema_version = {stored}")
    with pytest.raises(StoreError) as refused:
        FeedbackStore.open(sqlite_path)
    message = str(refused.value)
    if stored == "'2'":  # SQLite stores a number-like text in an INTEGER column as the number
        assert "schema version 2" in message and "upgrade rlhfkit" in message
    else:
        assert "schema version is unreadable" in message and "feedback_project" in message
        assert "backup" in message and sqlite_path in message


# ----------------------------------------------------------------------------- overlap, retirement


def test_each_item_gets_overlap_labels_then_retires(store_url: str) -> None:
    with make_store(store_url, items=5, overlap=2) as store:
        a, b, c = annotators(store, "a", "b", "c")
        assert len(label_all(store, a)) == 5
        assert len(label_all(store, b)) == 5
        assert label_all(store, c) == [], "every item is retired after two labels"
        progress = labeling.progress(store, c)
        assert (progress.done, progress.remaining, progress.retired_items, progress.total_items) == (
            0,
            0,
            5,
            5,
        )


def test_labeling_a_retired_item_is_refused(store_url: str) -> None:
    with make_store(store_url, items=1, overlap=1) as store:
        a, b = annotators(store, "a", "b")
        view_a = labeling.next_item(store, a)
        # b is looking at the same item (all open items are reserved, so it is served anyway).
        view_b = labeling.next_item(store, b)
        assert view_a.item_id == view_b.item_id
        labeling.submit(store, a, view_a.item_id, Answer("tie"), "client-a-1")
        with pytest.raises(
            labeling.ItemRetiredError, match=f"item {view_a.item_id} already has its 1 label.*retired"
        ):
            labeling.submit(store, b, view_b.item_id, Answer("tie"), "client-b-1")
        assert len(live_labels(store)) == 1


def test_only_the_item_served_to_an_annotator_can_be_labeled_or_skipped(store_url: str) -> None:
    with make_store(store_url, items=3, overlap=2) as store:
        (a,) = annotators(store, "a")
        with pytest.raises(labeling.NotServedError, match="item 1 was not served to you"):
            labeling.submit(store, a, 1, Answer("tie"), "c-unserved-1")
        with pytest.raises(labeling.NotServedError, match="item 1 was not served to you"):
            labeling.skip(store, a, 1, "s-unserved-1")
        served = labeling.next_item(store, a).item_id
        other = next(i for i in (1, 2, 3) if i != served)
        with pytest.raises(labeling.NotServedError):
            labeling.submit(store, a, other, Answer("tie"), "c-unserved-2")
        with pytest.raises(labeling.NotServedError):
            labeling.skip(store, a, other, "s-unserved-2")
        assert live_labels(store, include_skips=True) == []
        labeling.submit(store, a, served, Answer("tie"), "c-served-1")
        with pytest.raises(labeling.AlreadyLabeledError):  # answered: no longer open to them
            labeling.submit(store, a, served, Answer("tie"), "c-served-2")
        labeling.undo(store, a, "u-served-1")  # an undo serves the item again
        labeling.submit(store, a, served, Answer("first", strength=1), "c-served-3")
        assert [(r.item_id, r.choice) for r in live_labels(store)] == [(served, "first")]


def test_a_retired_item_cannot_be_skipped(store_url: str) -> None:
    with make_store(store_url, items=1, overlap=1) as store:
        a, b = annotators(store, "a", "b")
        item = labeling.next_item(store, a).item_id
        assert labeling.next_item(store, b).item_id == item  # served to both: nothing else is open
        labeling.submit(store, a, item, Answer("tie"), "c-retire-a")
        with pytest.raises(labeling.ItemRetiredError, match="retired"):
            labeling.skip(store, b, item, "s-retired-b")
        assert [r.annotator for r in live_labels(store, include_skips=True)] == ["a"], "no skip row stored"


def test_nobody_is_shown_an_item_twice(store_url: str) -> None:
    with make_store(store_url, items=6, overlap=3) as store:
        (a,) = annotators(store, "a")
        seen = label_all(store, a)
        assert sorted(seen) == sorted(set(seen)) and len(seen) == 6
        with pytest.raises(labeling.AlreadyLabeledError, match="undo that answer first"):
            labeling.submit(store, a, seen[0], Answer("tie"), "another-client-id")


def test_reservations_spread_annotators_over_items(store_url: str) -> None:
    with make_store(store_url, items=3, overlap=1) as store:
        a, b = annotators(store, "a", "b")
        first, second = labeling.next_item(store, a), labeling.next_item(store, b)
        assert first.item_id != second.item_id
        assert labeling.next_item(store, a).item_id == first.item_id, "a reload shows the same item"


def test_expired_reservations_free_the_item(store_url: str) -> None:
    config = FeedbackConfig(reservation_minutes=0.0005)  # 30 ms
    store = FeedbackStore.create(store_url, overlap=1, config=config)
    add_comparisons(store, ["p0", "p1"], [["x", "y"], ["u", "v"]])
    a, b = annotators(store, "a", "b")
    first = labeling.next_item(store, a)
    time.sleep(0.1)
    assert labeling.next_item(store, b).item_id == first.item_id, "lowest id first once the hold expired"
    store.close()


# ------------------------------------------------------------------------- idempotency, undo, skip


def test_a_retried_submission_is_stored_once(store_url: str) -> None:
    with make_store(store_url, items=2) as store:
        (a,) = annotators(store, "a")
        view = labeling.next_item(store, a)
        first = labeling.submit(store, a, view.item_id, Answer("first", strength=3), "same-client-id")
        again = labeling.submit(store, a, view.item_id, Answer("first", strength=3), "same-client-id")
        assert again.replayed and not first.replayed and again.label_id == first.label_id
        assert store.read(lambda s: s.scalar(select(func.count()).select_from(Label))) == 1
        other = labeling.next_item(store, a)
        with pytest.raises(labeling.ClientIdConflictError):
            labeling.submit(store, a, other.item_id, Answer("tie"), "same-client-id")


def test_undo_is_an_appended_retraction_and_the_item_comes_back(store_url: str) -> None:
    with make_store(store_url, items=3) as store:
        (a,) = annotators(store, "a")
        view = labeling.next_item(store, a)
        labeling.submit(
            store,
            a,
            view.item_id,
            Answer("second", strength=1, toxic=(True, False), comment="meh"),
            "client-00001",
        )
        undone = labeling.undo(store, a, "undo-00001")
        assert undone.item_id == view.item_id and undone.choice == "second"
        assert store.read(lambda s: s.scalar(select(func.count()).select_from(Label))) == 1, "nothing deleted"
        assert store.read(lambda s: s.scalar(select(func.count()).select_from(Retraction))) == 1
        assert live_labels(store) == []
        again = labeling.next_item(store, a)
        assert again.item_id == view.item_id
        assert again.previous == Answer("second", strength=1, toxic=(True, False), comment="meh")
        relabel = labeling.submit(store, a, again.item_id, Answer("first", strength=2), "client-00002")
        revisions = store.read(lambda s: sorted(s.scalars(select(Label.revision))))
        assert revisions == [0, 1]
        assert [r.choice for r in live_labels(store)] == ["first"] and relabel.label_id != undone.label_id
        assert labeling.undo(store, a, "undo-00001").replayed, "a retried undo undoes nothing more"
        assert len(live_labels(store)) == 1


def test_undo_with_nothing_to_undo(store_url: str) -> None:
    with make_store(store_url, items=1) as store:
        (a,) = annotators(store, "a")
        with pytest.raises(labeling.NothingToUndoError):
            labeling.undo(store, a, "u-nothing")


def test_database_refuses_two_live_labels_of_one_annotator_on_one_item(store_url: str) -> None:
    with make_store(store_url, items=1) as store:
        (a,) = annotators(store, "a")
        view = labeling.next_item(store, a)
        labeling.submit(store, a, view.item_id, Answer("tie"), "c-live-1")

        def sneak_in(session) -> None:
            session.add(Label(item_id=view.item_id, annotator_id=a, revision=0, client_id="c-live-2", choice="tie",
                              created_at=labeling.utcnow()))  # fmt: skip

        with pytest.raises(IntegrityError):
            store.write(sneak_in)


def test_skip_hides_the_item_without_counting_and_undo_brings_it_back(store_url: str) -> None:
    with make_store(store_url, items=2, overlap=1) as store:
        a, b = annotators(store, "a", "b")
        view = labeling.next_item(store, a)
        labeling.skip(store, a, view.item_id, "s-000001")
        assert labeling.next_item(store, a).item_id != view.item_id
        progress = labeling.progress(store, a)
        assert (progress.done, progress.skipped, progress.remaining) == (0, 1, 1)
        assert view.item_id in label_all(store, b), "a skip does not count towards retirement"
        labeling.undo(store, a, "u-000001")
        assert labeling.progress(store, a).skipped == 0


def test_unknown_item(store_url: str) -> None:
    with make_store(store_url, items=1) as store:
        (a,) = annotators(store, "a")
        with pytest.raises(labeling.UnknownItemError):
            labeling.submit(store, a, 987654, Answer("tie"), "c-unknown")


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (Answer("first"), "how much better"),
        (Answer("first", strength=4), "how much better"),
        (Answer("good"), "not one of first, second, tie, both_bad"),
        (Answer("tie", comment="x\x00y"), "NUL"),
        (Answer("tie", comment="x" * 2001), "limit is 2000"),
    ],
)
def test_invalid_answers(sqlite_path: str, answer: Answer, message: str) -> None:
    with make_store(sqlite_path, items=1) as store:
        (a,) = annotators(store, "a")
        view = labeling.next_item(store, a)
        with pytest.raises(RlhfkitError, match=message):
            labeling.submit(store, a, view.item_id, answer, "c-invalid")
        with pytest.raises(labeling.InvalidAnswerError, match="client id"):
            labeling.submit(store, a, view.item_id, Answer("tie"), "no spaces allowed")


def test_layout_is_randomised_per_annotator_and_recorded(sqlite_path: str) -> None:
    with make_store(sqlite_path, items=40, overlap=2) as store:
        a, b = annotators(store, "a", "b")
        label_all(store, a)
        label_all(store, b)
        rows = store.read(
            lambda s: s.execute(select(Label.annotator_id, Label.item_id, Label.first_on_left)).all()
        )
        assert all(fol == first_on_left(store.secret, ann, item) for ann, item, fol in rows)
        share = sum(fol for _, _, fol in rows) / len(rows)
        assert 0.3 < share < 0.7
        by_item = {}
        for ann, item, fol in rows:
            by_item.setdefault(item, set()).add(fol)
        assert any(len(v) == 2 for v in by_item.values()), "annotators see different layouts"


def test_view_maps_left_and_right(sqlite_path: str) -> None:
    with make_store(sqlite_path, items=1) as store:
        (a,) = annotators(store, "a")
        view = labeling.next_item(store, a)
        left, right = view.candidates if view.first_on_left else view.candidates[::-1]
        assert (view.left, view.right) == (left, right)
        assert labeling.displayed_to_canonical("left", view.first_on_left) == (
            "first" if view.first_on_left else "second"
        )


# ------------------------------------------------------------------------------------- adding items


def test_add_comparisons_pairs_candidates_and_skips_duplicates(store_url: str) -> None:
    with FeedbackStore.create(store_url) as store:
        result = add_comparisons(
            store,
            ["p"],
            [["x", "y", "z", "y"]],
            [["sft", "ppo", "ppo", "sft"]],
            references=["ref"],
            metadata=[{"row": 7}],
        )
        # 6 pairs: y-y has nothing to compare, x-y and y-z come twice
        assert (result.added, result.identical_skipped, result.duplicates) == (3, 1, 2)
        items = store.read(lambda s: s.execute(text("SELECT candidate_0, candidate_1, source_0, source_1, reference "
                                                    "FROM feedback_items")).all())  # fmt: skip
        source_of = {"x": "sft", "y": {"ppo", "sft"}, "z": "ppo"}
        for c0, c1, s0, s1, ref in items:
            assert ref == "ref"
            for c, s in ((c0, s0), (c1, s1)):
                assert s == source_of[c] or s in source_of[c]
        again = add_comparisons(store, ["p"], [["y", "x"]])
        assert again.added == 0 and again.duplicates == 1, (
            "the same comparison in the other order is a duplicate"
        )


def test_add_comparisons_validates_its_input(sqlite_path: str) -> None:
    with FeedbackStore.create(sqlite_path) as store:
        with pytest.raises(RlhfkitError, match="prompt 1 has 1 candidate"):
            add_comparisons(store, ["a", "b"], [["x", "y"], ["z"]])
        with pytest.raises(RlhfkitError, match="2 prompts but 1 candidate lists"):
            add_comparisons(store, ["a", "b"], [["x", "y"]])
        with pytest.raises(RlhfkitError, match="asks pairwise questions; use add_comparisons"):
            add_completions(store, ["a"], [["x"]])
        assert add_comparisons(store, ["a"], [["1", "2", "3", "4"]], max_pairs_per_prompt=2).added == 2


def test_binary_projects_judge_single_completions(store_url: str) -> None:
    with FeedbackStore.create(store_url, question_type="binary", overlap=1) as store:
        add_completions(store, ["p", "q"], [["fine", "idiot"], ["ok"]])
        (a,) = annotators(store, "a")
        view = labeling.next_item(store, a)
        assert len(view.candidates) == 1 and view.first_on_left is None and view.right is None
        with pytest.raises(labeling.InvalidAnswerError, match="good, bad"):
            labeling.submit(store, a, view.item_id, Answer("first", strength=1), "c-binary-0")
        labeling.submit(store, a, view.item_id, Answer("bad", toxic=(True, False)), "c-binary-1")
        assert [(r.choice, r.toxic) for r in live_labels(store)] == [("bad", (True, False))]
