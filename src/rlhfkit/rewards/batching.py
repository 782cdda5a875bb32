"""Batches for reward-model training: every text scored once, pairs of a prompt together, little padding.

Following InstructGPT (Ouyang et al. 2022, sec. 3.5), all comparisons of one prompt go into the same
batch, and each distinct response is forwarded once however many pairs it appears in: with K responses
to a prompt, the K(K−1)/2 pairs cost K forward passes, not K(K−1). It also keeps the model from
over-fitting to a response seen in many separate batches.

Batches are packed from prompt groups sorted by length, so texts of similar length are padded
together (dynamic padding wastes little), and the order of the batches is shuffled every epoch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rlhfkit.data.preferences import Comparison


class TextTable:
    """The distinct (prompt, response) texts of a dataset, each with an index."""

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.responses: list[str] = []
        self._index: dict[tuple[str, str], int] = {}

    def add(self, prompt: str, response: str) -> int:
        key = (prompt, response)
        if key not in self._index:
            self._index[key] = len(self.prompts)
            self.prompts.append(prompt)
            self.responses.append(response)
        return self._index[key]

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass(frozen=True)
class IndexedPair:
    """A comparison as indices into a :class:`TextTable`."""

    prompt: str
    chosen: int
    rejected: int
    margin: float
    target: float
    """1 for a preference, 0.5 for a tie kept as half a win."""


def index_comparisons(comparisons: Sequence[Comparison], table: TextTable) -> list[IndexedPair]:
    return [
        IndexedPair(c.prompt, table.add(c.prompt, c.chosen), table.add(c.prompt, c.rejected), c.margin,
                    0.5 if c.tie else 1.0)
        for c in comparisons
    ]


@dataclass
class PairBatch:
    """One optimiser step's pairs.

    texts: (U,) indices of the distinct texts to forward, into the TextTable.
    chosen, rejected: (B,) positions of each pair's two texts within ``texts``.
    margin, target: (B,) float.
    """

    texts: list[int]
    chosen: torch.Tensor
    rejected: torch.Tensor
    margin: torch.Tensor
    target: torch.Tensor

    @property
    def pairs(self) -> int:
        return int(self.chosen.numel())


def _make_batch(pairs: Sequence[IndexedPair]) -> PairBatch:
    texts: list[int] = []
    position: dict[int, int] = {}
    for p in pairs:
        for t in (p.chosen, p.rejected):
            if t not in position:
                position[t] = len(texts)
                texts.append(t)
    return PairBatch(
        texts=texts,
        chosen=torch.tensor([position[p.chosen] for p in pairs], dtype=torch.long),
        rejected=torch.tensor([position[p.rejected] for p in pairs], dtype=torch.long),
        margin=torch.tensor([p.margin for p in pairs], dtype=torch.float32),
        target=torch.tensor([p.target for p in pairs], dtype=torch.float32),
    )


def shard_pair_batch(batch: PairBatch, rank: int, num_processes: int) -> tuple[PairBatch, torch.Tensor]:
    """Process ``rank``'s contiguous share of ``batch``'s pairs, and a (b,) weight per pair (1, or 0 for filler).

    Pairs of a prompt sit next to each other in a batch, so a contiguous share keeps most prompts whole. A
    batch with fewer pairs than processes leaves some shares empty; such a process scores the batch's first
    pair with weight 0, so that it still runs the forward and backward passes that the others wait for.
    """
    from rlhfkit.engine.distributed import shard_bounds

    start, end = shard_bounds(batch.pairs, rank, num_processes)
    weight = torch.ones(end - start)
    if start == end:
        start, end, weight = 0, 1, torch.zeros(1)
    chosen, rejected = batch.chosen[start:end], batch.rejected[start:end]
    used = sorted(set(chosen.tolist()) | set(rejected.tolist()))
    position = {old: new for new, old in enumerate(used)}
    shard = PairBatch(
        texts=[batch.texts[i] for i in used],
        chosen=torch.tensor([position[i] for i in chosen.tolist()], dtype=torch.long),
        rejected=torch.tensor([position[i] for i in rejected.tolist()], dtype=torch.long),
        margin=batch.margin[start:end],
        target=batch.target[start:end],
    )
    return shard, weight


def pair_batches(pairs: Sequence[IndexedPair], lengths: Sequence[int], batch_size: int, seed: int,
                 length_sorted: bool = True, window: int = 64) -> list[PairBatch]:  # fmt: skip
    """One epoch of batches of about ``batch_size`` pairs; a prompt's pairs are never split.

    Prompt groups are shuffled with ``seed``; with ``length_sorted``, each window of ``window`` batches'
    worth of groups is sorted by its longest text before packing (sorting within windows, not globally,
    keeps some randomness in which prompts meet in a batch). A group larger than ``batch_size`` forms a
    batch of its own.
    """
    groups: dict[str, list[IndexedPair]] = {}
    for p in pairs:
        groups.setdefault(p.prompt, []).append(p)
    rng = random.Random(seed)
    ordered = list(groups.values())
    rng.shuffle(ordered)
    if length_sorted:
        span = max(1, window * batch_size)
        resorted: list[list[IndexedPair]] = []
        start = 0
        while start < len(ordered):
            chunk, count = [], 0
            while start < len(ordered) and count < span:
                chunk.append(ordered[start])
                count += len(ordered[start])
                start += 1
            chunk.sort(key=lambda g: max(max(lengths[p.chosen], lengths[p.rejected]) for p in g))
            resorted.extend(chunk)
        ordered = resorted
    batches: list[PairBatch] = []
    current: list[IndexedPair] = []
    for group in ordered:
        if current and len(current) + len(group) > batch_size:
            batches.append(_make_batch(current))
            current = []
        current.extend(group)
    if current:
        batches.append(_make_batch(current))
    rng.shuffle(batches)
    return batches


@dataclass
class LabelBatch:
    """Unpaired examples: texts (B,) indices into the TextTable, labels (B,) 1.0 good / 0.0 bad."""

    texts: list[int]
    labels: torch.Tensor

    @property
    def pairs(self) -> int:
        return len(self.texts)


def label_batches(texts: Sequence[int], labels: Sequence[bool], batch_size: int, seed: int) -> list[LabelBatch]:
    """One epoch of batches of unpaired examples, in random order.

    Not length-sorted: length often goes with the label (a refusal is short, an insult adds words), so
    sorted batches would each hold mostly one label, and the model would learn each batch's label
    frequency instead of the content. A pair, by contrast, always holds one chosen and one rejected text.
    """
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    return [
        LabelBatch([texts[i] for i in order[s : s + batch_size]],
                   torch.tensor([float(labels[i]) for i in order[s : s + batch_size]]))
        for s in range(0, len(order), batch_size)
    ]


def shard_label_batch(batch: LabelBatch, rank: int, num_processes: int) -> tuple[LabelBatch, torch.Tensor]:
    """Process ``rank``'s contiguous share of ``batch``, and a weight per example (0 for a filler, as above)."""
    from rlhfkit.engine.distributed import shard_bounds

    start, end = shard_bounds(len(batch.texts), rank, num_processes)
    weight = torch.ones(end - start)
    if start == end:
        start, end, weight = 0, 1, torch.zeros(1)
    return LabelBatch(batch.texts[start:end], batch.labels[start:end]), weight
