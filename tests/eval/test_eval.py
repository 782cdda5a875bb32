"""`rlhfkit eval` end to end on tiny-t5 adapters, through the CLI entry point."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from rlhfkit.cli import main

SMALL = ["data.synthetic.size=300", "generation.max_new_tokens=12", "eval.prompts=12",
         "eval.bootstrap_resamples=200"]  # fmt: skip


def _sets(overrides):
    return [arg for o in overrides for arg in ("--set", o)]


def _adapter(folder: Path, seed: int) -> Path:
    """A tiny-t5 LoRA adapter with random (non-zero) weights: a policy that differs from the base."""
    from rlhfkit.config import LoraConfig, ModelConfig
    from rlhfkit.models.loading import load_base_model
    from rlhfkit.models.lora import attach_lora, save_adapter

    loaded = attach_lora(load_base_model(ModelConfig(name_or_path="preset:tiny-t5")), LoraConfig(dropout=0.0))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in loaded.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    return save_adapter(loaded.model, loaded.tokenizer, folder, loaded.source)


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, _preset_cache):
    root = tmp_path_factory.mktemp("eval-adapters")
    a = _adapter(root / "sft" / "adapter", seed=1)
    b = _adapter(root / "ppo" / "adapter", seed=2)
    # a PPO run leaves metrics.jsonl beside its adapter; the report plots it as training curves
    records = [{"step": s, "score/mean": 0.1 * s, "kl/k1": 0.05 * s, "kl/beta": 0.2, "policy/entropy": 1.0,
                "value/loss": 0.5 / s} for s in range(1, 6)]  # fmt: skip
    (root / "ppo" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return a, b


@pytest.mark.slow
def test_eval_compares_policies_with_intervals_and_writes_every_output(tmp_path, capsys, adapters):
    a, b = adapters
    out = tmp_path / "eval"
    rewards = "reward.rewards=[{kind: lexicon, name: no insults}, {kind: length, weight: -0.01, name: short}]"
    rc = main(["eval", "-p", f"sft={a}", "-p", f"ppo={b}", "-p", "base", "-o", str(out), "--no-progress",
               *_sets(SMALL + [rewards])])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "toxicity" in printed and "ppo − sft" in printed and str(out / "report.html") in printed
    results = json.loads((out / "results.json").read_text())
    assert results["policy_order"] == ["sft", "ppo", "base"] and results["prompts"] == 12
    keys = [m["key"] for m in results["measures"]]
    assert keys == ["toxicity", "reward:no insults", "reward:short", "rouge1", "rouge2", "rougeL", "kl", "length"]
    for name in ("sft", "ppo", "base"):
        for key in keys:
            s = results["policies"][name]["measures"][key]
            assert s["n"] == 12 and s["mean_ci"]["low"] <= s["mean"] + 1e-12 <= s["mean_ci"]["high"] + 2e-12
        assert 0.0 < results["policies"][name]["distinct_2"] <= 1.0
        assert 0.0 <= results["policies"][name]["repeated_share"] <= 1.0
    # KL is measured against the first policy: ~0 for itself (the same model scoring its own samples), > 0 otherwise
    assert abs(results["policies"]["sft"]["measures"]["kl"]["mean"]) < 1e-4
    assert results["policies"]["ppo"]["measures"]["kl"]["mean"] > 0.05
    pairs = [(c["a"], c["b"]) for c in results["comparisons"]]
    assert pairs == [("sft", "ppo"), ("sft", "base"), ("ppo", "base")]
    tox = results["comparisons"][0]["measures"]["toxicity"]
    assert {"mean_difference", "ci", "p_value", "win_rate", "b_higher", "equal", "b_lower"} <= set(tox)
    assert "win_rate" not in results["comparisons"][0]["measures"]["kl"]  # KL has no better direction

    samples = list(csv.DictReader((out / "samples.csv").open()))
    assert len(samples) == 3 * 12 and {"policy", "prompt", "reference", "response", "toxicity", "kl"} <= set(samples[0])
    table = list(csv.DictReader((out / "before_after_sft_vs_ppo.csv").open()))
    assert len(table) == 12
    diffs = [float(r["difference"]) for r in table]
    assert diffs == sorted(diffs)  # toxicity, the first measure (lower is better): biggest improvement first
    assert all(float(r["score_after"]) - float(r["score_before"]) == pytest.approx(float(r["difference"])) for r in table)
    assert (out / "before_after_sft_vs_base.csv").is_file() and (out / "summary.csv").is_file()
    assert (out / "comparisons.csv").is_file() and (out / "config.yaml").is_file()

    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3  # means, histograms, training curves: all embedded
    assert "Training curves" in html and "Before / after: sft → ppo" in html and "src=\"http" not in html
    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert plots == ["histograms.png", "means.png", "training_curves.png"]  # the same figures, for slides and docs


@pytest.mark.slow
def test_paired_sampling_gives_identical_policies_identical_responses(tmp_path, adapters):
    """The same adapter under two names: same prompts, same seeds → the same responses, differences exactly 0."""
    a, _ = adapters
    out = tmp_path / "same"
    assert main(["eval", "-p", f"one={a}", "-p", f"two={a}", "-o", str(out), "--no-progress", *_sets(SMALL)]) == 0
    results = json.loads((out / "results.json").read_text())
    for key, r in results["comparisons"][0]["measures"].items():
        assert r["mean_difference"] == pytest.approx(0.0, abs=1e-5) and r["p_value"] >= 0.99, key
    rows = list(csv.DictReader((out / "samples.csv").open()))
    one = [r["response"] for r in rows if r["policy"] == "one"]
    assert one == [r["response"] for r in rows if r["policy"] == "two"]


@pytest.mark.slow
def test_toxicity_by_a_classifier_label_name(tmp_path, adapters):
    a, b = adapters
    out = tmp_path / "clf"
    tox = ["eval.toxicity.kind=classifier", "eval.toxicity.path=backbone:tiny-hate-classifier", "eval.toxicity.label=hate"]
    assert main(["eval", "-p", f"sft={a}", "-p", f"ppo={b}", "-o", str(out), "--no-progress", *_sets(SMALL + tox)]) == 0
    results = json.loads((out / "results.json").read_text())
    toxicity = results["policies"]["sft"]["measures"]["toxicity"]
    assert 0.0 < toxicity["mean"] < 1.0  # a probability, not the lexicon's 0/1
    assert results["measures"][0]["label"] == "toxicity (hate)"


@pytest.mark.parametrize(
    "args, fragment",
    [
        ([], "name the policies to compare"),
        (["-p", "sft=/no/such/adapter"], "not an adapter folder"),
        (["-p", "x=base", "-p", "x=base"], "must be unique"),
        (["-p", "a=base", "--set", "eval.reference=b"], "eval.reference 'b' is not one of the policies"),
        (["-p", "base", "--set", "eval.prompts=0"], "eval.prompts must be positive"),
        (["-p", "base", "--set", "eval.toxicity.kind=vibes"], "eval.toxicity.kind must be lexicon or classifier"),
        (["-p", "base", "--set", "eval.toxicity.kind=classifier"], "eval.toxicity.path is empty"),
        (["-p", "base", "--set", "eval.split=validation"], "eval.split must be train or test"),
    ],
)
def test_bad_eval_input_gives_one_paragraph_and_exit_2(tmp_path, capsys, args, fragment):
    rc = main(["eval", "-o", str(tmp_path / "e"), "--no-progress", *args])
    err = capsys.readouterr().err
    assert rc == 2 and fragment in err and "Traceback" not in err and err.startswith("rlhfkit eval: error:")


def test_a_reward_that_returns_nan_or_the_wrong_count_is_an_error_in_evaluation():
    from rlhfkit.errors import RlhfkitError
    from rlhfkit.eval.measures import score_all
    from rlhfkit.rewards.simple import CallableReward

    nan = CallableReward(lambda prompts, responses: [float("nan")] * len(responses), name="broken")
    with pytest.raises(RlhfkitError, match="non-finite score for 2 response"):
        score_all(nan, ["p", "p"], ["a", "b"])
    short = CallableReward(lambda prompts, responses: [1.0], name="short")
    with pytest.raises(RlhfkitError, match="returned 1 scores for 2 responses"):
        score_all(short, ["p", "p"], ["a", "b"])


def test_an_adapter_for_another_base_model_is_refused_before_any_sampling(tmp_path, capsys, adapters, monkeypatch):
    """The mismatch is found from config.json alone, before the first policy (here 'base') is sampled."""
    from rlhfkit.eval import evaluate

    sampled = []
    monkeypatch.setattr(evaluate, "sample_policy", lambda cfg, name, *rest: sampled.append(name))
    t5_adapter, _ = adapters
    rc = main(["eval", "-p", "base", "-p", f"sft={t5_adapter}", "-o", str(tmp_path / "e"), "--no-progress",
               "--set", "model.name_or_path=preset:tiny-llama", *_sets(SMALL)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("rlhfkit eval: error: policy 'sft': ") and "different base model" in err
    assert "Traceback" not in err and sampled == [] and not (tmp_path / "e").exists()
