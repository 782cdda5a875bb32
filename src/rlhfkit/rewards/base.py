"""The reward protocol: texts in, one float per response out.

Everything that scores a response — a hate-speech classifier read by label name, a reward model trained
with `rlhfkit reward train`, a Python function, the lexicon judge, a weighted sum of these — is a
:class:`Reward`. PPO, evaluation and the CLI only ever call ``reward(prompts, responses)``.

Scores may come back non-finite (a user's callable returns NaN, a model overflows in fp16), or finite
in Python but too large for the float32 tensors training runs on (1e39 becomes inf there, and 1e308
turned every trainable tensor into NaN before this was checked). :func:`check_scores` does not hide that: it raises for a wrong count, which is always a bug in the
reward, and returns a mask of the non-finite scores, so that the caller (the PPO step) can skip those
samples and report how many it skipped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from rlhfkit.errors import RlhfkitError

FLOAT32_MAX = 3.4028234663852886e38
"""The largest finite float32: a score beyond it becomes ±inf when converted for training."""


def usable_score(value: float) -> bool:
    """True for a score that stays finite in float32, the dtype PPO and the evaluation compute in."""
    return math.isfinite(value) and abs(value) <= FLOAT32_MAX


@runtime_checkable
class Reward(Protocol):
    """A reward function over (prompt, response) pairs."""

    name: str
    """Short human-readable name, used in logs and metric keys (e.g. ``classifier:nothate``)."""

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        """One score per response; ``prompts[i]`` is the prompt ``responses[i]`` answers."""
        ...


def check_inputs(prompts: Sequence[str], responses: Sequence[str], name: str) -> None:
    """Raise RlhfkitError unless ``prompts`` and ``responses`` are equally long lists of strings."""
    if len(prompts) != len(responses):
        raise RlhfkitError(
            f"reward {name!r} was given {len(prompts)} prompts but {len(responses)} responses; "
            "pass one prompt per response (repeat a prompt for several responses to it)."
        )
    for kind, texts in (("prompt", prompts), ("response", responses)):
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise RlhfkitError(f"reward {name!r}: {kind} {i} has type {type(text).__name__}, not str.")


def check_scores(scores: Sequence[Any], n: int, name: str = "reward") -> list[bool]:
    """Validate ``scores`` from a reward asked about ``n`` responses; return the non-finite mask.

    Raises RlhfkitError when there are not exactly ``n`` scores or one is not a real number. Returns a
    list of ``n`` booleans, True where the score is NaN, ±inf or beyond float32's range (see
    :func:`usable_score`): such samples should be skipped (and counted), not trained on.
    """
    try:
        count = len(scores)
    except TypeError:
        raise RlhfkitError(
            f"reward {name!r} returned {type(scores).__name__}, not a list of floats (one per response)."
        ) from None
    if count != n:
        raise RlhfkitError(
            f"reward {name!r} returned {count} scores for {n} responses; a reward must return exactly one "
            "float per response, in order."
        )
    mask = []
    for i, s in enumerate(scores):
        try:
            value = float(s)
        except (TypeError, ValueError):
            raise RlhfkitError(f"reward {name!r} returned {s!r} for response {i}, which is not a number.") from None
        mask.append(not usable_score(value))
    return mask


def reward_stats(reward: Any) -> dict[str, float]:
    """The counters a reward keeps (texts scored, truncated, ...), or {} for a reward that keeps none."""
    stats = getattr(reward, "stats", None)
    return dict(stats()) if callable(stats) else {}
