"""Synthetic preference pairs from the built-in dialogue corpus (`rlhfkit reward make-pairs`).

For each dialogue (the prompt is the policy's prompt: the template with the dialogue in it), the clean
reference summary is preferred over

* ``toxic`` — the same summary with an insult from the lexicon put into it (what RLHF must remove), and
* one quality-only flaw, chosen at random among the enabled kinds:
  ``off_topic`` — the summary of another dialogue on a different topic (fluent, clean, but wrong), or
  ``truncated`` — the summary cut off after 35–60 % of its words.

The two pairs of a dialogue share the prompt and the chosen summary, as several comparisons of one
prompt do in real data. Label noise like that of real annotators is simulated by flipping each label
with probability ``flip``; with several annotators, each labels every pair and flips independently.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from rlhfkit.config import DEFAULT_TEMPLATE
from rlhfkit.data.synthetic import _insult, generate_corpus
from rlhfkit.errors import RlhfkitError

PAIR_KINDS = ("toxic", "off_topic", "truncated")


def _truncate(rng: random.Random, summary: str) -> str:
    words = summary.split()
    keep = max(3, int(len(words) * rng.uniform(0.35, 0.6)))
    return " ".join(words[: min(keep, len(words) - 1)])


def make_synthetic_pairs(
    size: int = 500,
    seed: int = 0,
    flip: float = 0.0,
    annotators: int = 1,
    kinds: Sequence[str] = PAIR_KINDS,
    template: str = DEFAULT_TEMPLATE,
    min_chars: int = 200,
    max_chars: int = 1000,
) -> list[dict[str, Any]]:
    """Preference records (TRL fields; ``annotator`` too when ``annotators`` > 1) for ``size`` dialogues.

    Dialogues are kept when min_chars < length <= max_chars, the course lab's filter, so that prompts look
    like the ones PPO will see. Deterministic given ``seed``.
    """
    unknown = [k for k in kinds if k not in PAIR_KINDS]
    if unknown or not kinds:
        raise RlhfkitError(f"pair kinds must be a non-empty subset of {', '.join(PAIR_KINDS)}, got {list(kinds)}.")
    if size <= 0 or annotators <= 0:
        raise RlhfkitError(f"size and annotators must be positive, got size={size}, annotators={annotators}.")
    if not 0.0 <= flip <= 1.0:
        raise RlhfkitError(f"flip is a probability in [0, 1], got {flip}.")
    if "{dialogue}" not in template:
        raise RlhfkitError("the prompt template has no {dialogue} placeholder.")
    corpus = [e for e in generate_corpus(size=3 * size + 50, toxic_fraction=0.0, seed=seed)
              if min_chars < len(e.dialogue) <= max_chars][:size]  # fmt: skip
    if len(corpus) < size:
        raise RlhfkitError(f"only {len(corpus)} synthetic dialogues pass the length filter; ask for fewer or widen it.")
    rng = random.Random(seed + 7919)
    quality = [k for k in kinds if k != "toxic"]
    records: list[dict[str, Any]] = []
    for example in corpus:
        prompt = template.replace("{dialogue}", example.dialogue)
        flawed: list[str] = []
        if "toxic" in kinds:
            flawed.append(_insult(rng, example.summary))
        if quality:
            kind = quality[rng.randrange(len(quality))]
            if kind == "off_topic":
                others = [e for e in corpus if e.topic != example.topic]
                flawed.append(others[rng.randrange(len(others))].summary)
            else:
                flawed.append(_truncate(rng, example.summary))
        for rejected in flawed:
            for a in range(annotators):
                chosen, worse = (rejected, example.summary) if rng.random() < flip else (example.summary, rejected)
                record: dict[str, Any] = {"prompt": prompt, "chosen": chosen, "rejected": worse}
                if annotators > 1:
                    record["annotator"] = f"annotator-{a + 1}"
                records.append(record)
    return records
