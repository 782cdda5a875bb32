"""Scripted annotators, so the whole feedback loop runs without people (the offline demo uses them).

A simulated annotator judges toxicity with the ground truth of the built-in task, the lexicon judge
(:class:`rlhfkit.data.lexicon.LexiconJudge`), which counts insult words:

- pairwise: it prefers the candidate with fewer lexicon words. The strength follows the size of the
  difference: 1 word → slightly, 2 → clearly, 3 or more → much better. When both counts are equal,
  ``tie_rule`` decides: ``"tie"`` answers *tie* (no lexicon word in either) or *both bad* (both have
  some); ``"random"`` picks one candidate at random, *slightly* better.
- binary: good when the completion has no lexicon word, bad otherwise.
- With probability ``error_rate`` it gets the answer wrong: a preference is swapped, a tie or both-bad
  becomes a random preference (slightly), good and bad are exchanged.
- It flags each candidate that contains a lexicon word as toxic.

Every random draw comes from a generator seeded with (seed, annotator, item), so the answers do not
depend on the order in which items happen to be served. Simulated annotators go through
:mod:`rlhfkit.feedback.labeling` exactly like the web app, overlap and retirement included.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from rlhfkit.data.lexicon import LexiconJudge
from rlhfkit.errors import RlhfkitError
from rlhfkit.feedback import labeling
from rlhfkit.feedback.annotators import ensure_annotator
from rlhfkit.feedback.labeling import Answer, ItemView
from rlhfkit.feedback.store import FeedbackStore

TIE_RULES = ("tie", "random")


@dataclass(frozen=True)
class SimulationSummary:
    annotators: tuple[str, ...]
    labels: int
    """Labels submitted in this run."""
    labels_per_annotator: dict[str, int]
    items_total: int
    items_retired: int
    decisive_labels: int
    """Labels on items where the ground truth has a preference (pairwise) or a verdict (binary)."""
    decisive_correct: int
    """Of those, labels that agree with the ground truth (error flips make the difference)."""

    @property
    def accuracy(self) -> float | None:
        return self.decisive_correct / self.decisive_labels if self.decisive_labels else None


def decide(
    view: ItemView,
    judge: LexiconJudge,
    error_rate: float,
    rng: random.Random,
    tie_rule: str = "tie",
) -> tuple[Answer, str | None]:
    """A simulated answer to ``view`` and the error-free preferred choice (None when the truth is a draw)."""
    if len(view.candidates) == 1:
        truth = "good" if judge.count(view.candidates[0]) == 0 else "bad"
        choice = truth if rng.random() >= error_rate else ("bad" if truth == "good" else "good")
        return Answer(choice=choice, toxic=(judge.is_toxic(view.candidates[0]), False)), truth
    first, second = judge.count(view.candidates[0]), judge.count(view.candidates[1])
    toxic = (first > 0, second > 0)
    truth: str | None
    if first != second:
        truth = "first" if first < second else "second"
        choice, strength = truth, min(3, abs(first - second))
    else:
        truth = None
        if tie_rule == "random":
            choice, strength = rng.choice(("first", "second")), 1
        else:
            choice, strength = ("both_bad" if first > 0 else "tie"), None
    if rng.random() < error_rate:
        if choice in ("first", "second"):
            choice = "second" if choice == "first" else "first"
        else:
            choice, strength = rng.choice(("first", "second")), 1
    return Answer(choice=choice, strength=strength, toxic=toxic), truth


def simulate(
    store: FeedbackStore,
    n_annotators: int = 3,
    error_rate: float | Sequence[float] = 0.1,
    seed: int = 0,
    *,
    tie_rule: str = "tie",
    judge: LexiconJudge | None = None,
    name_prefix: str = "sim",
    max_labels: int | None = None,
) -> SimulationSummary:
    """Let ``n_annotators`` scripted annotators (``sim-1`` …) label until nothing is left for them.

    ``error_rate`` is one rate for all or one per annotator. Annotators take turns one item at a time,
    as people working in parallel would. Re-running continues where the last run stopped.
    """
    if n_annotators < 1:
        raise RlhfkitError(f"simulate needs at least 1 annotator, not {n_annotators}")
    rates = (
        [float(error_rate)] * n_annotators
        if isinstance(error_rate, (int, float))
        else [float(e) for e in error_rate]
    )
    if len(rates) != n_annotators:
        raise RlhfkitError(
            f"got {len(rates)} error rates for {n_annotators} annotators; give one per annotator"
        )
    if any(not 0.0 <= r <= 1.0 for r in rates):
        raise RlhfkitError(f"error rates must lie between 0 and 1, got {rates}")
    if tie_rule not in TIE_RULES:
        raise RlhfkitError(f"unknown tie rule {tie_rule!r}; choose one of {', '.join(TIE_RULES)}")
    judge = judge or LexiconJudge()
    annotators = [ensure_annotator(store, f"{name_prefix}-{i + 1}", "simulated") for i in range(n_annotators)]
    counts = {a.name: 0 for a in annotators}
    decisive = correct = 0
    active = list(zip(annotators, rates))
    while active and (max_labels is None or sum(counts.values()) < max_labels):
        still_active = []
        for annotator, rate in active:
            if max_labels is not None and sum(counts.values()) >= max_labels:
                still_active.append((annotator, rate))
                break
            view = labeling.next_item(store, annotator.id)
            if view is None:
                continue
            still_active.append((annotator, rate))
            rng = random.Random(f"{seed}:{annotator.name}:{view.item_id}")
            answer, truth = decide(view, judge, rate, rng, tie_rule)
            try:
                labeling.submit(
                    store,
                    annotator.id,
                    view.item_id,
                    answer,
                    f"{name_prefix}:{annotator.name}:i{view.item_id}",
                )
            except labeling.ItemRetiredError:
                continue  # someone else (a person in the web app) finished it meanwhile
            counts[annotator.name] += 1
            if truth is not None:
                decisive += 1
                correct += answer.choice == truth
        active = still_active
    final = labeling.progress(store, annotators[0].id)
    return SimulationSummary(
        annotators=tuple(a.name for a in annotators),
        labels=sum(counts.values()),
        labels_per_annotator=counts,
        items_total=final.total_items,
        items_retired=final.retired_items,
        decisive_labels=decisive,
        decisive_correct=correct,
    )
