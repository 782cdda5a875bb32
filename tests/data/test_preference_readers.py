"""Reading preference files line by line: TRL JSONL, hh-rlhf, summarize-from-feedback; errors name the line
and the field. Telling the format from the fields."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from rlhfkit.data.preference_readers import (
    detect_format,
    read_hh_rlhf,
    read_pairs,
    read_summarize_comparisons,
    read_trl_pairs,
    read_trl_unpaired,
)
from rlhfkit.data.preferences import FormatError, PreferencePair, UnpairedLabel


def write_lines(path: Path, objects: list[object]) -> Path:
    path.write_text(
        "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objects), encoding="utf-8"
    )
    return path


def test_trl_pairs_with_and_without_margin(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "p.jsonl",
        [
            {"prompt": "Summarize: hi", "chosen": " ok", "rejected": " idiot", "margin": 2},
            "",
            {"prompt": "p", "chosen": "c", "rejected": "r", "extra": [1]},
        ],
    )
    pairs = list(read_trl_pairs(path))
    assert pairs == [
        PreferencePair("Summarize: hi", " ok", " idiot", margin=2.0),
        PreferencePair("p", "c", "r", margin=None),
    ]
    assert [p.line for p in pairs] == [1, 3], "blank lines still count"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"chosen": "c", "rejected": "r"}, r":2: missing field 'prompt'"),
        ({"prompt": "p", "rejected": "r"}, r":2: missing field 'chosen'"),
        ({"prompt": "p", "chosen": "c"}, r":2: missing field 'rejected'"),
        (
            {"prompt": ["conversational"], "chosen": "c", "rejected": "r"},
            r":2: field 'prompt' must be str, found list",
        ),
        (
            {"prompt": "p", "chosen": "c", "rejected": "r", "margin": "big"},
            r":2: field 'margin' must be int or float",
        ),
        (
            {"prompt": "p", "chosen": "c", "rejected": "r", "margin": True},
            r":2: field 'margin' must be int or float",
        ),
        ('{"prompt": "p", "chosen": NaN', r":2: not valid JSON"),
        ("[1, 2]", r":2: expected a JSON object, found list"),
    ],
)
def test_trl_errors_name_line_and_field(tmp_path: Path, line: object, message: str) -> None:
    path = write_lines(tmp_path / "bad.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r"}, line])
    with pytest.raises(FormatError, match=message):
        list(read_trl_pairs(path))


def test_non_finite_margin_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nan.jsonl"
    path.write_text('{"prompt": "p", "chosen": "c", "rejected": "r", "margin": NaN}\n')
    with pytest.raises(FormatError, match=r":1: field 'margin' must be a finite number"):
        list(read_trl_pairs(path))


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="no such file"):
        list(read_trl_pairs(tmp_path / "absent.jsonl"))
    with pytest.raises(FormatError, match="unknown preference format 'csv'"):
        read_pairs(tmp_path / "x", "csv")


def test_trl_unpaired(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "u.jsonl",
        [{"prompt": "p", "completion": "c", "label": False}, {"prompt": "p", "completion": "d"}],
    )
    with pytest.raises(FormatError, match=r":2: missing field 'label'"):
        list(read_trl_unpaired(path))
    write_lines(path, [{"prompt": "p", "completion": "c", "label": 1}])
    with pytest.raises(FormatError, match=r":1: field 'label' must be bool, found int"):
        list(read_trl_unpaired(path))
    write_lines(path, [{"prompt": "p", "completion": "c", "label": True}])
    assert list(read_trl_unpaired(path)) == [UnpairedLabel("p", "c", True)]


HH_CHOSEN = "\n\nHuman: What do you think of my cat?\n\nAssistant: Cute!\n\nHuman: Really?\n\nAssistant: Yes, very cute."
HH_REJECTED = "\n\nHuman: What do you think of my cat?\n\nAssistant: Cute!\n\nHuman: Really?\n\nAssistant: No, it is ugly."


def test_hh_rlhf_splits_at_the_last_assistant_turn(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"chosen": HH_CHOSEN, "rejected": HH_REJECTED}) + "\n")
    (pair,) = read_hh_rlhf(path)
    assert (
        pair.prompt
        == "\n\nHuman: What do you think of my cat?\n\nAssistant: Cute!\n\nHuman: Really?\n\nAssistant:"
    )
    assert (pair.chosen, pair.rejected) == (" Yes, very cute.", " No, it is ugly.")
    assert pair.prompt + pair.chosen == HH_CHOSEN, "nothing is lost in the split"


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"rejected": HH_REJECTED}, r":1: missing field 'chosen'"),
        (
            {"chosen": HH_CHOSEN, "rejected": "\n\nHuman: hi"},
            r":1: field 'rejected' has no '\\n\\nAssistant:' turn",
        ),
        (
            {"chosen": HH_CHOSEN, "rejected": "\n\nHuman: other\n\nAssistant: x"},
            r":1: fields 'chosen' and 'rejected' differ",
        ),
    ],
)
def test_hh_rlhf_errors(tmp_path: Path, record: dict, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        list(read_hh_rlhf(write_lines(tmp_path / "hh.jsonl", [record])))


def summarize_record(choice: int = 1, worker: str = "w1", **info: str) -> dict:
    return {
        "info": info
        or {"id": "t3_x", "post": "My landlord ...", "title": "Landlord", "subreddit": "legaladvice"},
        "summaries": [
            {"text": " Landlord bad.", "policy": "sup2"},
            {"text": " Landlord keeps deposit.", "policy": "ref"},
        ],
        "choice": choice,
        "worker": worker,
        "batch": "batch3",
    }


def test_summarize_from_feedback_comparisons(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "batch3.json",
        [summarize_record(1), summarize_record(0, worker="w2", article="CNN story", id="cnn1")],
    )
    first, second = read_summarize_comparisons(path)
    assert first == PreferencePair(
        "My landlord ...", " Landlord keeps deposit.", " Landlord bad.", None, "w1", "ref", "sup2"
    )
    assert (second.prompt, second.chosen, second.annotator) == ("CNN story", " Landlord bad.", "w2")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.pop("info"), r":1: missing field 'info'"),
        (lambda r: r["info"].pop("post"), r":1: missing field 'info.post' \(or 'info.article'"),
        (lambda r: r.pop("choice"), r":1: missing field 'choice'"),
        (lambda r: r.update(choice=2), r":1: field 'choice' must be 0 or 1"),
        (lambda r: r["summaries"][1].pop("text"), r":1: missing field 'summaries.1.text'"),
        (lambda r: r["summaries"].pop(), r":1: field 'summaries' must hold 2 summaries, found 1"),
    ],
)
def test_summarize_errors(tmp_path: Path, mutate, message: str) -> None:
    record = summarize_record()
    mutate(record)
    with pytest.raises(FormatError, match=message):
        list(read_summarize_comparisons(write_lines(tmp_path / "c.json", [record])))


def test_detect_format():
    assert detect_format(["prompt", "chosen", "rejected"]) == "trl"
    assert detect_format(["prompt", "chosen", "rejected", "annotator"]) == "rlhfkit"
    assert detect_format(["chosen", "rejected"]) == "hh-rlhf"
    assert detect_format(["info", "summaries", "choice", "worker"]) == "summarize"
    assert detect_format(["prompt", "completion", "label"]) == "trl-unpaired"
    assert detect_format(["text"]) is None
