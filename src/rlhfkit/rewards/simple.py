"""Two simple reward kinds: any Python callable (``package.module:function``) and the lexicon judge.

Both follow the reward protocol of :mod:`rlhfkit.rewards.base`: texts in, one float per response out.
"""

from __future__ import annotations

import importlib
from typing import Callable, Sequence

from rlhfkit.data.lexicon import LexiconJudge
from rlhfkit.errors import RlhfkitError

ScoreFunction = Callable[[list[str], list[str]], Sequence[float]]


def import_callable(path: str) -> ScoreFunction:
    """Import ``package.module:function`` (the form entry points use) and check it is callable."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise RlhfkitError(f"reward callable {path!r} must look like package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise RlhfkitError(f"cannot import module {module_name!r} for reward {path!r}: {e}. "
                           "Is it installed or on PYTHONPATH?") from None  # fmt: skip
    target = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise RlhfkitError(f"module {module_name!r} has no attribute {attr!r} (reward {path!r}).")
        target = getattr(target, part)
    if not callable(target):
        raise RlhfkitError(f"reward {path!r} is not callable.")
    return target  # type: ignore[return-value]


class CallableReward:
    """Calls ``function(prompts, responses)``, which returns one number per response."""

    def __init__(self, path_or_function: str | ScoreFunction, name: str | None = None) -> None:
        if isinstance(path_or_function, str):
            self.function = import_callable(path_or_function)
            self.name = name or path_or_function
        else:
            self.function = path_or_function
            self.name = name or getattr(path_or_function, "__name__", "callable")

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        scores = self.function(list(prompts), list(responses))
        try:
            return [float(s) for s in scores]
        except (TypeError, ValueError):
            raise RlhfkitError(f"reward {self.name!r} must return numbers, one per response; got "
                               f"{type(scores).__name__}: {str(scores)[:100]}") from None  # fmt: skip


class LexiconReward:
    """−penalty × (number of lexicon words in the response): fewer insults, higher reward."""

    def __init__(self, penalty: float = 1.0, words: Sequence[str] = ()) -> None:
        self.judge = LexiconJudge(tuple(words))
        self.penalty = penalty
        self.name = "lexicon"

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        return [-self.penalty * self.judge.count(r) for r in responses]
