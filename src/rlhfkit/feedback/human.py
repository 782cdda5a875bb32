"""A person labels in the browser while a script waits: `rlhfkit demo --human`.

The labeling app runs in a background thread on localhost; the person logs in with a token printed on
the terminal and compares pairs until every item is labeled or they press Ctrl+C. Their labels are in
the store from the moment they submit them, so stopping early (or a crash) loses nothing.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from rlhfkit.errors import RlhfkitError
from rlhfkit.feedback.annotators import add_annotator, find_annotator, issue_token
from rlhfkit.feedback.store import FeedbackStore

PERSON = "you"


def decisive_labels(store: FeedbackStore) -> int:
    """Labels that prefer one candidate (ties, 'both bad' and skips say nothing a reward model can learn)."""
    from rlhfkit.feedback.export import live_labels

    return sum(1 for r in live_labels(store) if r.choice in ("first", "second"))


def login_token(store: FeedbackStore) -> str:
    """A fresh login token for the person (created on first use; a new token replaces the old one)."""
    if find_annotator(store, PERSON) is None:
        _, token = add_annotator(store, PERSON)
        assert token is not None  # humans always get a token
        return token
    return issue_token(store, PERSON)


def label_in_browser(store_path: str | Path, *, port: int = 8765, min_labels: int = 10, poll_seconds: float = 1.0,
                     console: Console | None = None, on_ready: Callable[[str, str], None] | None = None,
                     stop: threading.Event | None = None) -> int:  # fmt: skip
    """Serve the labeling app for ``store_path`` until all items are labeled, Ctrl+C, or ``stop`` is set.

    ``on_ready(url, token)`` is called once the app answers (the demo prints them; tests log in with them).
    Returns the number of decisive labels; fewer than ``min_labels`` is an error that says how to go on.
    """
    import uvicorn

    from rlhfkit.feedback.app import create_app

    console = console or Console()
    stop = stop or threading.Event()
    store = FeedbackStore.open(store_path)
    try:
        token = login_token(store)
        _check_port_free(port)
        server = uvicorn.Server(uvicorn.Config(create_app(store), host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=_serve, args=(server,), name="labeling-app", daemon=True)
        thread.start()
        try:
            _wait_until_started(server, thread, port)
            url = f"http://127.0.0.1:{port}/login"
            console.print(f"[bold]Open {url} and log in with this token:[/bold]\n  {token}\n"
                          "Compare the pairs of summaries: which one is better (less insulting, more faithful)? "
                          "The demo goes on when every pair is labeled, or when you press Ctrl+C here.")  # fmt: skip
            if on_ready:
                on_ready(url, token)
            _wait_for_labels(store, stop, poll_seconds, console)
        finally:
            server.should_exit = True
            thread.join(timeout=10)
        count = decisive_labels(store)
    finally:
        store.close()
    if count < min_labels:
        raise RlhfkitError(f"only {count} pair(s) got a preference; a reward model needs at least {min_labels} "
                           "(feedback.human_min_labels). Rerun the same `rlhfkit demo --human` command to label more: "
                           "the labels you gave are kept.")  # fmt: skip
    console.print(f"{count} preference labels collected")
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


def _wait_for_labels(store: FeedbackStore, stop: threading.Event, poll_seconds: float, console: Console) -> None:
    from rlhfkit.feedback.stats import compute_stats

    shown = -1
    try:
        while not stop.is_set():
            stats = compute_stats(store)
            if stats.items_retired != shown:
                shown = stats.items_retired
                console.print(f"labeled {stats.items_retired} of {stats.items_total} pairs")
            if stats.items_total and stats.items_retired >= stats.items_total:
                return
            stop.wait(poll_seconds)
    except KeyboardInterrupt:
        console.print("stopped labeling; going on with the labels given so far")
