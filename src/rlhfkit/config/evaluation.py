"""The ``eval`` section: which policies ``rlhfkit eval`` compares, on which prompts, and the statistics (docs/eval.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rlhfkit.config.rewards import RewardSpec

TOXICITY_KINDS = ("lexicon", "classifier")


def _lexicon_toxicity() -> RewardSpec:
    return RewardSpec(kind="lexicon", label="hate", output="prob", name="toxicity")


def parse_policy(entry: str) -> tuple[str, str]:
    """``NAME=PATH`` → (NAME, PATH); a bare path is named after its run folder (runs/ppo/adapter → ppo)."""
    if "=" in entry:
        name, path = entry.split("=", 1)
        return name.strip(), path.strip()
    path = Path(entry.strip())
    if entry.strip() == "base":
        return "base", "base"
    name = path.parent.name if path.name == "adapter" and path.parent.name else path.name
    return name or entry.strip(), entry.strip()


@dataclass(frozen=True)
class EvalConfig:
    policies: list[str] = field(default_factory=list)
    """Policies to compare, as NAME=PATH (adapter folder from sft/ppo, or 'base'); the first is the baseline."""
    reference: str | None = None
    """Name of the policy that KL is measured against (null = the first policy)."""
    prompts: int = 256
    """Held-out prompts to evaluate on (all of the split if it has fewer)."""
    split: str = "test"
    """Which split's prompts: test (held out) or train."""
    seed: int = 1234
    """Sampling seed; prompt i gets its own random stream from (seed, i), the same under every policy."""
    toxicity: RewardSpec = field(default_factory=_lexicon_toxicity)
    """Toxicity measure: kind lexicon (1 if a lexicon insult occurs) or classifier (probability of `label`)."""
    confidence: float = 0.95
    """Level of the bootstrap confidence intervals."""
    bootstrap_resamples: int = 2000
    """Bootstrap resamples per interval."""
    table_rows: int = 20
    """Rows of each before/after table shown in report.html (the CSV files hold every prompt)."""

    def problems(self) -> list[str]:
        p: list[str] = []
        names = [parse_policy(e)[0] for e in self.policies]
        if any(not n or not parse_policy(e)[1] for n, e in zip(names, self.policies)):
            p.append("every eval.policies entry needs a name and a path, like sft=runs/sft/adapter")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            p.append(f"eval.policies names must be unique; {', '.join(duplicates)} appear more than once "
                     "(name them: --policy sft=runs/a/adapter --policy ppo=runs/b/adapter)")  # fmt: skip
        if self.reference is not None and self.policies and self.reference not in names:
            p.append(f"eval.reference {self.reference!r} is not one of the policies ({', '.join(names)})")
        if self.prompts <= 0:
            p.append(f"eval.prompts must be positive, got {self.prompts}")
        if self.split not in ("train", "test"):
            p.append(f"eval.split must be train or test, got {self.split!r}")
        if not 0.5 <= self.confidence < 1.0:
            p.append(f"eval.confidence must be in [0.5, 1), got {self.confidence}")
        if self.bootstrap_resamples < 100:
            p.append(f"eval.bootstrap_resamples must be at least 100, got {self.bootstrap_resamples}")
        if self.table_rows < 0:
            p.append("eval.table_rows must be >= 0")
        if self.toxicity.kind not in TOXICITY_KINDS:
            p.append(f"eval.toxicity.kind must be lexicon or classifier, got {self.toxicity.kind!r}")
        elif self.toxicity.kind == "classifier":
            p.extend(self.toxicity.problems("eval.toxicity"))
            if not self.toxicity.label:
                p.append("eval.toxicity.label must name the toxic class of the classifier (e.g. hate)")
        return p
