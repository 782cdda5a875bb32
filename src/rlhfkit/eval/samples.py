"""What an evaluation holds per policy, and the before/after tables made from it.

:class:`PolicySamples` is one policy's responses to the evaluation prompts with every measure's value per
prompt. :func:`before_after_tables` builds the before/after tables once per run, from the baseline (the
first policy) to each other policy; `rlhfkit eval` writes each to a CSV file (every prompt) and the report
shows its best and worst rows (docs/eval.md, "What it writes"). They are sorted by the primary measure,
the first one listed (toxicity): the figure the evaluation is about, not the reward the policy was trained on.
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
    """One row per prompt, sorted by the change in the primary measure, largest improvement first."""


@dataclass(frozen=True)
class BeforeAfter:
    """The before/after tables of one evaluation, the measure they are sorted by, and the one that breaks ties."""

    measure: Measure
    tables: list[BeforeAfterTable]
    tiebreak: Measure | None = None
    """The first reward, whose change orders the rows with an equal change in ``measure``; None without one."""


def primary_measure(measures: list[Measure]) -> Measure:
    """The measure the evaluation is about: the first one listed (toxicity, the judge the rewards never saw)."""
    return measures[0]


def tiebreak_measure(measures: list[Measure]) -> Measure | None:
    """The first reward other than the primary measure, or None."""
    rewards = [m for m in measures[1:] if m.key.startswith("reward:")]
    return rewards[0] if rewards else None


def _improvement(measure: Measure, difference: float) -> float:
    """``difference`` (b − a) signed so that larger is better (lower is better for toxicity)."""
    return -difference if measure.higher_is_better is False else difference


def before_after_rows(a: PolicySamples, b: PolicySamples, measure: Measure, prompts: list[str],
                      references: list[str], tiebreak: Measure | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """The lab's table, done right: every prompt, both responses and the ``measure`` of each, sorted by its
    change (b − a), largest improvement first. A 0/1 measure leaves most changes equal: those rows are ordered
    by the change in ``tiebreak`` (when given, its values are columns too), then by prompt."""
    rows = []
    for i, prompt in enumerate(prompts):
        before, after = a.values[measure.key][i], b.values[measure.key][i]
        row = {"prompt_index": i, "prompt": prompt, "reference": references[i], "response_before": a.texts[i],
               "response_after": b.texts[i], "score_before": before, "score_after": after,
               "difference": after - before}  # fmt: skip
        if tiebreak is not None:
            t_before, t_after = a.values[tiebreak.key][i], b.values[tiebreak.key][i]
            row.update({"reward_before": t_before, "reward_after": t_after, "reward_difference": t_after - t_before})
        rows.append(row)

    def order(r: dict[str, Any]) -> tuple[float, float, int]:
        second = _improvement(tiebreak, r["reward_difference"]) if tiebreak is not None else 0.0
        return (-_improvement(measure, r["difference"]), -second, r["prompt_index"])

    rows.sort(key=order)
    return rows


def before_after_tables(samples: list[PolicySamples], measures: list[Measure], prompts: list[str],
                        references: list[str]) -> BeforeAfter:  # fmt: skip
    """The first policy against each of the others, by :func:`primary_measure` (ties: :func:`tiebreak_measure`)."""
    measure, tiebreak = primary_measure(measures), tiebreak_measure(measures)
    tables = [BeforeAfterTable(samples[0].name, b.name,
                               before_after_rows(samples[0], b, measure, prompts, references, tiebreak))
              for b in samples[1:]]  # fmt: skip
    return BeforeAfter(measure, tables, tiebreak)
