"""`rlhfkit demo`: the whole loop on tiny settings, stage caching, crash recovery and --human wiring."""

from __future__ import annotations

import json

import pytest

from rlhfkit.cli import main

STAGES = ["preset", "sft", "pairs", "labels", "reward_model", "ppo", "eval"]
# every stage, but small: 12 SFT steps, 24 prompts x 2 samples to label, 2 PPO steps, 16 evaluation prompts
FAST = ["sft.max_steps=12", "sft.eval_examples=8", "data.synthetic.size=300", "generation.max_new_tokens=16",
        "feedback.prompts=24", "feedback.samples_per_prompt=2", "feedback.tie_rule=random",
        "reward_model.train.epochs=1", "ppo.steps=2", "ppo.batch_size=8", "ppo.mini_batch_size=4",
        "ppo.micro_batch_size=4", "ppo.save_every=1", "eval.prompts=16", "eval.bootstrap_resamples=200"]  # fmt: skip


def _sets(overrides):
    return [arg for o in overrides for arg in ("--set", o)]


def _reused(printed: str) -> int:
    return printed.count("done earlier, reusing it")


@pytest.mark.slow
def test_demo_runs_every_stage_then_reuses_and_recovers(tmp_path, capsys, monkeypatch):
    out = tmp_path / "demo"
    args = ["demo", "-o", str(out), "--no-progress", *_sets(FAST)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    for title in ("supervised fine-tuning", "sample comparison pairs", "annotators label", "train a reward model",
                  "PPO against the reward model", "evaluate SFT vs PPO"):  # fmt: skip
        assert title in printed
    assert "Toxicity (lexicon judge, never seen by the reward model)" in printed and "Report:" in printed
    assert all((out / ".stages" / f"{s}.json").is_file() for s in STAGES)
    assert (out / "feedback" / "labels.sqlite").is_file() and (out / "feedback" / "preferences.jsonl").is_file()
    assert (out / "reward" / "report.json").is_file() and (out / "ppo" / "adapter" / "adapter_config.json").is_file()
    results = json.loads((out / "eval" / "results.json").read_text())
    assert results["policy_order"] == ["sft", "ppo"] and results["prompts"] == 16
    assert [m["key"] for m in results["measures"]][:2] == ["toxicity", "reward:reward model"]
    assert results["reward_models"] and results["reward_models"][0]["heldout"]["n"] > 0
    headline = json.loads((out / ".stages" / "eval.json").read_text())["result"]["headline"]
    assert set(headline) == {"toxicity", "rougeL", "kl"} and headline["kl"]["sft"] == pytest.approx(0.0, abs=1e-4)

    # the same settings again: every stage is reused
    assert main(args) == 0
    assert _reused(capsys.readouterr().out) == len(STAGES)

    # a change to PPO redoes PPO and the evaluation only
    assert main([*args, "--set", "ppo.steps=3"]) == 0
    printed = capsys.readouterr().out
    assert _reused(printed) == 5
    assert json.loads((out / ".stages" / "ppo.json").read_text())["result"]["steps"] == 3

    # a crash in the last stage: the rerun resumes from the stages that finished
    import rlhfkit.eval.evaluate as evaluate

    def crash(*a, **k):
        raise RuntimeError("power cut")

    monkeypatch.setattr(evaluate, "run_eval", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        main([*args, "--set", "eval.prompts=12"])
    capsys.readouterr()
    monkeypatch.undo()
    assert main([*args, "--set", "eval.prompts=12"]) == 0
    assert _reused(capsys.readouterr().out) == 6
    assert json.loads((out / "eval" / "results.json").read_text())["prompts"] == 12

    # PPO interrupted after its last checkpoint but before the stage was marked finished: it resumes
    (out / ".stages" / "ppo.json").unlink()
    assert main([*args, "--set", "eval.prompts=12"]) == 0
    assert "resuming the interrupted PPO run" in capsys.readouterr().out

    # a labeling setting relabels the same pairs: preset, SFT and the sampled pairs are reused
    assert main([*args, "--set", "eval.prompts=12", "--set", "feedback.error_rate=0.2"]) == 0
    printed = capsys.readouterr().out
    assert _reused(printed) == 3 and "sample comparison pairs from the SFT policy: done earlier" in printed


@pytest.mark.slow
def test_demo_human_mode_waits_for_a_person(tmp_path, capsys, monkeypatch):
    """--human: fewer pairs, a person's labels instead of the simulation (the app itself: test_feedback_human)."""
    from rlhfkit.feedback import human, labeling
    from rlhfkit.feedback.annotators import ensure_annotator
    from rlhfkit.feedback.labeling import Answer
    from rlhfkit.feedback.store import FeedbackStore

    def person_labels_everything(store_path, **kwargs):
        with FeedbackStore.open(store_path) as store:
            you = ensure_annotator(store, "you", "human")
            while (view := labeling.next_item(store, you.id)) is not None:
                better = "first" if len(view.candidates[0]) <= len(view.candidates[1]) else "second"
                labeling.submit(store, you.id, view.item_id, Answer(better, 2), client_id=f"c{view.item_id}")
            return human.decisive_labels(store)

    monkeypatch.setattr(human, "label_in_browser", person_labels_everything)
    out = tmp_path / "demo"
    overrides = [*FAST, "feedback.human_prompts=12", "feedback.human_min_labels=5"]
    assert main(["demo", "-o", str(out), "--human", "--no-progress", *_sets(overrides)]) == 0
    printed = capsys.readouterr().out
    assert "(you, in the browser)" in printed and "Report:" in printed
    labels = json.loads((out / ".stages" / "labels.json").read_text())["result"]
    pairs = json.loads((out / ".stages" / "pairs.json").read_text())["result"]
    assert pairs["prompts"] == 12 and pairs["samples_per_prompt"] == 2 and labels["labels"] == pairs["items"]


def test_bad_demo_settings_are_refused_before_any_work(tmp_path, capsys):
    for override, fragment in [("feedback.overlap=5", "feedback.overlap (5) must be between 1 and"),
                               ("feedback.error_rate=2", "feedback.error_rate must be in [0, 1]"),
                               ("reward_model.train.learning_rate=0", "train.learning_rate must be > 0"),
                               ("feedback.prompts=1", "feedback.prompts")]:  # fmt: skip
        assert main(["demo", "-o", str(tmp_path / "d"), "--no-progress", "--set", override]) == 2
        err = capsys.readouterr().err
        assert fragment in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()
