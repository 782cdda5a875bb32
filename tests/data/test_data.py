"""Prompt template, length filters, local file formats, the seeded split, and the synthetic corpus."""

from __future__ import annotations

import json
import math

import pytest

from rlhfkit.config import DEFAULT_TEMPLATE, DataConfig, SyntheticCorpusConfig
from rlhfkit.data.lexicon import LexiconJudge, default_lexicon
from rlhfkit.data.loading import load_dialogues, load_raw, prepare, render_prompt
from rlhfkit.data.synthetic import INSULT_ADJECTIVES, INSULT_NOUNS, TOPICS, generate_corpus
from rlhfkit.errors import RlhfkitError


def test_template_is_the_labs_and_keeps_braces_in_dialogues():
    prompt = render_prompt(DEFAULT_TEMPLATE, "#Person1#: a {weird} line")
    assert prompt == "Summarize the following conversation.\n\n#Person1#: a {weird} line\n\nSummary: "
    assert render_prompt("Dialogue: {dialogue} -> TL;DR", "hi") == "Dialogue: hi -> TL;DR"
    with pytest.raises(RlhfkitError, match="placeholder"):
        render_prompt("no slot", "hi")


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _rows(lengths):
    return [{"dialogue": "x" * n, "summary": f"s{n}"} for n in lengths]


def test_length_filter_is_exclusive_below_and_inclusive_above(tmp_path):
    src = _write_jsonl(tmp_path / "d.jsonl", _rows([199, 200, 201, 500, 1000, 1001]))
    data = prepare(load_raw(DataConfig(source=src)), DataConfig(source=src, test_size=0.25))
    kept = sorted(len(d) for d in list(data.train["dialogue"]) + list(data.test["dialogue"]))
    assert kept == [201, 500, 1000]
    assert data.total == 6 and data.kept == 3


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_local_formats_load_through_datasets(tmp_path, fmt):
    import pandas as pd

    rows = [{"dlg": "#Person1#: " + "hello " * 50 + str(i), "tldr": f"summary {i}"} for i in range(20)]
    path = tmp_path / f"data.{fmt}"
    frame = pd.DataFrame(rows)
    {"jsonl": lambda: frame.to_json(path, orient="records", lines=True),
     "csv": lambda: frame.to_csv(path, index=False),
     "parquet": lambda: frame.to_parquet(path)}[fmt]()  # fmt: skip
    cfg = DataConfig(source=str(path), dialogue_column="dlg", summary_column="tldr", test_size=0.2)
    data = load_dialogues(cfg)
    assert len(data.train) == 16 and len(data.test) == 4
    row = data.train[0]
    assert row["prompt"] == render_prompt(cfg.template, row["dialogue"]) and row["summary"].startswith("summary")


def test_split_is_seeded(tmp_path):
    cfg = DataConfig(synthetic=SyntheticCorpusConfig(size=200))
    a, b = load_dialogues(cfg), load_dialogues(cfg)
    assert a.test["id"] == b.test["id"]
    c = load_dialogues(DataConfig(synthetic=SyntheticCorpusConfig(size=200), split_seed=7))
    assert c.test["id"] != a.test["id"]
    assert not set(a.test["id"]) & set(a.train["id"])


def test_missing_columns_are_named(tmp_path):
    src = _write_jsonl(tmp_path / "d.jsonl", [{"text": "x" * 300, "summary": "s"}] * 3)
    with pytest.raises(RlhfkitError) as e:
        load_dialogues(DataConfig(source=src))
    assert "['dialogue']" in str(e.value) and "['text', 'summary']" in str(e.value)
    assert "data.dialogue_column" in str(e.value)


def test_empty_after_filtering_says_which_filter(tmp_path):
    src = _write_jsonl(tmp_path / "d.jsonl", _rows([10, 20, 30]))
    with pytest.raises(RlhfkitError, match=r"0 of 3 rows left.*200 < len\(dialogue\) <= 1000"):
        load_dialogues(DataConfig(source=src))


def test_bad_sources(tmp_path):
    with pytest.raises(RlhfkitError, match="does not exist"):
        load_raw(DataConfig(source=str(tmp_path / "nope.jsonl")))
    odd = tmp_path / "data.txt"
    odd.write_text("hello")
    with pytest.raises(RlhfkitError, match="unsupported extension"):
        load_raw(DataConfig(source=str(odd)))
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    with pytest.raises(RlhfkitError, match="could not read"):
        load_raw(DataConfig(source=str(broken)))
    with pytest.raises(RlhfkitError, match="HF_HUB_OFFLINE"):  # a hub id, offline: a clear error
        load_raw(DataConfig(source="someone/not-a-real-dataset"))


def test_corpus_is_deterministic_by_seed():
    a, b = generate_corpus(300, 0.3, seed=3), generate_corpus(300, 0.3, seed=3)
    assert a == b
    assert generate_corpus(300, 0.3, seed=4) != a


def test_corpus_is_varied_and_mostly_passes_the_labs_filter():
    corpus = generate_corpus(2000, 0.3, seed=0)
    assert {e.topic for e in corpus} == set(TOPICS)
    # Seeded, so these are fixed numbers, not draws; the bounds leave room for a change to the generator's draws.
    # Measured over seeds 0..4: distinct dialogues 99.5-99.7 %, distinct summaries 84-86 %, kept 93.7-94.8 %.
    # A kept share p ~ 0.94 of 2000 has binomial standard error 0.5 %: 0.85 and 1.0 are more than 10 of them away.
    assert len({e.dialogue for e in corpus}) > 0.95 * len(corpus)
    assert len({e.summary for e in corpus}) > 0.7 * len(corpus)
    kept = sum(200 < len(e.dialogue) <= 1000 for e in corpus) / len(corpus)
    assert 0.85 < kept < 1.0  # some short exchanges exist, so the filter has something to do
    for e in corpus[:50]:
        lines = e.dialogue.splitlines()
        assert all(line.startswith(("#Person1#: ", "#Person2#: ")) for line in lines)


@pytest.mark.parametrize("fraction", [0.0, 0.3, 1.0])
def test_toxic_fraction_is_honoured_and_the_judge_sees_every_insult(fraction):
    corpus = generate_corpus(1000, fraction, seed=1)
    judge = LexiconJudge()
    share = sum(e.toxic for e in corpus) / len(corpus)
    # Each example is toxic with probability `fraction`, independently: the share's binomial standard error is
    # sqrt(f(1-f)/n) (0.0145 at f = 0.3, n = 1000; 0 at f = 0 and 1, where the share is exact). Five of them:
    # P(|Z| > 5) = 6e-7, so a change to the seeded draws cannot fail this by chance (measured: 0.293 at f = 0.3),
    # while a fraction that is ignored or inverted (0.5, 0.7 at f = 0.3) is 14 or more standard errors off.
    assert abs(share - fraction) <= 5 * math.sqrt(fraction * (1 - fraction) / len(corpus))
    for e in corpus:
        assert judge.is_toxic(e.summary) == e.toxic, e.summary
        assert not judge.is_toxic(e.dialogue)  # the dialogues themselves are clean


def test_insult_words_are_in_the_shipped_lexicon():
    assert set(INSULT_ADJECTIVES) | set(INSULT_NOUNS) <= set(default_lexicon())


def test_lexicon_judge_counts_whole_words_case_insensitively():
    judge = LexiconJudge()
    assert judge.count("What an IDIOT. Stupid, stupid!") == 3
    assert judge.count("Foolproof plans and pigment") == 0  # no partial-word matches
    assert judge.toxic_fraction(["fine", "a moron", "ok", "clown"]) == 0.5
    assert LexiconJudge(words=("banana",)).count("Banana split, banana") == 2
    assert judge.toxic_fraction([]) == 0.0
