"""What an evaluation holds per policy, and the before/after tables made from it.

:class:`PolicySamples` is one policy's responses to the evaluation prompts with every measure's value per
prompt. :func:`before_after_tables` builds the before/after tables once per run, from the baseline (the
first policy) to each other policy; `rlhfkit eval` writes each to a CSV file (every prompt) and the report
shows its best and worst rows (docs/eval.md, "What it writes").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from rlhfkit.eval.measures import Measure


@dataclass
class PolicySamples:
    """One policy's responses to the evaluation prompts. N = prompts, T = response tokens."""

    name: str
    path: str
    texts: list[str]
    prompt_ids: torch.Tensor  # (N, P)
    prompt_mask: torch.Tensor  # (N, P)
    response_ids: torch.Tensor  # (N, T), pad after the first EOS
    response_mask: torch.Tensor  # (N, T) 1.0 up to and including the first EOS
    logprobs: torch.Tensor  # (N, T) log π(token) at the sampling temperature, from the sampling pass
    values: dict[str, list[float]] = field(default_factory=dict)
    """Measure key → one value per prompt."""


@dataclass(frozen=True)
class BeforeAfterTable:
    """Every prompt with the responses and scores of policy ``a`` (before) and ``b`` (after)."""

    a: str
    b: str
    rows: list[dict[str, Any]]
    """One row per prompt, sorted by the change, largest improvement first."""


@dataclass(frozen=True)
class BeforeAfter:
    """The before/after tables of one evaluation and the measure they are scored and sorted by."""

    measure: Measure
    tables: list[BeforeAfterTable]


def primary_measure(measures: list[Measure]) -> Measure:
    """The score of the before/after tables: the first reward if there is one (the lab's way), else toxicity."""
    rewards = [m for m in measures if m.key.startswith("reward:")]
    return rewards[0] if rewards else measures[0]


def before_after_rows(a: PolicySamples, b: PolicySamples, measure: Measure, prompts: list[str],
                      references: list[str]) -> list[dict[str, Any]]:  # fmt: skip
    """The lab's table, done right: every prompt, both responses and scores, sorted by the change (b − a)."""
    rows = []
    for i, prompt in enumerate(prompts):
        before, after = a.values[measure.key][i], b.values[measure.key][i]
        rows.append({"prompt_index": i, "prompt": prompt, "reference": references[i], "response_before": a.texts[i],
                     "response_after": b.texts[i], "score_before": before, "score_after": after,
                     "difference": after - before, "toxicity_before": a.values["toxicity"][i],
                     "toxicity_after": b.values["toxicity"][i]})  # fmt: skip
    sign = -1.0 if measure.higher_is_better is False else 1.0
    rows.sort(key=lambda r: sign * r["difference"], reverse=True)  # largest improvement first
    return rows


def before_after_tables(samples: list[PolicySamples], measures: list[Measure], prompts: list[str],
                        references: list[str]) -> BeforeAfter:  # fmt: skip
    """The first policy against each of the others, by :func:`primary_measure`."""
    measure = primary_measure(measures)
    tables = [BeforeAfterTable(samples[0].name, b.name, before_after_rows(samples[0], b, measure, prompts, references))
              for b in samples[1:]]  # fmt: skip
    return BeforeAfter(measure, tables)
