"""A separate process that writes to a feedback store, for the concurrency and crash tests.

python store_worker.py label STORE NAME GO_FILE   label until nothing is left; print "ack CLIENT_ID"
                                                 after each committed submission
python store_worker.py hold STORE                insert items inside one transaction, print "mid" halfway
                                                 and wait there (to be killed with the transaction open)
"""

from __future__ import annotations

import os
import sys
import time

from rlhfkit.feedback import labeling
from rlhfkit.feedback.annotators import find_annotator
from rlhfkit.feedback.labeling import Answer
from rlhfkit.feedback.models import Item
from rlhfkit.feedback.store import FeedbackStore, utcnow


def label(target: str, name: str, go_file: str) -> None:
    store = FeedbackStore.open(target)
    annotator = find_annotator(store, name)
    assert annotator is not None
    print("ready", flush=True)
    while not os.path.exists(go_file):  # start together with the other worker
        time.sleep(0.005)
    count = 0
    while True:
        view = labeling.next_item(store, annotator.id)
        if view is None:
            break
        client_id = f"{name}-{view.item_id}-{count}"
        count += 1
        try:
            labeling.submit(
                store, annotator.id, view.item_id, Answer("first", strength=1 + count % 3), client_id
            )
        except labeling.ItemRetiredError:
            print(f"retired {view.item_id}", flush=True)
            continue
        print(f"ack {client_id}", flush=True)
    print("done", flush=True)
    store.close()


def hold(target: str) -> None:
    store = FeedbackStore.open(target)

    def work(session) -> None:
        for i in range(200):
            session.add(
                Item(
                    prompt=f"held {i}",
                    candidate_0="a",
                    candidate_1="b",
                    content_key=f"held-{i}",
                    created_at=utcnow(),
                )
            )
            if i == 100:
                session.flush()  # the rows are in the database, uncommitted
                print("mid", flush=True)
                time.sleep(120)

    store.write(work)


if __name__ == "__main__":
    if sys.argv[1] == "label":
        label(sys.argv[2], sys.argv[3], sys.argv[4])
    elif sys.argv[1] == "hold":
        hold(sys.argv[2])
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]}")
