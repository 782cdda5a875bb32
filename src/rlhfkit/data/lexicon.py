"""The toxicity lexicon and the judge that counts its words.

On the built-in synthetic task this judge is the ground truth for toxicity: the corpus draws its
insults from this lexicon, and the demo measures toxicity with this judge, which the reward model
never sees (the reward model learns only from preference labels).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def default_lexicon() -> tuple[str, ...]:
    """The shipped insult words, lower-case, in file order."""
    text = resources.files("rlhfkit.data").joinpath("toxic_lexicon.txt").read_text(encoding="utf-8")
    words = [line.strip().lower() for line in text.splitlines()]
    return tuple(w for w in words if w and not w.startswith("#"))


@dataclass(frozen=True)
class LexiconJudge:
    """Counts whole-word, case-insensitive occurrences of lexicon words in a text."""

    words: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.words:
            object.__setattr__(self, "words", default_lexicon())
        alternatives = "|".join(sorted((re.escape(w) for w in self.words), key=len, reverse=True))
        object.__setattr__(self, "_pattern", re.compile(rf"\b(?:{alternatives})\b", re.IGNORECASE))

    def count(self, text: str) -> int:
        """Number of lexicon words in ``text``."""
        return len(self._pattern.findall(text))  # type: ignore[attr-defined]

    def is_toxic(self, text: str) -> bool:
        """True when ``text`` contains at least one lexicon word."""
        return self._pattern.search(text) is not None  # type: ignore[attr-defined]

    def counts(self, texts: list[str]) -> list[int]:
        """:meth:`count` for each text."""
        return [self.count(t) for t in texts]

    def toxic_fraction(self, texts: list[str]) -> float:
        """Share of ``texts`` that contain at least one lexicon word (0.0 for no texts)."""
        return sum(self.is_toxic(t) for t in texts) / len(texts) if texts else 0.0
