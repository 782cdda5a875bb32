"""Settings of the human-feedback store and its labeling web app."""

from __future__ import annotations

from dataclasses import dataclass

from rlhfkit.errors import ConfigError

QUESTION_TYPES = ("pairwise", "binary")
"""``pairwise``: which of two candidates is better; ``binary``: is one candidate good or bad."""


@dataclass(frozen=True)
class FeedbackConfig:
    """Defaults for new feedback projects and the limits the web app enforces."""

    question_type: str = "pairwise"
    """Question asked for a new project: ``pairwise`` (A/B comparison) or ``binary`` (good/bad)."""
    overlap: int = 3
    """Number of different annotators who label each item before it is retired."""
    host: str = "127.0.0.1"
    """Address the web app binds to; loopback by default so nothing is exposed by accident."""
    port: int = 8000
    """TCP port of the web app."""
    session_hours: float = 12.0
    """How long a login session stays valid."""
    reservation_minutes: float = 10.0
    """How long an item shown to one annotator is held back from others (avoids surplus labels)."""
    max_request_bytes: int = 64 * 1024
    """Largest request body the web app accepts; larger requests get 413."""
    max_comment_chars: int = 2000
    """Longest free-text comment an annotator may attach to a label."""
    busy_timeout_ms: int = 5000
    """SQLite: how long a writer waits for the database lock before the store retries."""
    write_retries: int = 5
    """How often a write transaction is retried after a lock timeout or serialization failure."""
    cookie_secure: bool = False
    """Mark the session cookie ``Secure``; turn on when the app is served over HTTPS."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field."""
        if self.question_type not in QUESTION_TYPES:
            raise ConfigError(
                f"feedback.question_type is {self.question_type!r}; choose one of {', '.join(QUESTION_TYPES)}"
            )
        if self.overlap < 1:
            raise ConfigError(f"feedback.overlap is {self.overlap}; it must be at least 1 annotator per item")
        if not 0 < self.port < 65536:
            raise ConfigError(f"feedback.port is {self.port}; use a TCP port between 1 and 65535")
        for name in ("session_hours", "reservation_minutes"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"feedback.{name} must be positive, not {getattr(self, name)}")
        if self.max_request_bytes < 1024:
            raise ConfigError(
                "feedback.max_request_bytes must be at least 1024 (a login form needs that much)"
            )
        if self.max_comment_chars < 0 or self.busy_timeout_ms < 0 or self.write_retries < 0:
            raise ConfigError(
                "feedback.max_comment_chars, busy_timeout_ms and write_retries cannot be negative"
            )
