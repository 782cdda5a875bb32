"""A person labels in the browser while a script waits: `rlhfkit demo --human`.

The labeling app runs in a background thread on localhost; the person logs in with a token printed on
the terminal and compares pairs until every pair is labeled or skipped, or they press Ctrl+C. Their labels
are in the store from the moment they submit them, so stopping early (or a crash) loses nothing.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from rlhfkit.errors import RlhfkitError
from rlhfkit.feedback.annotators import AnnotatorInfo, add_annotator, find_annotator, issue_token
from rlhfkit.feedback.store import FeedbackStore

PERSON = "you"
DONE_MESSAGE = ("You are done: every pair is labeled or skipped. The terminal now trains the reward model; "
                "you can close this tab.")  # fmt: skip
UNSEEN_DONE_GRACE_SECONDS = 10.0
"""How long the terminal waits, once every pair is answered, for the person to load their done page; after
that (the tab was closed right after the last answer) it goes on without them having seen it."""

PREFERENCES = ("first", "second")


def decisive_labels(store: FeedbackStore) -> int:
    """Labels that prefer one candidate (ties, 'both bad' and skips say nothing a reward model can learn)."""
    from rlhfkit.feedback.export import live_labels

    return sum(1 for r in live_labels(store) if r.choice in PREFERENCES)


@dataclass(frozen=True)
class LabelTally:
    """Where the person stands: what they did with the pairs, and how much of it trains the reward model."""

    pairs: int
    """Pairs in the store."""
    answered: int
    """The person's live answers of any kind (preferences, ties and 'both bad')."""
    skipped: int
    preferences: int
    """Answers that prefer one summary: the only ones the reward model trains on."""
    remaining: int
    """Pairs still open to the person (neither answered nor skipped by them)."""

    def line(self) -> str:
        undecided = self.answered - self.preferences
        return (f"pairs: {self.answered + self.skipped} of {self.pairs} done ({self.answered} answered, "
                f"{self.skipped} skipped) · preferences to train the reward model: {self.preferences} "
                f"({undecided} tie or 'both bad' left out)")  # fmt: skip


def tally_labels(store: FeedbackStore, person: AnnotatorInfo) -> LabelTally:
    """The person's answers, skips and preferences so far, and how many pairs are still open to them."""
    from rlhfkit.feedback.export import live_labels
    from rlhfkit.feedback.labeling import progress

    mine = progress(store, person.id)
    preferences = sum(1 for r in live_labels(store) if r.annotator == person.name and r.choice in PREFERENCES)
    return LabelTally(pairs=mine.total_items, answered=mine.done, skipped=mine.skipped, preferences=preferences,
                      remaining=mine.remaining)  # fmt: skip


def login_token(store: FeedbackStore) -> str:
    """A fresh login token for the person (created on first use; a new token replaces the old one)."""
    if find_annotator(store, PERSON) is None:
        _, token = add_annotator(store, PERSON)
        assert token is not None  # humans always get a token
        return token
    return issue_token(store, PERSON)


class DonePages:
    """Counts the done pages shown to one annotator (the app renders them in its worker threads)."""

    def __init__(self, annotator_id: int) -> None:
        self._annotator_id = annotator_id
        self._lock = threading.Lock()
        self._count = 0

    def shown(self, annotator_id: int) -> None:
        if annotator_id == self._annotator_id:
            with self._lock:
                self._count += 1

    @property
    def count(self) -> int:
        with self._lock:
            return self._count


def label_in_browser(store_path: str | Path, *, port: int = 8765, min_labels: int = 10, poll_seconds: float = 1.0,
                     console: Console | None = None, on_ready: Callable[[str, str], None] | None = None,
                     stop: threading.Event | None = None) -> int:  # fmt: skip
    """Serve the labeling app for ``store_path`` until the person has labeled or skipped every pair (and seen
    the page saying so), Ctrl+C, or ``stop`` is set.

    ``on_ready(url, token)`` is called once the app answers (the demo prints them; tests log in with them).
    Returns the number of decisive labels; fewer than ``min_labels`` is an error that says how to go on.
    """
    import uvicorn

    from rlhfkit.feedback.app import create_app
    from rlhfkit.feedback.pages import Finish

    console = console or Console()
    stop = stop or threading.Event()
    store = FeedbackStore.open(store_path)
    try:
        token = login_token(store)
        person = find_annotator(store, PERSON)
        assert person is not None  # login_token created it
        done_pages = DonePages(person.id)
        _check_port_free(port)
        app = create_app(store, finish=Finish(DONE_MESSAGE, on_shown=done_pages.shown))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=_serve, args=(server,), name="labeling-app", daemon=True)
        thread.start()
        try:
            _wait_until_started(server, thread, port)
            url = f"http://127.0.0.1:{port}/login"
            console.print(f"[bold]Open {url} and log in with this token:[/bold]\n  {token}\n"
                          "Compare the pairs of summaries: which one is better (less insulting, more faithful)? "
                          "Only a preference for one side trains the reward model; a tie, 'both bad' or a skip "
                          "does not. The demo goes on by itself when every pair is labeled or skipped, or when "
                          "you press Ctrl+C here.")  # fmt: skip
            if on_ready:
                on_ready(url, token)
            _wait_for_labels(store, person, done_pages, stop, poll_seconds, console)
        finally:
            server.should_exit = True
            thread.join(timeout=10)
        count = decisive_labels(store)
    finally:
        store.close()
    if count < min_labels:
        raise RlhfkitError(f"only {count} pair(s) got a preference; a reward model needs at least {min_labels} "
                           "(feedback.human_min_labels), and ties, 'both bad' and skips do not count. Rerun the "
                           "same `rlhfkit demo --human` command to label more: the labels you gave are kept.")  # fmt: skip
    console.print(f"{count} preference(s) collected to train the reward model")
    return count


def _port_message(port: int) -> str:
    return (f"the labeling app could not start on 127.0.0.1:{port} (is the port in use?); choose another with "
            "--set feedback.port=PORT.")  # fmt: skip


def _check_port_free(port: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise RlhfkitError(_port_message(port)) from None


def _serve(server: Any) -> None:
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot bind; the waiting side reports it
        pass


def _wait_until_started(server: object, thread: threading.Thread, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not getattr(server, "started", False):
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RlhfkitError(_port_message(port))
        time.sleep(0.05)


def _wait_for_labels(store: FeedbackStore, person: AnnotatorInfo, done_pages: DonePages, stop: threading.Event,
                     poll_seconds: float, console: Console) -> None:  # fmt: skip
    """Print the tally as it changes; return once every pair is labeled or skipped by the person.

    The server stops when this returns, so it waits until the person's done page has been rendered after
    their last answer (the browser loads it right after that answer's redirect); a person who closed the tab
    instead is given up on after :data:`UNSEEN_DONE_GRACE_SECONDS`.
    """
    shown: LabelTally | None = None
    pages_before = 0  # done pages counted since the app started (the person may have finished already)
    finished_at: float | None = None
    try:
        while not stop.is_set():
            # read the page count before the tally: a done page counted after an open pair was seen
            # can only have been rendered after that pair's answer
            pages_now = done_pages.count
            tally = tally_labels(store, person)
            if tally != shown:
                shown = tally
                console.print(tally.line())
            if tally.remaining:
                pages_before, finished_at = pages_now, None
            else:
                finished_at = finished_at if finished_at is not None else time.monotonic()
                seen = done_pages.count > pages_before
                if seen or time.monotonic() - finished_at >= UNSEEN_DONE_GRACE_SECONDS:
                    console.print("every pair is labeled or skipped; going on")
                    return
            stop.wait(poll_seconds)
    except KeyboardInterrupt:
        console.print("stopped labeling; going on with the labels given so far")
