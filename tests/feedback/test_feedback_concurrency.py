"""Real processes against a real store: concurrent writers lose nothing, a killed writer corrupts nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from rlhfkit.feedback import labeling
from rlhfkit.feedback.annotators import add_annotator, find_annotator
from rlhfkit.feedback.export import live_labels
from rlhfkit.feedback.items import add_comparisons
from rlhfkit.feedback.labeling import Answer
from rlhfkit.feedback.models import Item, Label
from rlhfkit.feedback.store import FeedbackStore

WORKER = str(Path(__file__).with_name("store_worker.py"))


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, WORKER, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _wait_for_line(process: subprocess.Popen, expected: str, timeout: float = 60) -> list[str]:
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"worker ended before {expected!r}: {process.stderr.read()[-3000:]}")
        lines.append(line.strip())
        if line.strip() == expected:
            return lines
    raise AssertionError(f"no {expected!r} from the worker within {timeout}s")


def _prepared_store(url: str, items: int, overlap: int) -> None:
    with FeedbackStore.create(url, overlap=overlap) as store:
        add_comparisons(
            store, [f"prompt {i}" for i in range(items)], [[f"a{i}", f"b{i}"] for i in range(items)]
        )
        add_annotator(store, "worker-1")
        add_annotator(store, "worker-2")


def _integrity(store: FeedbackStore) -> None:
    if store.backend == "sqlite":
        with store._engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
            assert connection.exec_driver_sql("PRAGMA foreign_key_check").all() == []


@pytest.mark.parametrize("overlap", [1, 2])
def test_two_processes_labeling_at_once_lose_nothing(store_url: str, tmp_path: Path, overlap: int) -> None:
    items = 40
    _prepared_store(store_url, items, overlap)
    go = tmp_path / "go"
    workers = [_spawn("label", store_url, name, str(go)) for name in ("worker-1", "worker-2")]
    for worker in workers:
        _wait_for_line(worker, "ready")
    go.touch()
    acked: dict[str, set[str]] = {}
    for worker, name in zip(workers, ("worker-1", "worker-2")):
        lines = _wait_for_line(worker, "done", timeout=120)
        assert worker.wait(timeout=30) == 0, worker.stderr.read()
        acked[name] = {line.split()[1] for line in lines if line.startswith("ack ")}

    with FeedbackStore.open(store_url) as store:
        _integrity(store)
        records = live_labels(store)
        stored = {r.annotator: set() for r in records}
        for r in records:
            stored[r.annotator].add(r.item_id)
        client_ids = set(store.read(lambda s: list(s.scalars(select(Label.client_id)))))
    every_ack = acked["worker-1"] | acked["worker-2"]
    assert every_ack <= client_ids, "an acknowledged submission is missing"
    assert len(client_ids) == len(every_ack) == items * overlap
    per_item = Counter(r.item_id for r in records)
    assert set(per_item.values()) == {overlap}, "an item got more or fewer labels than the overlap"
    assert len(per_item) == items
    if overlap == 2:  # each must have labeled every item, in parallel with the other
        assert len(acked["worker-1"]) == len(acked["worker-2"]) == items


def test_killed_mid_transaction_leaves_store_consistent(store_url: str) -> None:
    _prepared_store(store_url, 3, 1)
    worker = _spawn("hold", store_url)
    _wait_for_line(worker, "mid")
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)

    with FeedbackStore.open(store_url) as store:
        _integrity(store)
        count = store.read(lambda s: s.scalar(select(func.count()).select_from(Item)))
        assert count == 3, "rows of the killed, uncommitted transaction are visible"
        # The store is fully usable: the lock died with the process.
        annotator = find_annotator(store, "worker-1")
        view = labeling.next_item(store, annotator.id)
        labeling.submit(store, annotator.id, view.item_id, Answer("tie"), "after-kill-1")
        assert len(live_labels(store)) == 1


def test_killed_while_submitting_keeps_every_acknowledged_label(store_url: str, tmp_path: Path) -> None:
    _prepared_store(store_url, 400, 1)
    go = tmp_path / "go"
    go.touch()
    worker = _spawn("label", store_url, "worker-1", str(go))
    _wait_for_line(worker, "ready")
    acked = set()
    while len(acked) < 30:
        line = worker.stdout.readline().strip()
        assert line, worker.stderr.read()
        if line.startswith("ack "):
            acked.add(line.split()[1])
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    for line in worker.stdout.read().splitlines():  # acks already written before the kill
        if line.startswith("ack "):
            acked.add(line.split()[1])

    with FeedbackStore.open(store_url) as store:
        _integrity(store)
        stored = set(store.read(lambda s: list(s.scalars(select(Label.client_id)))))
        assert acked <= stored
        assert len(stored - acked) <= 1, "at most the one submission in flight may be stored unacknowledged"
        # Every stored label is whole: it points at an item and carries its answer.
        rows = store.read(
            lambda s: s.execute(text("SELECT item_id, choice, strength FROM feedback_labels")).all()
        )
        assert all(r[0] is not None and r[1] == "first" and r[2] in (1, 2, 3) for r in rows)
