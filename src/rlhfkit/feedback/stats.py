"""Project figures for ``rlhfkit feedback stats`` and the admin page: counts, progress, agreement."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rlhfkit.data.agreement import agreement_with_majority, percent_agreement
from rlhfkit.feedback.agreement import fleiss_kappa, krippendorff_alpha_nominal
from rlhfkit.feedback.annotators import list_annotators
from rlhfkit.feedback.export import live_labels
from rlhfkit.feedback.labeling import SKIP
from rlhfkit.feedback.models import Annotator, Item, Label, Retraction
from rlhfkit.feedback.store import FeedbackStore, ProjectInfo, utcnow


@dataclass(frozen=True)
class AnnotatorStats:
    name: str
    kind: str
    labels: int
    """Live labels (skips not included)."""
    skips: int
    undos: int
    median_seconds: float | None
    """Median time from an item being shown to its label being submitted (web app labels only)."""
    labels_last_hour: int
    agreement_with_majority: float | None
    """Share of this annotator's labels that match the plurality of the item's other annotators."""
    compared_with_majority: int
    """Items that share was computed over (the others had a clear plurality)."""
    choices: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class AgreementStats:
    items: int
    """Items with at least two live labels (the ones agreement is measured on)."""
    percent: float | None
    krippendorff_alpha: float | None
    fleiss_kappa: float | None
    """Over the items with exactly ``overlap`` labels (Fleiss' κ needs equal counts); None if none."""
    fleiss_items: int


@dataclass(frozen=True)
class FeedbackStats:
    project: ProjectInfo
    items_total: int
    items_retired: int
    items_in_progress: int
    """Items with some labels, not yet retired."""
    items_unlabeled: int
    labels_live: int
    labels_retracted: int
    skips: int
    choices: dict[str, int]
    agreement: AgreementStats
    annotators: list[AnnotatorStats]

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["project"]["created_at"] = self.project.created_at.isoformat()
        return data

    def render_text(self) -> str:
        """A plain-text report for the terminal."""
        p = self.project
        done = self.items_retired / self.items_total if self.items_total else 0.0
        lines = [
            f"project {p.name}: {p.question_type} questions, {p.overlap} annotator(s) per item",
            (
                f"items: {self.items_total} total, {self.items_retired} retired ({done:.0%}), "
                f"{self.items_in_progress} in progress, {self.items_unlabeled} unlabeled"
            ),
            f"labels: {self.labels_live} live, {self.labels_retracted} undone, {self.skips} skips",
            "answers: " + (", ".join(f"{k} {v}" for k, v in sorted(self.choices.items())) or "none yet"),
            (
                f"agreement over {self.agreement.items} item(s) with 2+ labels: "
                f"percent {_fmt(self.agreement.percent, pct=True)}, "
                f"Krippendorff's alpha {_fmt(self.agreement.krippendorff_alpha)}, "
                f"Fleiss' kappa {_fmt(self.agreement.fleiss_kappa)} ({self.agreement.fleiss_items} complete items)"
            ),
        ]
        if self.annotators:
            lines.append("")
            header = f"{'annotator':<24}{'kind':<10}{'labels':>7}{'skips':>7}{'undos':>7}{'med s':>8}{'last h':>8}  vs majority"
            lines.append(header)
            for a in self.annotators:
                majority = f"{_fmt(a.agreement_with_majority, pct=True)} of {a.compared_with_majority}"
                lines.append(
                    f"{a.name[:23]:<24}{a.kind:<10}{a.labels:>7}{a.skips:>7}{a.undos:>7}"
                    f"{_fmt(a.median_seconds, digits=1):>8}{a.labels_last_hour:>8}  {majority}"
                )
        return "\n".join(lines)


def _fmt(value: float | None, *, pct: bool = False, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1%}" if pct else f"{value:.{digits}f}"


def compute_stats(store: FeedbackStore) -> FeedbackStats:
    """All figures of the project, from its live labels."""
    overlap = store.project.overlap
    records = live_labels(store, include_skips=True)
    labels = [r for r in records if r.choice != SKIP]

    def counts(session: Session) -> tuple[int, int, dict[str, int]]:
        total = session.scalar(select(func.count()).select_from(Item)) or 0
        retracted = session.scalar(select(func.count()).select_from(Retraction)) or 0
        undos = {
            name: count
            for name, count in session.execute(
                select(Annotator.name, func.count())
                .select_from(Retraction)
                .join(Label, Label.id == Retraction.label_id)
                .join(Annotator, Annotator.id == Label.annotator_id)
                .group_by(Annotator.name)
            )
        }
        return total, retracted, undos

    items_total, retracted, undos = store.read(counts)

    by_item: dict[int, dict[str, str]] = defaultdict(dict)
    for r in labels:
        by_item[r.item_id][r.annotator] = r.choice
    units = [list(v.values()) for v in by_item.values()]
    multi = [u for u in units if len(u) >= 2]
    complete = [u for u in units if len(u) == overlap] if overlap >= 2 else []
    agreement = AgreementStats(
        items=len(multi),
        percent=percent_agreement(multi),
        krippendorff_alpha=krippendorff_alpha_nominal(multi),
        fleiss_kappa=fleiss_kappa(complete) if complete else None,
        fleiss_items=len(complete),
    )
    retired = sum(1 for u in units if len(u) >= overlap)
    with_majority = agreement_with_majority(by_item)

    hour_ago = utcnow() - timedelta(hours=1)
    annotators = []
    per_annotator = defaultdict(list)
    for r in records:
        per_annotator[r.annotator].append(r)
    for info in list_annotators(store):
        name, kind = info.name, info.kind
        own = per_annotator.get(name, [])
        own_labels = [r for r in own if r.choice != SKIP]
        if not own and not undos.get(name):
            continue
        seconds = [r.seconds_spent for r in own_labels if r.seconds_spent is not None]
        majority = with_majority.get(name)
        annotators.append(
            AnnotatorStats(
                name=name,
                kind=kind,
                labels=len(own_labels),
                skips=len(own) - len(own_labels),
                undos=undos.get(name, 0),
                median_seconds=statistics.median(seconds) if seconds else None,
                labels_last_hour=sum(1 for r in own_labels if r.created_at >= hour_ago),
                agreement_with_majority=majority.rate if majority else None,
                compared_with_majority=majority.compared if majority else 0,
                choices=dict(Counter(r.choice for r in own_labels)),
            )
        )
    return FeedbackStats(
        project=store.project,
        items_total=items_total,
        items_retired=retired,
        items_in_progress=len(units) - retired,
        items_unlabeled=items_total - len(units),
        labels_live=len(labels),
        labels_retracted=retracted,
        skips=len(records) - len(labels),
        choices=dict(Counter(r.choice for r in labels)),
        agreement=agreement,
        annotators=annotators,
    )
