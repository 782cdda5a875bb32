"""`rlhfkit demo --human`: a person labels in the real app (served by uvicorn) while the demo waits."""

from __future__ import annotations

import socket
import threading
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


def _label_everything(url: str, token: str, choice: str = "left") -> int:
    """What a person does in the browser: log in with the printed token, answer every pair."""
    base = url.rsplit("/login", 1)[0]
    answered = 0
    with httpx.Client(base_url=base, follow_redirects=True, timeout=10) as client:
        page = client.get("/login").text
        assert client.post("/login", data={"token": token, **forms(page)["login-form"]}).status_code == 200
        while True:
            page = client.get("/label").text
            if "label-form" not in forms(page):
                return answered
            client.post("/label", data={**forms(page)["label-form"], "choice": choice, "strength": "2"})
            answered += 1


def test_a_person_labels_every_pair_and_the_demo_goes_on(store_path: Path):
    seen = {}

    def person(url: str, token: str) -> None:
        seen["url"], seen["answered"] = url, _label_everything(url, token)

    console = Console(record=True, width=200)
    count = label_in_browser(store_path, port=_free_port(), min_labels=3, poll_seconds=0.1, console=console,
                             on_ready=person)  # fmt: skip
    assert count == 4 and seen["answered"] == 4 and seen["url"].startswith("http://127.0.0.1:")
    printed = console.export_text()
    assert "log in with this token" in printed and "labeled 4 of 4 pairs" in printed
    with FeedbackStore.open(store_path) as store:
        assert decisive_labels(store) == 4 and find_annotator(store, "you").kind == "human"


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
