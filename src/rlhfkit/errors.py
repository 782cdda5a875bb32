"""User-facing errors.

Anything a user can cause (a wrong path, a missing column, a bad config value) is raised as a
:class:`RlhfkitError` whose message says what was wrong and what to do. The CLI prints such an error
as one paragraph and exits with status 2, without a traceback; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class RlhfkitError(Exception):
    """An error caused by the user's input, with a message that says how to fix it."""


class ConfigError(RlhfkitError):
    """The configuration is invalid (unknown key, wrong type, or a broken cross-field rule)."""
