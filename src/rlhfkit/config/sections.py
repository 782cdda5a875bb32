"""What a configuration section is, and how a top-level configuration collects the rules of its sections.

A *section* is one frozen dataclass (``run``, ``model``, ``lora``, ``ppo``, ...), in a module of its own:

- its fields, each followed by a one-line docstring (what ``rlhfkit config --explain`` prints);
- ``problems() -> list[str]``: one message per broken rule that needs only this section, each naming its
  keys in full (``ppo.mini_batch_size (3) must divide ppo.batch_size (10)``);
- optionally ``cross_problems(root) -> list[str]``: the rules that also read another section of the same
  top-level configuration ``root`` (PPO's response-length sampler falls back to ``generation``'s lengths).
  A rule lives with the section whose keys it is about.

A *top-level* configuration (:class:`rlhfkit.config.Config`, the reward-model training configuration) is
a dataclass of sections whose ``validate()`` is :func:`check`: every section it holds is checked, so adding
an algorithm adds one section and one field, and no central function changes (docs/config.md, "Adding a
section").
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from rlhfkit.errors import ConfigError


class Section(Protocol):
    def problems(self) -> list[str]:
        """One message per broken rule of this section (empty when it is valid)."""
        ...


def problems_of(root: Any, schema: type | None = None) -> list[str]:
    """The problems of every section of ``root``, in field order: each one's own, then its cross-section ones.

    ``schema`` (default: the type of ``root``) says whose fields are the sections; a subclass that adds fields
    of its own (the demo's configuration adds its stages) checks those itself.
    """
    found: list[str] = []
    for f in dataclasses.fields(schema or root):
        section = getattr(root, f.name)
        found.extend(section.problems())
        cross = getattr(section, "cross_problems", None)
        if cross is not None:
            found.extend(cross(root))
    return found


def raise_problems(problems: list[str], what: str = "configuration") -> None:
    """Raise one ConfigError listing ``problems`` (none: return), headed "invalid <what>:"."""
    if problems:
        raise ConfigError(f"invalid {what}:\n  - " + "\n  - ".join(problems))


def check(root: Any, schema: type | None = None, what: str = "configuration") -> None:
    """Raise a ConfigError listing every broken rule of the sections of ``root`` (see :func:`problems_of`)."""
    raise_problems(problems_of(root, schema), what)
