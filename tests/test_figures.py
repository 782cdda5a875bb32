"""scripts/figures.py (`make figures`): rendering from parsed results, marker handling; no training."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))  # the figures command is scripts/figures.py and the modules beside it
import figures  # noqa: E402
import figures_markers  # noqa: E402
import figures_render  # noqa: E402
import figures_runs  # noqa: E402

MEASURES = [{"key": "toxicity", "label": "toxicity (lexicon)", "higher_is_better": False},
            {"key": "reward:reward model", "label": "reward model", "higher_is_better": True},
            {"key": "rougeL", "label": "ROUGE-L", "higher_is_better": True},
            {"key": "kl", "label": "KL to reference (nats)", "higher_is_better": None}]  # fmt: skip


def results(policies: dict[str, dict[str, tuple[float, float, float]]],
            comparisons: dict[tuple[str, str], dict[str, tuple[float, float, float, float]]]) -> dict:  # fmt: skip
    """A results.json of `rlhfkit eval`: per policy key → (mean, ci low, ci high); per pair key → (diff, low, high, p)."""
    return {
        "prompts": 256, "split": "test", "confidence": 0.95, "measures": MEASURES, "policy_order": list(policies),
        "policies": {name: {"measures": {k: {"mean": m, "mean_ci": {"low": lo, "high": hi}} for k, (m, lo, hi) in ms.items()}}
                     for name, ms in policies.items()},
        "comparisons": [{"a": a, "b": b, "measures": {k: {"mean_difference": d, "ci": {"low": lo, "high": hi}, "p_value": p}
                                                       for k, (d, lo, hi, p) in ms.items()}}
                        for (a, b), ms in comparisons.items()],
    }  # fmt: skip


def demo_seed(tox: tuple, rouge: tuple, kl: tuple, d_tox: tuple, d_rouge: tuple, rm: tuple, total: int) -> dict:
    sft = {"toxicity": (tox[0], 0, 1), "reward:reward model": (0.0, 0, 0), "rougeL": (rouge[0], 0, 1), "kl": (0.0, 0, 0)}
    ppo = {"toxicity": (tox[1], 0, 1), "reward:reward model": (0.5, 0, 1), "rougeL": (rouge[1], 0, 1), "kl": kl}
    diffs = {"toxicity": d_tox, "rougeL": d_rouge}
    acc, low, high, n = rm
    return {"results": results({"sft": sft, "ppo": ppo}, {("sft", "ppo"): diffs}),
            "stages": {"preset": {"stage_seconds": 0.2},
                       "reward_model": {"heldout_accuracy": acc, "ci_low": low, "ci_high": high, "n": n}},
            "result_text": RESULT_TEXT, "total_seconds": total}  # fmt: skip


RESULT_TEXT = """──────────────────────────────────── result ────────────────────────────────────
                   256 test prompts, 95% bootstrap intervals
┏━━━━━━━━━┳━━━━━━━┓
┃ measure ┃   sft ┃
┡━━━━━━━━━╇━━━━━━━┩
│ ROUGE-L │ 0.553 │
└─────────┴───────┘
Toxicity (lexicon judge, never seen by the reward model): 37.1% of SFT summaries
→ 8.6% after PPO. Demo total 139 s.
Report: runs/figures/demo0/eval/report.html"""

FIXTURE = {
    "provenance": {
        "git": {"commit": "abc1234", "dirty": False, "dirty_files": []},
        "machine": {"cpu": "Test CPU @ 2.0GHz", "cores": 2, "torch": "2.13.0+cpu", "transformers": "5.25.0"},
        "runs": {"demo0": {"seconds": 199.4}, "demo0-kl": {"seconds": 95.0}, "demo1": {"seconds": 201.0},
                 "sft-tiny-t5": {"seconds": 80.2}, "sft-tiny-llama": {"seconds": 75.0},
                 "rm-minilm": {"seconds": 700.0}, "rm-minilm-flip": {"seconds": 650.0}},
    },
    "demo": {
        "0": demo_seed((0.328, 0.047), (0.553, 0.526), (1.855, 1.585, 2.134), (-0.281, -0.34, -0.22, 1e-14),
                       (-0.027, -0.060, 0.006, 0.48), (0.831, 0.75, 0.89, 118), 199),
        "1": demo_seed((0.309, 0.074), (0.576, 0.573), (1.51, 1.26, 1.77), (-0.234, -0.297, -0.172, 2.3e-11),
                       (-0.003, -0.027, 0.022, 0.7), (0.829, 0.76, 0.88, 129), 143),
    },
    "kl": {
        "result_text": RESULT_TEXT,
        "results": results(
            {"sft": {"toxicity": (0.371, 0, 1), "reward:reward model": (-0.012, 0, 0), "rougeL": (0.553, 0, 1), "kl": (0.0, 0, 0)},
             "ppo": {"toxicity": (0.086, 0, 1), "reward:reward model": (0.605, 0, 1), "rougeL": (0.526, 0, 1), "kl": (1.855, 0, 3)},
             "ppo-beta0": {"toxicity": (0.039, 0, 1), "reward:reward model": (0.93, 0, 1), "rougeL": (0.147, 0, 1), "kl": (14.3, 0, 20)}},
            {("sft", "ppo"): {"rougeL": (-0.027, -0.060, 0.006, 0.48)},
             ("sft", "ppo-beta0"): {"rougeL": (-0.406, -0.43, -0.38, 1e-40)}}),
        "samples": [{"prompt_index": str(i), "policy": p, "reference": f"ref {i}", "response": f"{p} says {i}",
                     "toxicity": "1.0" if (i == 1 and p == "sft") else "0.0"}
                    for i in range(3) for p in ("sft", "ppo", "ppo-beta0")],
        "curves": {"ppo": [{"step": s, "kl/k1": k} for s, k in enumerate([0.0, 2.2, 1.0], 1)],
                   "ppo-beta0": [{"step": s, "kl/k1": k} for s, k in enumerate([0.0, 11.0, 16.0], 1)]},
    },
    "sft": {"tiny-t5": {"precision": "bf16", "final": {"rouge1": 0.7431, "rouge2": 0.5734, "rougeL": 0.6929,
                                                       "toxic_fraction": 0.3046875, "train_seconds": 69.4}},
            "tiny-llama": {"precision": "fp32", "final": {"rouge1": 0.641, "rouge2": 0.438, "rougeL": 0.605,
                                                          "toxic_fraction": 0.375, "train_seconds": 66.6}}},
    "rm": {"rm-minilm": {"report": {"heldout": {"accuracy": 0.998, "ci_low": 0.986, "ci_high": 1.0, "n": 400,
                                                "loss": 0.0411, "mean_gap": 3.92}},
                         "output": "data: read 1200 examples\nheld-out pairwise accuracy: 99.8%"},
           "rm-minilm-flip": {"report": {"heldout": {"accuracy": 0.988, "ci_low": 0.971, "ci_high": 0.995, "n": 400,
                                                     "loss": 0.355, "mean_gap": 0.91}}, "output": "data: ..."}},
}

STAMP = ("*Produced by `make figures` at commit abc1234 (clean tree) on Test CPU @ 2.0GHz, 2 cores, torch 2.13.0+cpu, "
         "transformers 5.25.0; wall time of the runs: ")  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Rendering


def test_stamp_names_commit_tree_machine_and_wall_times() -> None:
    assert figures_render.stamp(FIXTURE["provenance"], ("demo0", "rm-minilm")) == STAMP + "demo0 199 s, rm-minilm 11.7 min.*"
    dirty = {**FIXTURE["provenance"], "git": {"commit": "abc1234", "dirty": True}}
    assert "at commit abc1234 (its code exported from git; the working tree had uncommitted changes, not used)" in figures_render.stamp(dirty, ("demo0",))


def test_demo_seeds_table() -> None:
    assert figures_render.render_demo_seeds(FIXTURE) == (
        "| seed | toxic summaries, SFT → PPO | change (95% CI), Wilcoxon p | ROUGE-L, SFT → PPO (change, 95% CI) "
        "| KL(PPO‖SFT), nats per summary | reward model held-out accuracy | demo wall time |\n"
        "|---|---|---|---|---|---|---|\n"
        "| 0 | 32.8% → 4.7% | −28.1 pts (−34.0 to −22.0), p = 1e-14 | 0.553 → 0.526 (−0.027, −0.060 to +0.006) "
        "| 1.85 (1.58–2.13) | 83.1% (n = 118) | 199 s |\n"
        "| 1 | 30.9% → 7.4% | −23.4 pts (−29.7 to −17.2), p = 2e-11 | 0.576 → 0.573 (−0.003, −0.027 to +0.022) "
        "| 1.51 (1.26–1.77) | 82.9% (n = 129) | 143 s |\n\n"
        "In every seed the drop in toxicity is far from zero (its 95% interval lies below 0), and ROUGE-L moves by "
        "at most 0.027 (the limit we hold ourselves to is 0.05).\n\n" + STAMP + "demo0 199 s, demo1 201 s.*"
    )


def test_demo_seeds_says_when_a_seed_misses() -> None:
    seed = figures_render.render_demo_seeds({**FIXTURE, "demo": {"0": demo_seed(
        (0.3, 0.2), (0.55, 0.45), (1.0, 0.5, 1.5), (-0.1, -0.2, 0.01, 0.06), (-0.1, -0.15, -0.05, 0.01),
        (0.8, 0.7, 0.9, 100), 150)}})  # fmt: skip
    assert ("Not in every seed does the 95% interval of the change in toxicity lie below 0, and ROUGE-L moves by up "
            "to 0.100, beyond the limit we hold ourselves to (0.05).") in seed  # fmt: skip


def test_kl_table() -> None:
    assert figures_render.render_kl_table(FIXTURE) == (
        "| | SFT | PPO, β = 0.3 | PPO, β = 0 |\n|---|---|---|---|\n"
        "| toxic summaries (lexicon judge) | 37.1% | 8.6% | 3.9% |\n"
        "| reward-model score | −0.01 | 0.60 | 0.93 |\n"
        "| ROUGE-L against the references | 0.553 | 0.526 | 0.147 |\n"
        "| KL to the SFT model (nats per summary) | 0.00 | 1.85 | 14.30 |\n\n"
        "Over all 256 held-out dialogues, ROUGE-L moved by −0.027 (95% CI −0.060 to +0.006) with the penalty and by "
        "−0.406 (−0.430 to −0.380) without it.\n\n" + STAMP + "demo0 199 s, demo0-kl 95 s.*"
    )


def test_kl_samples_shows_the_insulting_ones_with_their_reference() -> None:
    assert figures_render.render_kl_samples(FIXTURE) == (
        "Of the first 3 held-out dialogues, 1 have an insult in their SFT summary (#1); their summaries, with the "
        "reference:\n\n```\nreference #1  ref 1\nSFT       #1  sft says 1\nβ = 0.3   #1  ppo says 1\n"
        "β = 0     #1  ppo-beta0 says 1\n```\n\n" + STAMP + "demo0 199 s, demo0-kl 95 s.*"
    )


def test_kl_curves_sentence() -> None:
    assert figures_render.render_kl_curves(FIXTURE) == (
        "![PPO training curves with and without the KL penalty](images/kl-penalty.png)\n\n"
        "Per step, the penalised run's KL to the reference (nats per summary) reaches at most 2.2 and ends at 1.0; "
        "without the penalty it is 0.0–16.0 over the last 3 steps (median 11.0), and 16.0 in the last one.\n\n"
        + STAMP + "demo0 199 s, demo0-kl 95 s.*"
    )


def test_sft_table_and_summary() -> None:
    assert figures_render.render_sft_table(FIXTURE) == (
        "| model | ROUGE-1 / 2 / L | sampled summaries toxic | training wall time |\n|---|---|---|---|\n"
        "| tiny-t5 (bf16 autocast) | 0.743 / 0.573 / **0.693** | 30.5% | 69 s |\n"
        "| tiny-llama (fp32) | 0.641 / 0.438 / **0.605** | 37.5% | 67 s |\n\n"
        + STAMP + "sft-tiny-t5 80 s, sft-tiny-llama 75 s.*"
    )
    assert figures_render.render_sft_summary(FIXTURE).startswith(
        "Figures (300 steps of batch 16): tiny-t5 reaches ROUGE-L 0.693 in 69 s, and 30.5% of its sampled summaries "
        "are toxic; tiny-llama reaches 0.605 in 67 s, with 37.5% toxic.\n\n")  # fmt: skip


def test_demo_duration() -> None:
    assert figures_render.render_demo_duration(FIXTURE) == (
        "On the machine named below it took 199 s, as the demo's last line says (`rlhfkit demo --seed 0` into a fresh "
        "folder; building the preset took 0 s of it: it is built once per machine).\n\n" + STAMP + "demo0 199 s.*"
    )


def test_demo_result_and_eval_headline_come_from_the_log() -> None:
    assert figures_render.render_demo_result(FIXTURE) == "```\n" + RESULT_TEXT + "\n```\n\n" + STAMP + "demo0 199 s.*"
    assert figures_render.render_eval_headline(FIXTURE) == figures_render.render_demo_result(FIXTURE)


def test_reward_model_sentences() -> None:
    assert figures_render.render_rm_minilm_flip(FIXTURE) == (
        "With 25% of the training labels flipped (`make-pairs --flip 0.25`, same settings, clean held-out file) the "
        "same run reaches **98.8%** (95% CI 97.1%–99.5%, n = 400), against 99.8% with clean labels: held-out loss "
        "0.355 instead of 0.041, mean reward gap 0.91 instead of 3.92 before normalisation.\n\n"
        + STAMP + "rm-minilm 11.7 min, rm-minilm-flip 10.8 min.*"
    )
    assert figures_render.render_demo_rm_accuracy(FIXTURE).startswith(
        "The default simulated run holds out about 118 pairs, enough to judge: seed 0 reached 83.1% accuracy "
        "(95% CI 75.0%–89.0%, n = 118).\n\n")  # fmt: skip


@pytest.mark.parametrize("name", sorted(figures_render.RENDERERS))
def test_every_block_ends_with_its_stamp(name: str) -> None:
    text = figures_render.RENDERERS[name](FIXTURE)
    assert text.splitlines()[-1].startswith(STAMP) and text.endswith(".*")


# --------------------------------------------------------------------------------------------------
# Parsing the runs' logs


def test_result_section_and_total_from_a_demo_log() -> None:
    log = "stage 6 ...\nDemo total 5 s.\n" + RESULT_TEXT.replace("Demo total 139", "Demo\ntotal 139") + "   \nmore\n"
    assert figures_runs.result_section(log) == RESULT_TEXT.replace("Demo total 139", "Demo\ntotal 139")
    assert figures_runs.demo_total_seconds(log) == 139
    with pytest.raises(figures_runs.FiguresError, match="no result section"):
        figures_runs.result_section("1. build ...\nReport: x")
    with pytest.raises(figures_runs.FiguresError, match="Demo total"):
        figures_runs.demo_total_seconds("Every stage was reused from an earlier run: 1.0 s spent now")


def test_reward_train_output_starts_at_its_data_line() -> None:
    log = "$ rlhfkit reward make-pairs ...\nwrote 1200 pairs\n$ rlhfkit reward train ...\ndata: read 12\nsaved  \n"
    assert figures_runs.reward_train_output(log) == "data: read 12\nsaved"


# --------------------------------------------------------------------------------------------------
# Markers

DOC = ("# Title\r\nkeep this — ünïcode  \n\n<!-- figures:one -->\nold one\n<!-- /figures:one -->\nmiddle text\n"
       "<!-- figures:two --><!-- /figures:two -->\n\ntrailing, no newline at the end")  # fmt: skip


def _outside(text: str) -> list[str]:
    blocks = figures_markers.find_blocks(text)
    edges = [0] + [x for b in blocks for x in (b.start, b.end)] + [len(text)]
    return [text[edges[i] : edges[i + 1]] for i in range(0, len(edges), 2)]


def test_replacement_changes_only_what_lies_between_markers() -> None:
    new = figures_markers.replace_blocks(DOC, {"one": "NEW 1\n\nline", "two": "NEW 2"})
    assert new == ("# Title\r\nkeep this — ünïcode  \n\n<!-- figures:one -->\nNEW 1\n\nline\n<!-- /figures:one -->\n"
                   "middle text\n<!-- figures:two -->\nNEW 2\n<!-- /figures:two -->\n\ntrailing, no newline at the end")
    assert _outside(new) == _outside(DOC)
    assert figures_markers.replace_blocks(new, {"one": "NEW 1\n\nline", "two": "NEW 2"}) == new  # a rerun changes nothing


@pytest.mark.parametrize(("text", "message"), [
    ("<!-- figures:a -->\nx\n", "never closed"),
    ("x\n<!-- /figures:a -->\n", "without its opening"),
    ("<!-- figures:a -->\n<!-- /figures:b -->\n", "without its opening"),
    ("<!-- figures:a -->\n<!-- figures:b -->\n<!-- /figures:b -->\n<!-- /figures:a -->\n", "opens inside"),
    ("<!-- figures:a -->\n<!-- /figures:a -->\n<!-- figures:a -->\n<!-- /figures:a -->\n", "appears twice"),
])  # fmt: skip
def test_unbalanced_markers_are_refused(text: str, message: str) -> None:
    with pytest.raises(figures_runs.FiguresError, match=message):
        figures_markers.replace_blocks(text, {"a": "A", "b": "B"})


def test_a_marker_without_renderer_and_a_renderer_without_marker_are_refused() -> None:
    with pytest.raises(figures_runs.FiguresError, match="no renderer for marker figures:two"):
        figures_markers.replace_blocks(DOC, {"one": "x"})
    with pytest.raises(figures_runs.FiguresError, match="without a renderer: figures:two"):
        figures_markers.check_markers({"doc.md": DOC}, {"one": None})
    with pytest.raises(figures_runs.FiguresError, match="marker is missing .*figures:three"):
        figures_markers.check_markers({"doc.md": DOC}, {"one": None, "two": None, "three": None})
    with pytest.raises(figures_runs.FiguresError, match="in both a.md and b.md"):
        figures_markers.check_markers({"a.md": DOC, "b.md": DOC}, {"one": None, "two": None})


def test_render_all_refuses_a_broken_document_before_writing_anything(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    good = "<!-- figures:demo-result -->\nold\n<!-- /figures:demo-result -->\n"
    (tmp_path / "README.md").write_text(good)
    (tmp_path / "docs" / "x.md").write_text("<!-- figures:kl-table -->\nunclosed\n")
    with pytest.raises(figures_runs.FiguresError, match="docs/x.md: marker figures:kl-table is never closed"):
        figures.render_all(tmp_path / "runs", tmp_path)
    assert (tmp_path / "README.md").read_text() == good


def test_every_marker_in_readme_and_docs_has_a_renderer_and_every_renderer_a_marker() -> None:
    texts = {str(p.relative_to(ROOT)): p.read_text() for p in figures_markers.documents(ROOT)}
    where = figures_markers.check_markers(texts)
    assert set(where) == set(figures_render.RENDERERS)


def test_a_block_without_results_is_left_as_it_is() -> None:
    new = figures_markers.replace_blocks(DOC, {"one": None, "two": "NEW 2"})
    assert new == DOC.replace("<!-- figures:two --><!-- /figures:two -->",
                              "<!-- figures:two -->\nNEW 2\n<!-- /figures:two -->")


def test_missing_runs_are_refused_unless_partial_which_leaves_their_blocks_as_they_are(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    doc = "".join(f"text {n}\n<!-- figures:{n} -->\nold {n}\n<!-- /figures:{n} -->\n" for n in figures_render.RENDERERS)
    (tmp_path / "README.md").write_text(doc)
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "runs.json").write_text('{"runs": {}}')
    with pytest.raises(figures_runs.FiguresError, match=r"cannot render figures:demo-duration \(.*demo0-eval-plain"):
        figures.render_all(runs, tmp_path)
    changed, stale = figures.render_all(runs, tmp_path, partial=True)
    assert changed == [] and set(stale) == set(figures_render.RENDERERS)
    assert (tmp_path / "README.md").read_text() == doc


def test_stamp_names_the_thread_limit_when_one_was_set() -> None:
    limited = {**FIXTURE["provenance"], "threads": 1}
    assert ", 2 cores (1 torch thread per run), torch 2.13.0+cpu" in figures_render.stamp(limited, ("demo0",))


def test_kl_table_shows_the_collapse_check_when_the_results_have_it() -> None:
    res = {**FIXTURE["kl"]["results"], "policies": {
        name: {**entry, "repeated_share": share}
        for (name, entry), share in zip(FIXTURE["kl"]["results"]["policies"].items(), (0.043, 0.0586, 0.4219))}}
    table = figures_render.render_kl_table({**FIXTURE, "kl": {**FIXTURE["kl"], "results": res}})
    assert "| KL to the SFT model (nats per summary) | 0.00 | 1.85 | 14.30 |\n" \
           "| repeated responses (the collapse check) | 4.3% | 5.9% | 42.2% |\n\n" in table


def test_sft_table_names_auto_precision() -> None:
    auto = {**FIXTURE, "sft": {**FIXTURE["sft"], "tiny-t5": {**FIXTURE["sft"]["tiny-t5"], "precision": "auto"}}}
    assert "| tiny-t5 (precision auto: bf16 autocast where the CPU has it) | 0.743" in figures_render.render_sft_table(auto)
