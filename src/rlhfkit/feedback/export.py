"""Reading the live labels out of the store, as records or as TRL training files.

Paired export (pairwise projects) -- one line per judgment that one candidate is better:
    ``{"prompt", "chosen", "rejected", "margin"}`` with margin 1.0 / 2.0 / 3.0 for a stated strength of
    slightly / clearly / much better; an imported label keeps the margin its file stated (0.0 when the
    file stated none). Answers ``tie`` and ``both_bad`` say nothing about which is better and are left
    out of the paired export.
Unpaired export -- one line per judged completion, ``{"prompt", "completion", "label"}``:
    binary projects: good → true, bad → false. Pairwise projects (as TRL's own unpairing does): the
    preferred candidate → true and the other → false; ``both_bad`` → both false; ``tie`` → left out.
Aggregation:
    ``label`` (default) writes every annotator's live label (disagreements included, which is what a
    Bradley–Terry model should see); ``majority`` writes one line per item from the plurality answer,
    dropping items whose top answers are tied, with the mean margin of the annotators in the majority.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from rlhfkit.data.agreement import plurality
from rlhfkit.data.preferences import (
    PreferencePair,
    UnpairedLabel,
    pair_to_trl,
    unpaired_to_trl,
    write_jsonl_atomic,
)
from rlhfkit.errors import RlhfkitError
from rlhfkit.feedback.labeling import SKIP, STRENGTH_MARGINS, live_label_query
from rlhfkit.feedback.models import Annotator, Item, Label
from rlhfkit.feedback.store import FeedbackStore

AGGREGATIONS = ("label", "majority")


@dataclass(frozen=True)
class LabelRecord:
    """A live label joined with its item and annotator."""

    label_id: int
    item_id: int
    annotator: str
    annotator_kind: str
    choice: str
    strength: int | None
    margin: float | None
    """The TRL margin: stated by an imported file, or derived from ``strength``."""
    toxic: tuple[bool, bool]
    comment: str | None
    first_on_left: bool | None
    seconds_spent: float | None
    created_at: datetime
    prompt: str
    candidates: tuple[str, ...]
    sources: tuple[str | None, ...]


def live_labels(store: FeedbackStore, *, include_skips: bool = False) -> list[LabelRecord]:
    """Every live label, ordered by item and then by when it was given."""

    def work(session: Session) -> list[LabelRecord]:
        query = (
            live_label_query()
            .add_columns(Item, Annotator.name, Annotator.kind)
            .join(Item, Item.id == Label.item_id)
            .join(Annotator, Annotator.id == Label.annotator_id)
            .order_by(Label.item_id, Label.id)
        )
        if not include_skips:
            query = query.where(Label.choice != SKIP)
        records = []
        for label, item, name, kind in session.execute(query).tuples():
            pairwise = item.candidate_1 is not None
            margin = label.margin
            if margin is None and label.strength is not None:
                margin = STRENGTH_MARGINS[label.strength]
            records.append(
                LabelRecord(
                    label_id=label.id,
                    item_id=item.id,
                    annotator=name,
                    annotator_kind=kind,
                    choice=label.choice,
                    strength=label.strength,
                    margin=margin,
                    toxic=(label.toxic_0, label.toxic_1),
                    comment=label.comment,
                    first_on_left=label.first_on_left,
                    seconds_spent=label.seconds_spent,
                    created_at=label.created_at,
                    prompt=item.prompt,
                    candidates=(item.candidate_0, item.candidate_1) if pairwise else (item.candidate_0,),
                    sources=(item.source_0, item.source_1) if pairwise else (item.source_0,),
                )
            )
        return records

    return store.read(work)


def _selected(store: FeedbackStore, aggregate: str, complete_only: bool) -> list[list[LabelRecord]]:
    """Live labels grouped per item: one group per label, or one group per item for ``majority``."""
    if aggregate not in AGGREGATIONS:
        raise RlhfkitError(f"unknown aggregation {aggregate!r}; choose one of {', '.join(AGGREGATIONS)}")
    by_item: dict[int, list[LabelRecord]] = defaultdict(list)
    for record in live_labels(store):
        by_item[record.item_id].append(record)
    groups = []
    for records in by_item.values():
        if complete_only and len(records) < store.project.overlap:
            continue
        candidates = records[0].candidates
        if len(set(candidates)) < len(candidates):
            # Stored by an import from before such pairs were skipped: the same text on both sides says
            # nothing, and as a pair it would be chosen == rejected.
            continue
        if aggregate == "label":
            groups.extend([r] for r in records)
        else:
            winner = plurality([r.choice for r in records])
            if winner is not None:
                groups.append([r for r in records if r.choice == winner])
    return groups


def _mean_margin(records: list[LabelRecord]) -> float | None:
    margins = [r.margin for r in records if r.margin is not None]
    return sum(margins) / len(margins) if margins else None


def preference_pairs(
    store: FeedbackStore, *, aggregate: str = "label", complete_only: bool = False
) -> list[PreferencePair]:
    """The pairwise project's preferences (ties and both-bad left out); see the module docstring."""
    if store.project.question_type != "pairwise":
        raise RlhfkitError("a binary project has no preference pairs; export its unpaired labels instead")
    pairs = []
    for group in _selected(store, aggregate, complete_only):
        first = group[0]
        if first.choice not in ("first", "second"):
            continue
        winner = 0 if first.choice == "first" else 1
        pairs.append(
            PreferencePair(
                prompt=first.prompt,
                chosen=first.candidates[winner],
                rejected=first.candidates[1 - winner],
                margin=_mean_margin(group),
                annotator=first.annotator if aggregate == "label" else None,
                chosen_source=first.sources[winner],
                rejected_source=first.sources[1 - winner],
            )
        )
    return pairs


def unpaired_labels(
    store: FeedbackStore, *, aggregate: str = "label", complete_only: bool = False
) -> list[UnpairedLabel]:
    """Good/bad judgments of single completions; see the module docstring for pairwise projects."""
    rows = []
    for group in _selected(store, aggregate, complete_only):
        first = group[0]
        who = first.annotator if aggregate == "label" else None
        verdicts: list[tuple[str, bool]] = []
        if first.choice in ("good", "bad"):
            verdicts = [(first.candidates[0], first.choice == "good")]
        elif first.choice in ("first", "second"):
            winner = 0 if first.choice == "first" else 1
            verdicts = [(first.candidates[winner], True), (first.candidates[1 - winner], False)]
        elif first.choice == "both_bad":
            verdicts = [(first.candidates[0], False), (first.candidates[1], False)]
        rows.extend(
            UnpairedLabel(prompt=first.prompt, completion=c, label=v, annotator=who) for c, v in verdicts
        )
    return rows


def export_pairs(
    store: FeedbackStore,
    path: str | os.PathLike[str],
    *,
    aggregate: str = "label",
    complete_only: bool = False,
) -> int:
    """Write the TRL preference JSONL atomically; returns the number of lines."""
    pairs = preference_pairs(store, aggregate=aggregate, complete_only=complete_only)
    return write_jsonl_atomic((pair_to_trl(p) for p in pairs), path)


def export_unpaired(
    store: FeedbackStore,
    path: str | os.PathLike[str],
    *,
    aggregate: str = "label",
    complete_only: bool = False,
) -> int:
    """Write the TRL unpaired JSONL atomically; returns the number of lines."""
    labels = unpaired_labels(store, aggregate=aggregate, complete_only=complete_only)
    return write_jsonl_atomic((unpaired_to_trl(u) for u in labels), path)
