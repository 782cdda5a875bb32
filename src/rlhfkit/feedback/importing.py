"""Importing preference data files into a feedback project.

The whole file is parsed first (a bad line stops the import before anything is written), then items and
labels are written in one transaction: a failed or killed import leaves the store as it was.

A pair whose chosen and rejected texts are identical is skipped and counted
(:attr:`ImportResult.identical_skipped`): there is nothing to compare.

By default each record also becomes a label by an *imported* annotator: the file's ``worker``
(summarize-from-feedback) or one annotator per format (``import:trl``, ``import:hh-rlhf``). Those labels
count like any other (agreement, export, retirement). With ``labeled=False`` only the comparisons are
added, to be labeled afresh in the web app. Importing the same file again adds nothing: items are
identified by their content and imported labels by annotator and item.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from rlhfkit.data.preference_readers import IMPORT_FORMATS, read_pairs, read_trl_unpaired
from rlhfkit.data.preferences import PreferencePair, UnpairedLabel
from rlhfkit.errors import RlhfkitError
from rlhfkit.feedback.items import NewItem, upsert_items, validate_item
from rlhfkit.feedback.models import Annotator, Item, Label
from rlhfkit.feedback.store import FeedbackStore, utcnow

_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.:@+-]")


@dataclass(frozen=True)
class ImportResult:
    records: int
    """Records read from the file."""
    items_added: int
    labels_added: int
    labels_existing: int
    """Labels already in the store (the file was imported before, or repeats a worker's judgment)."""
    annotators: tuple[str, ...]
    """Imported annotators the labels were attributed to."""
    identical_skipped: int = 0
    """Pairs whose chosen and rejected texts are the same: nothing to learn from them, so not imported."""


def _annotator_name(fmt: str, worker: str | None) -> str:
    if worker is None:
        return f"import:{fmt}"
    return (f"{fmt}:" + _UNSAFE_NAME_CHARS.sub("_", worker))[:100]


def import_file(
    store: FeedbackStore, path: str | os.PathLike[str], fmt: str, *, labeled: bool = True
) -> ImportResult:
    """Import ``path`` in format ``trl``, ``hh-rlhf``, ``summarize`` (pairwise) or ``trl-unpaired`` (binary)."""
    if fmt not in IMPORT_FORMATS:
        raise RlhfkitError(f"unknown import format {fmt!r}; choose one of {', '.join(IMPORT_FORMATS)}")
    question_type = store.project.question_type
    wanted = "binary" if fmt == "trl-unpaired" else "pairwise"
    if question_type != wanted:
        raise RlhfkitError(
            f"{fmt} files hold {'good/bad labels' if wanted == 'binary' else 'preference pairs'}, which belong in "
            f"a {wanted} project; this project is {question_type}"
        )
    records: list[PreferencePair] | list[UnpairedLabel]
    if fmt == "trl-unpaired":
        records = list(read_trl_unpaired(path))
        read, identical = len(records), 0
        items = [NewItem(prompt=r.prompt, candidates=(r.completion,)) for r in records]
    else:
        pairs = list(read_pairs(path, fmt))
        # A pair with the same text on both sides teaches a reward model nothing (`reward train` drops it
        # too) and would be an item with nothing to compare; add_comparisons skips such pairs as well.
        records = [p for p in pairs if p.chosen != p.rejected]
        read, identical = len(pairs), len(pairs) - len(records)
        items = [_pair_item(r) for r in records]
    for record, item in zip(records, items):
        validate_item(item, 2 if wanted == "pairwise" else 1, f"{path}:{record.line}")

    keys = [item.content_key for item in items]
    names = [_annotator_name(fmt, r.annotator) for r in records]
    client_ids = [_client_id(name, key) for name, key in zip(names, keys)]

    def work(session: Session) -> ImportResult:
        ids, is_new = upsert_items(session, items)
        if not labeled:
            return ImportResult(read, sum(is_new), 0, 0, (), identical)
        annotator_ids = _ensure_imported_annotators(session, set(names))
        used = _in_chunks(session, Label.client_id, Label.client_id, client_ids)
        first_texts = _in_chunks(session, Item.id, Item.candidate_0, ids)
        # Imported annotators only ever get labels through imports, so counting theirs gives the revision.
        revisions: Counter = Counter()
        for annotator_id, item_id in session.execute(
            select(Label.annotator_id, Label.item_id).where(
                Label.annotator_id.in_(list(annotator_ids.values()))
            )
        ).tuples():
            revisions[(annotator_id, item_id)] += 1
        added = existing = 0
        now = utcnow()
        for record, item_id, name, client_id in zip(records, ids, names, client_ids):
            if client_id in used:
                existing += 1
                continue
            used[client_id] = client_id
            if isinstance(record, UnpairedLabel):
                choice, margin = ("good" if record.label else "bad"), None
            else:
                choice = "first" if record.chosen == first_texts[item_id] else "second"
                margin = record.margin
            annotator_id = annotator_ids[name]
            session.add(
                Label(
                    item_id=item_id,
                    annotator_id=annotator_id,
                    revision=revisions[(annotator_id, item_id)],
                    client_id=client_id,
                    choice=choice,
                    margin=margin,
                    created_at=now,
                )
            )
            revisions[(annotator_id, item_id)] += 1
            added += 1
        session.flush()
        return ImportResult(read, sum(is_new), added, existing, tuple(sorted(set(names))), identical)

    return store.write(work)


def _in_chunks(session: Session, key_column, value_column, keys: list) -> dict:
    """``{key: value}`` for the stored rows whose ``key_column`` is among ``keys`` (bounded IN-lists)."""
    unique = list(dict.fromkeys(keys))
    found: dict = {}
    for start in range(0, len(unique), 500):
        chunk = unique[start : start + 500]
        found.update(
            (k, v) for k, v in session.execute(select(key_column, value_column).where(key_column.in_(chunk)))
        )
    return found


def _pair_item(pair: PreferencePair) -> NewItem:
    """The comparison of a pair, its two candidates stored in an order that does not reveal the preference.

    A file lists the chosen response first; storing it first every time would make every imported
    label answer "first", and chance-corrected agreement on such one-sided answers is meaningless. The
    order is a function of the content, so re-importing finds the same item.
    """
    texts = (pair.chosen, pair.rejected)
    sources = (pair.chosen_source, pair.rejected_source)
    if int(NewItem(prompt=pair.prompt, candidates=texts).content_key[:8], 16) % 2:
        texts, sources = texts[::-1], sources[::-1]
    return NewItem(prompt=pair.prompt, candidates=texts, sources=sources if any(sources) else ())


def _client_id(annotator: str, content_key: str) -> str:
    # One imported label per annotator and item: the same judgment imported twice gets the same id.
    return "import:" + hashlib.sha256(f"{annotator}\n{content_key}".encode()).hexdigest()[:56]


def _ensure_imported_annotators(session: Session, names: set[str]) -> dict[str, int]:
    found = {a.name: a for a in session.scalars(select(Annotator).where(Annotator.name.in_(sorted(names))))}
    for name, annotator in found.items():
        if annotator.kind != "imported":
            raise RlhfkitError(
                f"annotator {name!r} exists as a {annotator.kind} annotator; rename it before importing"
            )
    now = utcnow()
    for name in sorted(names - found.keys()):
        row = Annotator(name=name, kind="imported", is_admin=False, token_hash=None, created_at=now)
        session.add(row)
        found[name] = row
    session.flush()
    return {name: row.id for name, row in found.items()}
