"""`rlhfkit demo --human`: a person labels in the real app (served by uvicorn) while the demo waits."""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from rich.console import Console
from test_feedback_app import forms

from rlhfkit.errors import RlhfkitError
from rlhfkit.feedback.annotators import find_annotator
from rlhfkit.feedback.human import decisive_labels, label_in_browser
from rlhfkit.feedback.items import add_comparisons
from rlhfkit.feedback.store import FeedbackStore


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "labels.sqlite"
    with FeedbackStore.create(path, overlap=1, name="human") as store:
        add_comparisons(store, [f"prompt {i}" for i in range(4)], [[f"good {i}", f"bad {i}"] for i in range(4)])
    return path


def _label_everything(url: str, token: str, choice: str = "left", choices: Sequence[str] = ()) -> int:
    """What a person does in the browser: log in with the printed token, answer every pair.

    The n-th pair gets ``choices[n]`` (``skip`` presses Skip), and ``choice`` once ``choices`` runs out.
    """
    return _label_and_read_last_page(url, token, choice, choices)[0]


def _label_and_read_last_page(url: str, token: str, choice: str = "left", choices: Sequence[str] = ()) -> tuple[int, str]:
    base = url.rsplit("/login", 1)[0]
    answered = 0
    with httpx.Client(base_url=base, follow_redirects=True, timeout=10) as client:
        page = client.get("/login").text
        assert client.post("/login", data={"token": token, **forms(page)["login-form"]}).status_code == 200
        while True:
            page = client.get("/label").text
            if "label-form" not in forms(page):
                return answered, page
            now = choices[answered] if answered < len(choices) else choice
            if now == "skip":
                client.post("/skip", data=forms(page)["skip-form"])
            else:
                client.post("/label", data={**forms(page)["label-form"], "choice": now, "strength": "2"})
            answered += 1


def _safety_stop(seconds: float = 120.0) -> tuple[threading.Event, threading.Timer]:
    """A stop event that fires after ``seconds``: a waiting loop that never ends fails the test instead of
    hanging it. The assertions check that the loop ended by itself, so the timer never decides a pass."""
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.daemon = True
    timer.start()
    return stop, timer


def test_a_person_labels_every_pair_and_the_demo_goes_on(store_path: Path):
    seen = {}

    def person(url: str, token: str) -> None:
        seen["url"], seen["answered"] = url, _label_everything(url, token)

    console = Console(record=True, width=200)
    count = label_in_browser(store_path, port=_free_port(), min_labels=3, poll_seconds=0.1, console=console,
                             on_ready=person)  # fmt: skip
    assert count == 4 and seen["answered"] == 4 and seen["url"].startswith("http://127.0.0.1:")
    printed = console.export_text()
    assert "log in with this token" in printed and "pairs: 4 of 4 done (4 answered, 0 skipped)" in printed
    assert "preferences to train the reward model: 4" in printed
    with FeedbackStore.open(store_path) as store:
        assert decisive_labels(store) == 4 and find_annotator(store, "you").kind == "human"


def test_after_a_skip_the_wait_ends_once_every_pair_is_labeled_or_skipped(store_path: Path):
    """A skipped pair never gets a label (overlap 1, one person), so waiting for every pair to be labeled
    would never end while the page already says there is nothing left."""
    stop, timer = _safety_stop()
    console = Console(record=True, width=200)
    try:
        count = label_in_browser(store_path, port=_free_port(), min_labels=1, poll_seconds=0.05, console=console,
                                 stop=stop, on_ready=lambda url, token: _label_everything(url, token,
                                                                                          choices=["skip"]))  # fmt: skip
    finally:
        timer.cancel()
    assert not stop.is_set(), "the waiting loop did not end by itself"
    printed = console.export_text()
    assert count == 3 and "pairs: 4 of 4 done (3 answered, 1 skipped)" in printed
    assert "every pair is labeled or skipped; going on" in printed


def test_the_terminal_counts_preferences_apart_from_ties_and_both_bad(store_path: Path):
    stop, timer = _safety_stop()
    console = Console(record=True, width=200)
    try:
        count = label_in_browser(store_path, port=_free_port(), min_labels=1, poll_seconds=0.05, console=console,
                                 stop=stop, on_ready=lambda url, token: _label_everything(
                                     url, token, choices=["tie", "both_bad", "skip", "right"]))  # fmt: skip
    finally:
        timer.cancel()
    printed = console.export_text()
    # four pairs dealt with, three answered, but only one answer prefers a side: that one trains the model
    assert count == 1 and "pairs: 4 of 4 done (3 answered, 1 skipped)" in printed
    assert "preferences to train the reward model: 1 (2 tie or 'both bad' left out)" in printed
    assert "1 preference(s) collected to train the reward model" in printed
    assert "labeled 3 of 4" not in printed and not stop.is_set()


def test_the_done_page_says_the_person_is_done_and_what_happens_next(store_path: Path):
    seen = {}

    def person(url: str, token: str) -> None:
        seen["answered"], seen["page"] = _label_and_read_last_page(url, token, choices=["skip"])

    stop, timer = _safety_stop()
    try:
        label_in_browser(store_path, port=_free_port(), min_labels=1, poll_seconds=0.05, on_ready=person, stop=stop,
                         console=Console(quiet=True))  # fmt: skip
    finally:
        timer.cancel()
    page = seen["page"]
    assert seen["answered"] == 4 and 'id="all-done"' in page and "Nothing left for you" not in page
    assert "You are done: every pair is labeled or skipped. The terminal now trains the reward model; you can " \
           "close this tab." in page


def test_stopping_early_keeps_the_labels_and_says_how_to_go_on(store_path: Path):
    stop = threading.Event()

    def person(url: str, token: str) -> None:
        stop.set()  # the person closes the tab without labeling, then presses Ctrl+C

    with pytest.raises(RlhfkitError, match="only 0 pair.*Rerun the same"):
        label_in_browser(store_path, port=_free_port(), min_labels=1, poll_seconds=0.1, on_ready=person, stop=stop,
                         console=Console(quiet=True))  # fmt: skip
    # a second session issues a new token; ties say nothing a reward model could learn, so they do not count
    with pytest.raises(RlhfkitError, match="only 0 pair"):
        label_in_browser(store_path, port=_free_port(), min_labels=1, poll_seconds=0.1,
                         on_ready=lambda url, token: _label_everything(url, token, choice="tie"),
                         console=Console(quiet=True))  # fmt: skip


def test_a_port_in_use_is_a_clear_error(store_path: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RlhfkitError, match="could not start.*feedback.port"):
            label_in_browser(store_path, port=port, console=Console(quiet=True))
