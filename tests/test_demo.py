"""`rlhfkit demo`: the whole loop on tiny settings, stage caching, crash recovery and --human wiring."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from rlhfkit.cli import main

STAGES = ["preset", "sft", "pairs", "labels", "reward_model", "ppo", "eval"]
# every stage, but small: 12 SFT steps, 24 prompts x 2 samples to label, 2 PPO steps, 16 evaluation prompts.
# 24 labels leave about 2 held-out pairs, too few for the reward-model quality gate, so these runs go on to
# PPO by the override (what the gate does is tested below, on PREFIX)
FAST = ["sft.max_steps=12", "sft.eval_examples=8", "data.synthetic.size=300", "generation.max_new_tokens=16",
        "feedback.prompts=24", "feedback.samples_per_prompt=2", "feedback.tie_rule=random",
        "reward_model.train.epochs=1", "ppo.steps=2", "ppo.batch_size=8", "ppo.mini_batch_size=4",
        "ppo.micro_batch_size=4", "ppo.save_every=1", "eval.prompts=16", "eval.bootstrap_resamples=200",
        "allow_weak_reward_model=true"]  # fmt: skip
# stages 1-5 as small as they go (2 SFT steps, 8 pairs to label): a reward model the gate must refuse.
# About 25 s on a loaded 2-core machine, shared by the two tests that use it, hence slow
PREFIX = ["sft.max_steps=2", "sft.eval_examples=4", "data.synthetic.size=100", "generation.max_new_tokens=8",
          "feedback.prompts=8", "feedback.samples_per_prompt=2", "feedback.tie_rule=random",
          "reward_model.train.max_steps=1"]  # fmt: skip


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

    # the same settings again: every stage is reused, and the total says so rather than "0 s"
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert _reused(printed) == len(STAGES)
    assert "Every stage was reused from an earlier run" in " ".join(printed.split())  # rich wraps at 80 columns

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


class _PPOReached(Exception):
    """Raised in place of PPO: the demo got past the gate (PPO itself is tested in the slow runs above)."""


def _record(ok: bool) -> dict:
    from rlhfkit.rewards.quality import judge_reward_model

    verdict = judge_reward_model(90, 100) if ok else judge_reward_model(0.5, 2)
    return {"model_dir": "rm", "heldout_accuracy": verdict.accuracy, "n": verdict.n, "quality": verdict.to_dict()}


def test_the_gate_stops_with_one_paragraph_or_warns_under_the_override():
    from rich.console import Console

    from rlhfkit.demo import DemoConfig, _check_reward_model
    from rlhfkit.errors import RlhfkitError

    console = Console(file=io.StringIO(), width=200)
    _check_reward_model(_record(ok=True), DemoConfig(), human=False, console=console)  # passes silently
    assert console.file.getvalue() == ""
    for human, advice in ((False, "feedback.prompts"), (True, "feedback.human_prompts=300")):
        with pytest.raises(RlhfkitError) as e:
            _check_reward_model(_record(ok=False), DemoConfig(), human=human, console=console)
        message = str(e.value)
        assert "\n" not in message and message.startswith("stopped before PPO") and advice in message
        assert "Only 2 held-out examples" in message and "--set allow_weak_reward_model=true" in message
    _check_reward_model(_record(ok=False), DemoConfig(allow_weak_reward_model=True), human=False, console=console)
    assert "allow_weak_reward_model is true" in console.file.getvalue()
    # a stage record from before the gate holds no verdict: it is judged from its accuracy and n
    old = {k: v for k, v in _record(ok=False).items() if k != "quality"}
    with pytest.raises(RlhfkitError, match="Only 2 held-out examples"):
        _check_reward_model(old, DemoConfig(), human=False, console=console)


def test_the_total_time_says_which_stages_were_reused():
    from rlhfkit.demo import _total_time

    results = {"sft": {"stage_seconds": 100.0}, "ppo": {"stage_seconds": 39.0}}
    assert _total_time(results, [], 139.4) == "Demo total 139 s."
    assert _total_time(results, ["sft"], 40.2) == ("Demo total 40 s, with 1 of 2 stages reused from an earlier run "
                                                   "(they took 100 s when they ran).")  # fmt: skip
    assert _total_time(results, ["sft", "ppo"], 0.43) == ("Every stage was reused from an earlier run: 0.4 s spent "
                                                          "now (the stages took 139 s when they ran).")  # fmt: skip


@pytest.fixture(scope="module")
def stopped_demo(tmp_path_factory, _preset_cache):
    """Stages 1-5 on PREFIX, into one folder; the gate stops the demo before PPO. (exit status, stderr, folder)"""
    import rlhfkit.algos.ppo.run as ppo_run

    out = tmp_path_factory.mktemp("gate") / "demo"
    mp = pytest.MonkeyPatch()
    mp.setattr(ppo_run, "run_ppo", lambda *a, **k: pytest.fail("PPO ran on a reward model that failed the gate"))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["demo", "-o", str(out), "--no-progress", *_sets(PREFIX)])
    mp.undo()
    return code, err.getvalue(), out


@pytest.mark.slow
def test_demo_stops_before_ppo_when_the_reward_model_fails_the_gate(stopped_demo):
    code, err, out = stopped_demo
    assert code == 2 and "Traceback" not in err
    assert "stopped before PPO" in err and "too few to judge the model by" in err
    assert "--set allow_weak_reward_model=true" in err and "feedback.prompts" in err
    assert not (out / "ppo").exists() and not (out / ".stages" / "ppo.json").exists()
    quality = json.loads((out / ".stages" / "reward_model.json").read_text())["result"]["quality"]
    assert quality["ok"] is False and quality["n"] < 25


@pytest.mark.slow
def test_demo_goes_on_to_ppo_with_the_override(stopped_demo, monkeypatch, capsys):
    import rlhfkit.algos.ppo.run as ppo_run

    _, _, out = stopped_demo

    def reached(*args, **kwargs):
        raise _PPOReached

    monkeypatch.setattr(ppo_run, "run_ppo", reached)
    with pytest.raises(_PPOReached):
        main(["demo", "-o", str(out), "--no-progress", *_sets([*PREFIX, "allow_weak_reward_model=true"])])
    printed = capsys.readouterr().out
    assert _reused(printed) == 5  # the override keys no stage: stages 1-5 are reused, not redone
    assert "failed the quality gate" in printed and "allow_weak_reward_model is true" in printed
