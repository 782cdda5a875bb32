"""Loading preference data from every kind of source; cleaning with counts; clear errors."""

from __future__ import annotations

import json

import pytest

from rlhfkit.data.preference_sources import load_preferences
from rlhfkit.data.preferences import Comparison
from rlhfkit.errors import RlhfkitError


def test_trl_jsonl_with_margin(tmp_path, write_jsonl):
    f = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "Q", "chosen": "good", "rejected": "bad", "margin": 2.0},
        {"prompt": "Q", "chosen": "fine", "rejected": "bad"},
    ])  # fmt: skip
    data = load_preferences([str(f)])
    assert data.kind == "pairs" and data.report.sources == {str(f): "trl"}
    assert data.comparisons == [Comparison("Q", "good", "bad", 2.0), Comparison("Q", "fine", "bad", 0.0)]


def test_unpaired_labels(tmp_path, write_jsonl):
    f = write_jsonl(tmp_path / "u.jsonl", [
        {"prompt": "Q", "completion": "nice", "label": True},
        {"prompt": "Q", "completion": "rude", "label": False},
    ])  # fmt: skip
    data = load_preferences([str(f)])
    assert data.kind == "labels" and [x.label for x in data.labels] == [True, False]


def test_hh_rlhf_transcripts_are_split_at_the_last_assistant_turn(tmp_path, write_jsonl):
    prompt = "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Help me?\n\nAssistant:"
    f = write_jsonl(tmp_path / "hh.jsonl", [{"chosen": prompt + " Sure.", "rejected": prompt + " No."}])
    (c,) = load_preferences([str(f)]).comparisons
    assert (c.prompt, c.chosen, c.rejected) == (prompt, " Sure.", " No.")


def test_summarize_from_feedback_comparisons_keep_the_worker(tmp_path, write_jsonl):
    row = {"info": {"post": "A long post"}, "summaries": [{"text": "first"}, {"text": "second"}], "choice": 1,
           "worker": "w7"}  # fmt: skip
    f = write_jsonl(tmp_path / "cmp.jsonl", [row])
    (c,) = load_preferences([str(f)]).comparisons
    assert (c.prompt, c.chosen, c.rejected, c.annotator) == ("A long post", "second", "first", "w7")


def test_feedback_export_with_ties_and_annotators(tmp_path, write_jsonl):
    f = write_jsonl(tmp_path / "export.jsonl", [
        {"prompt": "Q", "chosen": "a", "rejected": "b", "annotator": "ann", "tie": False},
        {"prompt": "Q", "chosen": "a", "rejected": "b", "annotator": "bob", "tie": True},
    ])  # fmt: skip
    dropped = load_preferences([str(f)], ties="drop")
    assert dropped.report.sources[str(f)] == "rlhfkit"
    assert len(dropped.comparisons) == 1 and dropped.report.ties_dropped == 1
    assert "1 ties dropped" in dropped.report.warnings()[0]
    half = load_preferences([str(f)], ties="half")
    assert [c.tie for c in half.comparisons] == [False, True] and half.report.ties_half == 1


def test_parquet_and_json_array(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": "Q", "chosen": "good", "rejected": "bad", "margin": 1.0}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    (tmp_path / "p.json").write_text(json.dumps(rows))
    for name in ("p.parquet", "p.json"):
        assert load_preferences([str(tmp_path / name)]).comparisons == [Comparison("Q", "good", "bad", 1.0)]


def test_missing_column_is_named(tmp_path, write_jsonl):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"prompt": "Q", "chosen": "a"}]), tmp_path / "p.parquet")
    with pytest.raises(RlhfkitError, match="closest to the trl format, which also needs 'rejected'"):
        load_preferences([str(tmp_path / "p.parquet")])
    f = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Q", "chosen": "a"}])
    with pytest.raises(RlhfkitError, match=r"lacks column 'rejected', needed by the trl format"):
        load_preferences([str(f)], fmt="trl")
    # a later line missing a field is named by file, line and field
    g = write_jsonl(tmp_path / "q.jsonl", [{"prompt": "Q", "chosen": "a", "rejected": "b"}, {"prompt": "Q", "chosen": "a"}])
    with pytest.raises(RlhfkitError, match=r"q.jsonl:2: missing field 'rejected'"):
        load_preferences([str(g)])


def test_identical_and_empty_pairs_are_dropped_and_counted(tmp_path, write_jsonl):
    f = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "Q", "chosen": "same", "rejected": "same"},
        {"prompt": "Q", "chosen": "  ", "rejected": "bad"},
        {"prompt": "Q", "chosen": "good", "rejected": "bad"},
    ])  # fmt: skip
    data = load_preferences([str(f)])
    r = data.report
    assert (r.read, r.kept, r.dropped_identical, r.dropped_empty) == (3, 1, 1, 1)
    assert any("identical" in w for w in r.warnings()) and any("empty" in w for w in r.warnings())


def test_nothing_usable_is_an_error(tmp_path, write_jsonl):
    f = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Q", "chosen": "x", "rejected": "x"}])
    with pytest.raises(RlhfkitError, match="no usable preference examples.*identical"):
        load_preferences([str(f)])


def test_unknown_file_formats_and_missing_files(tmp_path, write_jsonl):
    (tmp_path / "p.csv").write_text("prompt,chosen,rejected\n")
    with pytest.raises(RlhfkitError, match="unknown file format of .*p.csv"):
        load_preferences([str(tmp_path / "p.csv")])
    with pytest.raises(RlhfkitError, match="does not exist"):
        load_preferences([str(tmp_path / "nope.jsonl")])
    f = write_jsonl(tmp_path / "odd.jsonl", [{"question": "Q", "answer": "A"}])
    with pytest.raises(RlhfkitError, match="cannot tell the preference format.*answer, question"):
        load_preferences([str(f)])
    with pytest.raises(RlhfkitError, match="unknown preference format 'csv'"):
        load_preferences([str(f)], fmt="csv")


def test_hub_dataset_offline_is_a_clear_error():
    with pytest.raises(RlhfkitError, match="could not load the hub dataset 'someone/prefs'"):
        load_preferences(["someone/prefs"])


def test_pairs_and_labels_cannot_be_mixed(tmp_path, write_jsonl):
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "Q", "chosen": "a", "rejected": "b"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "Q", "completion": "c", "label": True}])
    with pytest.raises(RlhfkitError, match="mixes preference pairs and unpaired"):
        load_preferences([str(a), str(b)])
