"""Export → file → import round trips, aggregation, and imports of hh-rlhf and summarize-from-feedback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from rlhfkit.data.preference_readers import read_trl_pairs, read_trl_unpaired
from rlhfkit.data.preferences import FormatError, UnpairedLabel
from rlhfkit.errors import RlhfkitError
from rlhfkit.feedback import labeling
from rlhfkit.feedback.annotators import ensure_annotator
from rlhfkit.feedback.export import (
    export_pairs,
    export_unpaired,
    live_labels,
    preference_pairs,
    unpaired_labels,
)
from rlhfkit.feedback.importing import import_file
from rlhfkit.feedback.items import NewItem, add_comparisons, add_completions, add_items
from rlhfkit.feedback.labeling import Answer
from rlhfkit.feedback.models import Item, Label
from rlhfkit.feedback.stats import compute_stats
from rlhfkit.feedback.store import FeedbackStore


def answer_items(store: FeedbackStore, name: str, answers: dict[str, Answer]) -> None:
    """``name`` answers the item whose prompt is each key of ``answers``."""
    annotator = ensure_annotator(store, name, "human")
    while (view := labeling.next_item(store, annotator.id)) is not None:
        answer = answers[view.prompt]
        labeling.submit(store, annotator.id, view.item_id, answer, f"{name}-{view.item_id}-client")


def canonical_pair_store(url: str, overlap: int = 1) -> FeedbackStore:
    store = FeedbackStore.create(url, overlap=overlap)
    add_comparisons(
        store,
        ["p1", "p2", "p3", "p4", "p5"],
        [["kind one", "rude one"], ["a", "b"], ["x", "y"], ["tie 1", "tie 2"], ["bad 1", "bad 2"]],
        [["sft", "ppo"]] * 5,
    )
    return store


def first_is(store: FeedbackStore, prompt: str) -> str:
    return store.read(lambda s: s.scalar(select(Item.candidate_0).where(Item.prompt == prompt)))


def test_export_parses_back_into_identical_pairs(store_url: str, tmp_path: Path) -> None:
    with canonical_pair_store(store_url) as store:
        answer_items(
            store,
            "alice",
            {
                "p1": Answer("first", strength=1),
                "p2": Answer("second", strength=2),
                "p3": Answer("first", strength=3),
                "p4": Answer("tie"),
                "p5": Answer("both_bad"),
            },
        )
        pairs = preference_pairs(store)
        assert [p.prompt for p in pairs] == ["p1", "p2", "p3"], "tie and both-bad are not preferences"
        assert [p.margin for p in pairs] == [1.0, 2.0, 3.0]
        assert pairs[0].chosen == first_is(store, "p1")
        assert pairs[1].rejected == first_is(store, "p2")
        out = tmp_path / "prefs.jsonl"
        assert export_pairs(store, out) == 3
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(list(line) == ["prompt", "chosen", "rejected", "margin"] for line in lines)
    assert all(isinstance(line["margin"], float) for line in lines)
    reread = list(read_trl_pairs(out))
    assert [(p.prompt, p.chosen, p.rejected, p.margin) for p in reread] == [
        (p.prompt, p.chosen, p.rejected, p.margin) for p in pairs
    ]


def test_import_of_an_export_reproduces_it_exactly(store_url: str, tmp_path: Path) -> None:
    source = tmp_path / "source.jsonl"
    source.write_text(
        "".join(
            json.dumps(
                {
                    "prompt": f"prompt {i}",
                    "chosen": f"good {i} ✓",
                    "rejected": f"<b>bad</b> {i}",
                    "margin": m,
                },
                ensure_ascii=False,
            )
            + "\n"
            for i, m in enumerate([1.0, 2.0, 3.0, 0.0, 0.5])
        ),
        encoding="utf-8",
    )
    with FeedbackStore.create(store_url, overlap=1) as store:
        result = import_file(store, source, "trl")
        assert (result.records, result.items_added, result.labels_added) == (5, 5, 5)
        assert result.annotators == ("import:trl",)
        again = import_file(store, source, "trl")
        assert (again.items_added, again.labels_added, again.labels_existing) == (0, 0, 5), (
            "re-import adds nothing"
        )
        out = tmp_path / "export.jsonl"
        export_pairs(store, out)
    assert out.read_bytes() == source.read_bytes()
    assert list(read_trl_pairs(out)) == list(read_trl_pairs(source))


def test_a_bad_line_stops_the_import_before_anything_is_written(store_url: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"})
        + "\n"
        + json.dumps({"prompt": "p", "chosen": "c"})
        + "\n"
    )
    with FeedbackStore.create(store_url) as store:
        with pytest.raises(FormatError, match=r"bad.jsonl:2: missing field 'rejected'"):
            import_file(store, path, "trl")
        assert store.read(lambda s: s.scalar(select(func.count()).select_from(Item))) == 0
        nul = tmp_path / "nul.jsonl"
        nul.write_text(json.dumps({"prompt": "p\u0000", "chosen": "c", "rejected": "r"}) + "\n")
        with pytest.raises(RlhfkitError, match=r"nul.jsonl:1: the prompt contains a NUL character"):
            import_file(store, nul, "trl")
        with pytest.raises(RlhfkitError, match="unknown import format 'yaml'"):
            import_file(store, path, "yaml")
        with pytest.raises(RlhfkitError, match="belong in a binary project; this project is pairwise"):
            import_file(store, path, "trl-unpaired")


def test_unpaired_export_of_a_pairwise_project(sqlite_path: str, tmp_path: Path) -> None:
    with canonical_pair_store(sqlite_path) as store:
        answer_items(
            store,
            "alice",
            {
                "p1": Answer("first", strength=1),
                "p2": Answer("second", strength=2),
                "p3": Answer("first", strength=3),
                "p4": Answer("tie"),
                "p5": Answer("both_bad"),
            },
        )
        rows = {(u.prompt, u.completion): u.label for u in unpaired_labels(store)}
        preferred = first_is(store, "p1")  # answered "first"
        out = tmp_path / "u.jsonl"
        assert export_unpaired(store, out) == 8
    other = ({"kind one", "rude one"} - {preferred}).pop()
    assert rows[("p1", preferred)] is True and rows[("p1", other)] is False
    assert rows[("p5", "bad 1")] is False and rows[("p5", "bad 2")] is False
    assert not any(prompt == "p4" for prompt, _ in rows), "a tie says nothing about good or bad"
    assert all(
        list(json.loads(line)) == ["prompt", "completion", "label"] for line in out.read_text().splitlines()
    )


def test_majority_aggregation(sqlite_path: str) -> None:
    with FeedbackStore.create(sqlite_path, overlap=3) as store:
        add_comparisons(store, ["agreed", "split"], [["u", "v"], ["s", "t"]])
        for name, first_choice, strength in (("a", "first", 1), ("b", "first", 3), ("c", "second", 2)):
            split_answer = {
                "a": Answer("first", strength=1),
                "b": Answer("second", strength=1),
                "c": Answer("tie"),
            }[name]
            answer_items(
                store, name, {"agreed": Answer(first_choice, strength=strength), "split": split_answer}
            )
        assert len(preference_pairs(store)) == 5, "per label: every preference, disagreements included"
        (majority,) = preference_pairs(store, aggregate="majority")
        assert (majority.prompt, majority.margin, majority.annotator) == (
            "agreed",
            2.0,
            None,
        )  # mean of 1 and 3
        assert majority.chosen == first_is(store, "agreed")
        with pytest.raises(RlhfkitError, match="unknown aggregation 'mean'"):
            preference_pairs(store, aggregate="mean")


def test_complete_only(sqlite_path: str) -> None:
    with FeedbackStore.create(sqlite_path, overlap=2) as store:
        add_comparisons(store, ["p"], [["x", "y"]])
        answer_items(store, "a", {"p": Answer("first", strength=2)})
        assert len(preference_pairs(store)) == 1
        assert preference_pairs(store, complete_only=True) == []


def test_summarize_import_groups_workers_on_the_same_pair(store_url: str, tmp_path: Path) -> None:
    def record(choice: int, worker: str) -> str:
        return json.dumps(
            {
                "info": {"id": "t3_1", "post": "Long reddit post", "subreddit": "tifu"},
                "summaries": [
                    {"text": " short", "policy": "sup1"},
                    {"text": " long and right", "policy": "ref"},
                ],
                "choice": choice,
                "worker": worker,
            }
        )

    path = tmp_path / "batch1.json"
    path.write_text("\n".join([record(1, "w/1"), record(1, "w2"), record(0, "w3")]) + "\n")
    with FeedbackStore.create(store_url, overlap=3) as store:
        result = import_file(store, path, "summarize")
        assert (result.items_added, result.labels_added) == (1, 3)
        assert set(result.annotators) == {"summarize:w_1", "summarize:w2", "summarize:w3"}
        stats = compute_stats(store)
        assert stats.items_retired == 1 and stats.agreement.items == 1
        assert stats.agreement.percent == pytest.approx(1 / 3)  # pairs: (w1,w2) agree, 2 of 3 pairs disagree
        majority = {a.name: a.agreement_with_majority for a in stats.annotators}
        assert majority == {"summarize:w_1": None, "summarize:w2": None, "summarize:w3": 0.0}
        (pair,) = preference_pairs(store, aggregate="majority")
        assert (pair.chosen, pair.rejected, pair.chosen_source) == (" long and right", " short", "ref")


def test_hh_import_and_unlabeled_import(sqlite_path: str, tmp_path: Path) -> None:
    transcript = "\n\nHuman: Hi\n\nAssistant:"
    path = tmp_path / "hh.jsonl"
    path.write_text(
        json.dumps({"chosen": transcript + " Hello!", "rejected": transcript + " Go away."}) + "\n"
    )
    with FeedbackStore.create(sqlite_path, overlap=1) as store:
        result = import_file(store, path, "hh-rlhf", labeled=False)
        assert (result.items_added, result.labels_added) == (1, 0)
        assert store.read(lambda s: s.scalar(select(func.count()).select_from(Label))) == 0
        (pair_view,) = [labeling.next_item(store, ensure_annotator(store, "h", "human").id)]
        assert pair_view.prompt == transcript and set(pair_view.candidates) == {" Hello!", " Go away."}


def test_binary_project_round_trip(store_url: str, tmp_path: Path) -> None:
    with FeedbackStore.create(store_url, question_type="binary", overlap=1) as store:
        add_completions(store, ["p", "p"], [["fine answer"], ["you idiot"]])
        annotator = ensure_annotator(store, "a", "human")
        while (view := labeling.next_item(store, annotator.id)) is not None:
            good = "idiot" not in view.candidates[0]
            labeling.submit(
                store, annotator.id, view.item_id, Answer("good" if good else "bad"), f"bin-{view.item_id}-c"
            )
        out = tmp_path / "u.jsonl"
        export_unpaired(store, out)
        with pytest.raises(RlhfkitError, match="binary project has no preference pairs"):
            preference_pairs(store)
    labels = list(read_trl_unpaired(out))
    assert labels == [UnpairedLabel("p", "fine answer", True), UnpairedLabel("p", "you idiot", False)]
    with FeedbackStore.create(tmp_path / "copy.sqlite", question_type="binary") as copy:
        assert import_file(copy, out, "trl-unpaired").labels_added == 2
        assert [(r.choice, r.candidates) for r in live_labels(copy)] == [
            ("good", ("fine answer",)),
            ("bad", ("you idiot",)),
        ]


def test_import_skips_pairs_whose_chosen_and_rejected_are_identical(store_url: str, tmp_path: Path) -> None:
    transcript = "\n\nHuman: Hi\n\nAssistant:"
    trl = tmp_path / "pairs.jsonl"
    trl.write_text(
        "".join(
            json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected}) + "\n"
            for prompt, chosen, rejected in (
                ("p1", "kind", "rude"),
                ("p2", "same words", "same words"),
                ("p3", "calm", "loud"),
            )
        )
    )
    hh = tmp_path / "hh.jsonl"
    hh.write_text(json.dumps({"chosen": transcript + " Hello!", "rejected": transcript + " Hello!"}) + "\n")
    with FeedbackStore.create(store_url, overlap=1) as store:
        result = import_file(store, trl, "trl")
        assert (result.records, result.items_added, result.labels_added) == (3, 2, 2)
        assert result.identical_skipped == 1
        unlabeled = import_file(store, hh, "hh-rlhf", labeled=False)
        assert (unlabeled.items_added, unlabeled.identical_skipped) == (0, 1)
        out = tmp_path / "export.jsonl"
        assert export_pairs(store, out) == 2
    assert [(p.prompt, p.chosen != p.rejected) for p in read_trl_pairs(out)] == [("p1", True), ("p3", True)]


def test_export_leaves_out_identical_pairs_an_older_import_stored(sqlite_path: str, tmp_path: Path) -> None:
    with FeedbackStore.create(sqlite_path, overlap=1) as store:
        add_items(store, [NewItem("p-same", ("same words", "same words")), NewItem("p-real", ("a", "b"))])
        answer_items(
            store, "alice", {"p-same": Answer("first", strength=2), "p-real": Answer("first", strength=2)}
        )
        assert [p.prompt for p in preference_pairs(store)] == ["p-real"]
        assert {u.prompt for u in unpaired_labels(store)} == {"p-real"}
        assert export_pairs(store, tmp_path / "pairs.jsonl") == 1
