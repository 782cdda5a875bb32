"""Adding things to label: comparison pairs (pairwise projects) and single completions (binary projects).

``rlhfkit feedback generate`` samples candidates from one or two policies and hands them to
:func:`add_candidates`; imports and tests use the same functions.

The same comparison is stored once: an item is identified by its prompt and its (unordered) candidate
texts, so re-running a generation or an import adds only what is new.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from rlhfkit.errors import RlhfkitError
from rlhfkit.feedback.models import Item
from rlhfkit.feedback.store import FeedbackStore, check_text, utcnow

_SOURCE_MAX = 200


@dataclass(frozen=True)
class NewItem:
    """An item to add: a prompt and one (binary) or two (pairwise) candidate responses."""

    prompt: str
    candidates: tuple[str, ...]
    sources: tuple[str | None, ...] = ()
    """Per candidate, where it came from (a policy name such as ``sft`` or ``ppo``), if known."""
    reference: str | None = None
    """An optional reference answer (e.g. the dataset's human summary) annotators may consult."""
    metadata: Mapping[str, object] = field(default_factory=dict)
    """Free JSON-serialisable facts kept with the item (e.g. the dataset row id)."""

    @property
    def content_key(self) -> str:
        """SHA-256 of the prompt and the sorted candidates: equal for the same comparison in either order."""
        payload = json.dumps([self.prompt, sorted(self.candidates)], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AddResult:
    """What adding items did."""

    item_ids: list[int]
    """Ids of the newly added items, in input order."""
    duplicates: int
    """Items already in the store (or repeated in the input) and therefore not added again."""
    identical_skipped: int = 0
    """Candidate pairs with the same text on both sides: nothing to compare, so not added."""

    @property
    def added(self) -> int:
        return len(self.item_ids)


def add_items(store: FeedbackStore, items: Sequence[NewItem]) -> AddResult:
    """Add items in one transaction (all or nothing), skipping ones already stored."""
    expected = 2 if store.project.question_type == "pairwise" else 1
    for n, item in enumerate(items):
        validate_item(item, expected, f"item {n}")

    def work(session: Session) -> AddResult:
        ids, added = upsert_items(session, items)
        new_ids = [i for i, is_new in zip(ids, added) if is_new]
        return AddResult(item_ids=new_ids, duplicates=len(items) - len(new_ids))

    # A concurrent writer adding the same comparison makes the unique key collide; run again and skip it.
    return store.write(work, retry_on_conflict=True)


def upsert_items(session: Session, items: Sequence[NewItem]) -> tuple[list[int], list[bool]]:
    """Inside a transaction: the id of each item (existing or newly inserted) and whether it is new."""
    keys = [item.content_key for item in items]
    known: dict[str, int] = {}
    unique_keys = list(dict.fromkeys(keys))
    for start in range(0, len(unique_keys), 500):  # bounded IN-lists; SQLite caps bound parameters
        chunk = unique_keys[start : start + 500]
        known.update(
            (key, id_)
            for key, id_ in session.execute(
                select(Item.content_key, Item.id).where(Item.content_key.in_(chunk))
            )
        )
    ids: list[int] = []
    is_new: list[bool] = []
    pending: dict[str, Item] = {}
    now = utcnow()
    for item, key in zip(items, keys):
        if key in known or key in pending:
            ids.append(-1)
            is_new.append(False)
            continue
        row = Item(
            prompt=item.prompt,
            candidate_0=item.candidates[0],
            candidate_1=item.candidates[1] if len(item.candidates) > 1 else None,
            source_0=item.sources[0] if item.sources else None,
            source_1=item.sources[1] if len(item.sources) > 1 else None,
            reference=item.reference,
            metadata_json=json.dumps(dict(item.metadata), ensure_ascii=False) if item.metadata else None,
            content_key=key,
            created_at=now,
        )
        session.add(row)
        pending[key] = row
        ids.append(-1)
        is_new.append(True)
    session.flush()
    for key, row in pending.items():
        known[key] = row.id
    return [known[key] for key in keys], is_new


def validate_item(item: NewItem, expected: int, where: str) -> None:
    if len(item.candidates) != expected:
        kind = "pairwise" if expected == 2 else "binary"
        raise RlhfkitError(
            f"{where} has {len(item.candidates)} candidates; a {kind} project needs {expected}"
        )
    check_text(item.prompt, f"{where}: the prompt")
    for i, candidate in enumerate(item.candidates):
        check_text(candidate, f"{where}: candidate {i}")
    if item.reference is not None:
        check_text(item.reference, f"{where}: the reference")
    if item.sources and len(item.sources) != len(item.candidates):
        raise RlhfkitError(f"{where} has {len(item.sources)} sources for {len(item.candidates)} candidates")
    for source in item.sources:
        if source is not None and (len(check_text(source, f"{where}: a source")) > _SOURCE_MAX):
            raise RlhfkitError(f"{where}: a source name is longer than {_SOURCE_MAX} characters")
    try:
        json.dumps(dict(item.metadata))
    except (TypeError, ValueError) as exc:
        raise RlhfkitError(f"{where}: metadata is not JSON-serialisable ({exc})") from None


def _check_lengths(prompts: Sequence[str], per_prompt: Sequence[Sequence[object]] | None, what: str) -> None:
    if per_prompt is not None and len(per_prompt) != len(prompts):
        raise RlhfkitError(
            f"got {len(prompts)} prompts but {len(per_prompt)} {what}; give one entry per prompt"
        )


def add_comparisons(
    store: FeedbackStore,
    prompts: Sequence[str],
    candidates: Sequence[Sequence[str]],
    sources: Sequence[Sequence[str | None]] | None = None,
    *,
    references: Sequence[str | None] | None = None,
    metadata: Sequence[Mapping[str, object]] | None = None,
    max_pairs_per_prompt: int | None = None,
    seed: int = 0,
) -> AddResult:
    """Add comparison items for a pairwise project: each prompt's K >= 2 candidates paired up.

    All K(K-1)/2 pairs are added, or ``max_pairs_per_prompt`` of them drawn at random (seeded). One
    sample each from two policies is K = 2 with ``sources=[["sft", "ppo"], ...]``. Pairs whose two texts
    are identical are skipped (nothing to compare); comparisons already in the store are skipped too.
    The stored order of each pair is shuffled (seeded); which candidate is shown on the left is decided
    later, per annotator. ``sources`` travel with their candidates.
    """
    if store.project.question_type != "pairwise":
        raise RlhfkitError(f"the project asks {store.project.question_type} questions; use add_completions")
    _check_lengths(prompts, candidates, "candidate lists")
    _check_lengths(prompts, sources, "source lists")
    _check_lengths(prompts, references, "references")
    _check_lengths(prompts, metadata, "metadata entries")
    if max_pairs_per_prompt is not None and max_pairs_per_prompt < 1:
        raise RlhfkitError(f"max_pairs_per_prompt must be at least 1, not {max_pairs_per_prompt}")
    new_items: list[NewItem] = []
    identical = 0
    for p, prompt in enumerate(prompts):
        texts = list(candidates[p])
        if len(texts) < 2:
            raise RlhfkitError(f"prompt {p} has {len(texts)} candidate(s); a comparison needs at least 2")
        origin = list(sources[p]) if sources is not None else [None] * len(texts)
        if len(origin) != len(texts):
            raise RlhfkitError(f"prompt {p} has {len(texts)} candidates but {len(origin)} sources")
        pairs = list(itertools.combinations(range(len(texts)), 2))
        if max_pairs_per_prompt is not None and len(pairs) > max_pairs_per_prompt:
            pairs = sorted(random.Random(f"{seed}:{p}").sample(pairs, max_pairs_per_prompt))
        order = random.Random(f"{seed}:order:{p}")
        for i, j in pairs:
            if texts[i] == texts[j]:
                identical += 1
                continue
            if order.random() < 0.5:
                # Shuffle which candidate is stored first, so that "first"/"second" answers are not
                # "policy X"/"policy Y" answers: otherwise a strong policy makes one answer dominate and
                # chance-corrected agreement (alpha, kappa) collapses even when annotators agree.
                i, j = j, i
            new_items.append(
                NewItem(
                    prompt=prompt,
                    candidates=(texts[i], texts[j]),
                    sources=(origin[i], origin[j]) if sources is not None else (),
                    reference=references[p] if references is not None else None,
                    metadata=metadata[p] if metadata is not None else {},
                )
            )
    result = add_items(store, new_items)
    return AddResult(item_ids=result.item_ids, duplicates=result.duplicates, identical_skipped=identical)


def add_completions(
    store: FeedbackStore,
    prompts: Sequence[str],
    completions: Sequence[Sequence[str]],
    sources: Sequence[Sequence[str | None]] | None = None,
    *,
    references: Sequence[str | None] | None = None,
    metadata: Sequence[Mapping[str, object]] | None = None,
) -> AddResult:
    """Add single-completion items for a binary (good/bad) project: one item per completion."""
    if store.project.question_type != "binary":
        raise RlhfkitError(f"the project asks {store.project.question_type} questions; use add_comparisons")
    _check_lengths(prompts, completions, "completion lists")
    _check_lengths(prompts, sources, "source lists")
    _check_lengths(prompts, references, "references")
    _check_lengths(prompts, metadata, "metadata entries")
    new_items = []
    for p, prompt in enumerate(prompts):
        origin = list(sources[p]) if sources is not None else [None] * len(completions[p])
        if len(origin) != len(completions[p]):
            raise RlhfkitError(f"prompt {p} has {len(completions[p])} completions but {len(origin)} sources")
        for text, source in zip(completions[p], origin):
            new_items.append(
                NewItem(
                    prompt=prompt,
                    candidates=(text,),
                    sources=(source,) if sources is not None else (),
                    reference=references[p] if references is not None else None,
                    metadata=metadata[p] if metadata is not None else {},
                )
            )
    return add_items(store, new_items)


def add_candidates(
    store: FeedbackStore,
    prompts: Sequence[str],
    candidates: Sequence[Sequence[str]],
    sources: Sequence[Sequence[str | None]] | None = None,
    *,
    references: Sequence[str | None] | None = None,
    metadata: Sequence[Mapping[str, object]] | None = None,
    max_pairs_per_prompt: int | None = None,
    seed: int = 0,
) -> AddResult:
    """:func:`add_comparisons` or :func:`add_completions`, whichever the project's question type needs.

    ``max_pairs_per_prompt`` and ``seed`` only matter for pairwise projects.
    """
    if store.project.question_type == "pairwise":
        return add_comparisons(
            store,
            prompts,
            candidates,
            sources,
            references=references,
            metadata=metadata,
            max_pairs_per_prompt=max_pairs_per_prompt,
            seed=seed,
        )
    return add_completions(store, prompts, candidates, sources, references=references, metadata=metadata)
