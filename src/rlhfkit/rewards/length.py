"""The length of a response as a reward term, for sums such as "not-hate logit − 0.01 × length".

A negative weight on length counters the drift of RLHF policies toward longer outputs (Singhal et al.
2023, "A Long Way to Go: Investigating Length Correlations in RLHF").
"""

from __future__ import annotations

from rlhfkit.errors import RlhfkitError
from rlhfkit.rewards.base import check_inputs

UNITS = ("words", "characters")


class LengthReward:
    """Number of whitespace-separated words (or characters) of each response."""

    def __init__(self, unit: str = "words", name: str | None = None) -> None:
        if unit not in UNITS:
            raise RlhfkitError(f"length reward unit must be one of {', '.join(UNITS)}, got {unit!r}.")
        self.unit = unit
        self.name = name or f"length:{unit}"

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        check_inputs(prompts, responses, self.name)
        if self.unit == "words":
            return [float(len(r.split())) for r in responses]
        return [float(len(r)) for r in responses]
