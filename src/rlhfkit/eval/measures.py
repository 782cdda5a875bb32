"""What `rlhfkit eval` measures on every response, and which direction counts as better.

A measure maps the evaluation's responses to one number per prompt. Rewards and the toxicity measure go
through the :class:`~rlhfkit.rewards.base.Reward` protocol, so a classifier, a trained reward model, a
Python function or the lexicon judge all plug in the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhfkit.config import RewardSpec
from rlhfkit.data.lexicon import LexiconJudge
from rlhfkit.errors import RlhfkitError
from rlhfkit.rewards.base import Reward, check_inputs, check_scores


@dataclass(frozen=True)
class Measure:
    key: str
    """Column name in the CSV files and results.json (e.g. toxicity, rougeL, reward:rm)."""
    label: str
    """Human-readable name for the report."""
    higher_is_better: bool | None
    """True / False; None for a descriptive measure (KL, length) with no better direction."""
    share: bool = False
    """True for a 0/1 measure, whose mean is a share of responses (the lexicon's toxicity): shown in percent."""


class LexiconToxicity:
    """1.0 when a response contains a word of the insult lexicon, else 0.0: its mean is the toxic share."""

    name = "toxicity (lexicon)"

    def __init__(self) -> None:
        self.judge = LexiconJudge()

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        check_inputs(prompts, responses, self.name)
        return [1.0 if self.judge.count(r) > 0 else 0.0 for r in responses]


def build_toxicity(spec: RewardSpec) -> Reward:
    """The toxicity measure of ``eval.toxicity``: the lexicon, or a classifier's probability of ``spec.label``."""
    if spec.kind == "lexicon":
        return LexiconToxicity()
    if spec.kind == "classifier":
        from rlhfkit.rewards.classifier import ClassifierReward

        return ClassifierReward(spec.path, label=spec.label, output="prob", input=spec.input,
                                batch_size=spec.batch_size, max_length=spec.max_length, device=spec.device,
                                revision=spec.revision, name=f"toxicity ({spec.label})", pad_token=spec.pad_token)  # fmt: skip
    raise RlhfkitError(f"eval.toxicity.kind must be lexicon or classifier, got {spec.kind!r}")


def score_all(reward: Reward, prompts: list[str], responses: list[str]) -> list[float]:
    """``reward`` on every response; a wrong count or a non-finite score is an error here, not a skipped step."""
    scores = reward(prompts, responses)
    bad = check_scores(scores, len(responses), reward.name)
    if any(bad):
        first = bad.index(True)
        raise RlhfkitError(f"{reward.name!r} returned a non-finite score for {sum(bad)} response(s) (the first: "
                           f"{responses[first][:80]!r}); evaluation needs a number for every response.")  # fmt: skip
    return [float(s) for s in scores]
