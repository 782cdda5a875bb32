"""Simulated annotators: lexicon ground truth, error rates, determinism, and the store's rules."""

from __future__ import annotations

import random

import pytest

from rlhfkit.data.lexicon import LexiconJudge
from rlhfkit.errors import RlhfkitError
from rlhfkit.feedback import labeling
from rlhfkit.feedback.annotators import ensure_annotator
from rlhfkit.feedback.export import live_labels
from rlhfkit.feedback.items import add_comparisons, add_completions
from rlhfkit.feedback.labeling import Answer, ItemView
from rlhfkit.feedback.simulate import decide, simulate
from rlhfkit.feedback.stats import compute_stats
from rlhfkit.feedback.store import FeedbackStore

JUDGE = LexiconJudge()


def toxicity_store(path: str, n: int = 30, overlap: int = 3) -> FeedbackStore:
    store = FeedbackStore.create(path, overlap=overlap)
    candidates = [
        [f"a calm summary {i}", f"you idiot {i}", f"stupid lazy moron {i}", f"another calm one {i}"]
        for i in range(n)
    ]
    add_comparisons(store, [f"dialogue {i}" for i in range(n)], candidates, max_pairs_per_prompt=3, seed=1)
    return store


def view(first: str, second: str) -> ItemView:
    return ItemView(
        item_id=1, prompt="p", candidates=(first, second), reference=None, first_on_left=True, labels_so_far=0
    )


def test_decide_prefers_fewer_lexicon_words_with_strength_from_the_difference() -> None:
    rng = random.Random(0)
    assert decide(view("kind words", "you idiot"), JUDGE, 0.0, rng) == (
        Answer("first", strength=1, toxic=(False, True)),
        "first",
    )
    assert decide(view("stupid lazy moron", "fine"), JUDGE, 0.0, rng)[0] == Answer(
        "second", strength=3, toxic=(True, False)
    )
    assert decide(view("idiot fool", "ok"), JUDGE, 0.0, rng)[0].strength == 2
    assert decide(view("a", "b"), JUDGE, 0.0, rng) == (Answer("tie", toxic=(False, False)), None)
    assert decide(view("idiot", "fool"), JUDGE, 0.0, rng)[0].choice == "both_bad"
    random_tie = decide(view("a", "b"), JUDGE, 0.0, rng, tie_rule="random")[0]
    assert random_tie.choice in ("first", "second") and random_tie.strength == 1


def test_decide_errs_with_the_error_rate() -> None:
    flipped = decide(view("kind", "idiot"), JUDGE, 1.0, random.Random(0))[0]
    assert flipped.choice == "second" and flipped.strength == 1
    rng = random.Random(3)
    wrong = sum(decide(view("kind", "idiot"), JUDGE, 0.2, rng)[0].choice == "second" for _ in range(4000))
    assert wrong / 4000 == pytest.approx(0.2, abs=0.02)
    binary = ItemView(
        item_id=1, prompt="p", candidates=("idiot",), reference=None, first_on_left=None, labels_so_far=0
    )
    assert decide(binary, JUDGE, 0.0, rng)[0] == Answer("bad", toxic=(True, False))
    assert decide(binary, JUDGE, 1.0, rng)[0].choice == "good"


def test_simulation_labels_everything_through_the_overlap_rules(tmp_path) -> None:
    with toxicity_store(str(tmp_path / "s.sqlite"), n=20, overlap=2) as store:
        summary = simulate(store, n_annotators=3, error_rate=0.0, seed=0)
        assert summary.items_retired == summary.items_total == 60
        assert summary.labels == 120 and sum(summary.labels_per_annotator.values()) == 120
        assert summary.accuracy == 1.0
        labels = live_labels(store)
        per_item = {}
        for r in labels:
            per_item.setdefault(r.item_id, set()).add(r.annotator)
        assert all(len(names) == 2 for names in per_item.values()), "two different annotators per item"
        for r in labels:  # error-free: always the less toxic candidate
            counts = [JUDGE.count(c) for c in r.candidates]
            if counts[0] != counts[1]:
                assert r.choice == ("first" if counts[0] < counts[1] else "second")
        again = simulate(store, n_annotators=3, seed=0)
        assert again.labels == 0, "a second run finds nothing left to do"


def test_simulation_is_deterministic(tmp_path) -> None:
    def run(name: str, seed: int) -> list[tuple[int, str, str]]:
        with toxicity_store(str(tmp_path / name), n=6) as store:
            simulate(store, n_annotators=3, error_rate=0.3, seed=seed)
            return [(r.item_id, r.annotator, r.choice) for r in live_labels(store)]

    assert run("a.sqlite", 7) == run("b.sqlite", 7)
    assert run("c.sqlite", 7) != run("d.sqlite", 8)


def test_a_careless_annotator_stands_out_in_agreement(tmp_path) -> None:
    with toxicity_store(str(tmp_path / "s.sqlite"), n=40, overlap=3) as store:
        summary = simulate(store, n_annotators=3, error_rate=[0.0, 0.05, 0.45], seed=2)
        stats = compute_stats(store)
    rates = {a.name: a.agreement_with_majority for a in stats.annotators}
    assert rates["sim-3"] < rates["sim-1"] - 0.2 and rates["sim-3"] < rates["sim-2"] - 0.2
    assert stats.agreement.krippendorff_alpha is not None and 0 < stats.agreement.krippendorff_alpha < 1
    assert summary.accuracy < 0.9


def test_simulation_shares_the_queue_with_people(tmp_path) -> None:
    with FeedbackStore.create(tmp_path / "s.sqlite", overlap=1) as store:
        add_comparisons(store, ["p1", "p2"], [["ok", "idiot"], ["fine", "fool"]])
        person = ensure_annotator(store, "person", "human")
        view_ = labeling.next_item(store, person.id)
        labeling.submit(store, person.id, view_.item_id, Answer("tie"), "person-1")
        summary = simulate(store, n_annotators=2, seed=0)
        assert summary.labels == 1, "the item the person labeled is retired"


def test_binary_simulation(tmp_path) -> None:
    with FeedbackStore.create(tmp_path / "b.sqlite", question_type="binary", overlap=1) as store:
        add_completions(store, ["p"], [["nice", "you fool", "clown show"]])
        simulate(store, n_annotators=1, error_rate=0.0)
        assert sorted((r.candidates[0], r.choice) for r in live_labels(store)) == [
            ("clown show", "bad"),
            ("nice", "good"),
            ("you fool", "bad"),
        ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_annotators": 0}, "at least 1 annotator"),
        ({"n_annotators": 2, "error_rate": [0.1]}, "1 error rates for 2 annotators"),
        ({"error_rate": 1.5}, "between 0 and 1"),
        ({"tie_rule": "coin"}, "unknown tie rule 'coin'"),
    ],
)
def test_bad_simulation_arguments(tmp_path, kwargs: dict, message: str) -> None:
    with FeedbackStore.create(tmp_path / "s.sqlite") as store, pytest.raises(RlhfkitError, match=message):
        simulate(store, **kwargs)
