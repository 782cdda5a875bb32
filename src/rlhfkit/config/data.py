"""The ``data`` section: the dialogues, the prompt template and the train/test split."""

from __future__ import annotations

from dataclasses import dataclass, field

# The course lab's prompt: the instruction, the dialogue, then a cue for the summary.
DEFAULT_TEMPLATE = "Summarize the following conversation.\n\n{dialogue}\n\nSummary: "


@dataclass(frozen=True)
class SyntheticCorpusConfig:
    size: int = 3000
    """Number of dialogues generated."""
    toxic_fraction: float = 0.3
    """Share of reference summaries that contain an insult from the lexicon."""
    seed: int = 0
    """Seed of the corpus generator (same seed, same corpus)."""

    def problems(self) -> list[str]:
        p: list[str] = []
        if self.size < 2:
            p.append("data.synthetic.size must be at least 2")
        if not 0.0 <= self.toxic_fraction <= 1.0:
            p.append(f"data.synthetic.toxic_fraction must be in [0, 1], got {self.toxic_fraction}")
        return p


@dataclass(frozen=True)
class DataConfig:
    source: str = "synthetic"
    """'synthetic' (built-in corpus), a hub dataset id (knkarthick/dialogsum), or a .jsonl/.json/.csv/.parquet file."""
    split: str = "train"
    """Split to read from a hub dataset (local files have a single split)."""
    dialogue_column: str = "dialogue"
    """Column holding the dialogue."""
    summary_column: str = "summary"
    """Column holding the reference summary."""
    template: str = DEFAULT_TEMPLATE
    """Prompt template; {dialogue} is replaced by the dialogue."""
    min_chars: int = 200
    """Keep dialogues strictly longer than this many characters (the lab: 200)."""
    max_chars: int = 1000
    """Keep dialogues at most this many characters long (the lab: 1000)."""
    test_size: float = 0.1
    """Fraction of examples held out for evaluation."""
    split_seed: int = 42
    """Seed of the train/test split."""
    max_train_examples: int | None = None
    """Cap on training examples after filtering (null = all)."""
    synthetic: SyntheticCorpusConfig = field(default_factory=SyntheticCorpusConfig)
    """Settings of the built-in corpus (used when source = synthetic)."""

    def problems(self) -> list[str]:
        p: list[str] = []
        if "{dialogue}" not in self.template:
            p.append("data.template must contain the placeholder {dialogue}")
        if self.min_chars < 0 or self.max_chars <= self.min_chars:
            p.append(f"data.min_chars ({self.min_chars}) must be >= 0 and below data.max_chars ({self.max_chars})")
        if not 0.0 < self.test_size < 1.0:
            p.append(f"data.test_size must be a fraction in (0, 1), got {self.test_size}")
        if self.max_train_examples is not None and self.max_train_examples <= 0:
            p.append("data.max_train_examples must be positive or null")
        return p + self.synthetic.problems()
