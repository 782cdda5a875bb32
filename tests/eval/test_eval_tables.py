"""The before/after tables: built once from the samples, written to CSV and shown in the report as given."""

from __future__ import annotations

import csv
import dataclasses

import pytest
import torch

from rlhfkit.config import Config, replace
from rlhfkit.eval.evaluate import summarize_results, write_outputs
from rlhfkit.eval.measures import Measure
from rlhfkit.eval.report import write_report
from rlhfkit.eval.samples import BeforeAfter, PolicySamples, before_after_tables, primary_measure

PROMPTS = ["p0", "p1", "p2", "p3"]
REFERENCES = ["r0", "r1", "r2", "r3"]
TOXICITY = Measure("toxicity", "toxicity", False)
REWARD = Measure("reward:rm", "rm", True)
LENGTH = Measure("length", "length (tokens)", None)


def _samples(name: str, reward: list[float], toxicity: list[float]) -> PolicySamples:
    n = len(reward)
    mask = torch.ones(n, 3)
    s = PolicySamples(name, "base", [f"{name} says {i}" for i in range(n)], torch.zeros(n, 2, dtype=torch.long),
                      torch.ones(n, 2), torch.zeros(n, 3, dtype=torch.long), mask, torch.zeros(n, 3))  # fmt: skip
    s.values = {"toxicity": toxicity, "reward:rm": reward, "length": [3.0] * n}
    return s


@pytest.fixture
def samples() -> list[PolicySamples]:
    return [
        _samples("sft", [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]),
        _samples("ppo", [1.0, -2.0, 0.5, 0.0], [0.0, 1.0, 0.0, 0.0]),
        _samples("base", [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]),
    ]


def test_the_tables_sort_by_the_primary_measure_and_break_its_ties_by_the_first_reward(samples):
    tables = before_after_tables(samples, [TOXICITY, REWARD, LENGTH], PROMPTS, REFERENCES)
    assert tables.measure == TOXICITY == primary_measure([TOXICITY, REWARD, LENGTH]) and tables.tiebreak == REWARD
    assert [(t.a, t.b) for t in tables.tables] == [("sft", "ppo"), ("sft", "base")]
    ppo = tables.tables[0].rows
    # toxicity sft → ppo: 1→0, 0→1, 1→0, 0→0 (lower is better); reward change +1, −2, +0.5, 0.
    # Improvements first (prompts 0 and 2, the larger reward gain first), then no change (3), then the worse (1)
    assert [r["prompt_index"] for r in ppo] == [0, 2, 3, 1]
    assert ppo[0] == {"prompt_index": 0, "prompt": "p0", "reference": "r0", "response_before": "sft says 0",
                      "response_after": "ppo says 0", "score_before": 1.0, "score_after": 0.0, "difference": -1.0,
                      "reward_before": 0.0, "reward_after": 1.0, "reward_difference": 1.0}  # fmt: skip


def test_without_a_reward_the_tables_sort_by_toxicity_then_by_prompt(samples):
    tables = before_after_tables(samples, [TOXICITY, LENGTH], PROMPTS, REFERENCES)
    assert tables.measure == TOXICITY and tables.tiebreak is None
    assert [r["prompt_index"] for r in tables.tables[0].rows] == [0, 2, 3, 1], "toxicity 1 → 0 first, 0 → 1 last"
    assert "reward_before" not in tables.tables[0].rows[0]


def test_the_csv_files_and_the_report_show_the_tables_they_are_given(samples, tmp_path):
    cfg = replace(Config(), **{"eval.bootstrap_resamples": 50, "eval.table_rows": 2})
    measures = [TOXICITY, REWARD, LENGTH]
    results = summarize_results(cfg, samples, measures, PROMPTS, "sft")
    tables = before_after_tables(samples, measures, PROMPTS, REFERENCES)

    files = write_outputs(tmp_path, cfg, samples, measures, PROMPTS, REFERENCES, results, tables)
    assert files["tables"] == ["before_after_sft_vs_ppo.csv", "before_after_sft_vs_base.csv"]
    assert results["table_measure"] == "toxicity"
    written = list(csv.DictReader((tmp_path / "before_after_sft_vs_ppo.csv").open()))
    assert [int(r["prompt_index"]) for r in written] == [r["prompt_index"] for r in tables.tables[0].rows]

    # The report renders the tables it is handed rather than rebuilding them from the samples.
    marked = [dataclasses.replace(t, rows=[{**r, "response_after": f"MARK{r['prompt_index']}"} for r in t.rows])
              for t in tables.tables]  # fmt: skip
    html = write_report(tmp_path / "report.html", results, samples, measures, cfg,
                        BeforeAfter(tables.measure, marked)).read_text()  # fmt: skip
    assert "MARK0" in html and "MARK1" in html, "the best and the worst change of sft → ppo are shown"
    assert "MARK2" not in html.split("Before / after: sft → base")[0], "eval.table_rows=2 rows of 4"
    assert "ppo says 0" not in html
