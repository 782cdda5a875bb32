"""configs/lab-flan-t5-detox.yaml: the course lab's settings, run for one PPO step with local stand-ins.

The real ids (google/flan-t5-base, knkarthick/dialogsum, facebook/roberta-hate-speech-dynabench-r4-target)
cannot be downloaded here, so the test replaces each id in the file's text with a local stand-in and
changes nothing else but the step count and response lengths (for speed).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rlhfkit.cli import main
from rlhfkit.config import load_config
from rlhfkit.engine.metrics import read_metrics

LAB = Path(__file__).resolve().parents[2] / "configs" / "lab-flan-t5-detox.yaml"
MODEL, DATA = "google/flan-t5-base", "knkarthick/dialogsum"
CLASSIFIER, ADAPTER = "facebook/roberta-hate-speech-dynabench-r4-target", "peft-dialogue-summary-checkpoint-from-s3"


def test_the_recipe_holds_the_labs_settings():
    cfg = load_config([LAB])
    assert cfg.model.name_or_path == MODEL and cfg.data.source == DATA
    assert (cfg.data.min_chars, cfg.data.max_chars) == (200, 1000) and "{dialogue}" in cfg.data.template
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.target_modules) == (32, 32, ["q", "v"])
    assert cfg.ppo.sft_adapter == ADAPTER
    ppo = cfg.ppo
    assert (ppo.learning_rate, ppo.batch_size, ppo.mini_batch_size) == (1.41e-5, 16, 4)
    assert (ppo.min_new_tokens, ppo.max_new_tokens) == (100, 400)  # the lab's LengthSampler(100, 400)
    (reward,) = cfg.reward.rewards
    assert (reward.kind, reward.path, reward.label, reward.output) == ("classifier", CLASSIFIER, "nothate", "logit")
    tox = cfg.eval.toxicity
    assert (tox.kind, tox.path, tox.label) == ("classifier", CLASSIFIER, "hate") and cfg.eval.prompts >= 256


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory, _preset_cache) -> dict[str, str]:
    """Local replacements: tiny-t5, a DialogSum-shaped JSONL file, a q/v LoRA adapter, a hate classifier."""
    from rlhfkit.config import LoraConfig, ModelConfig
    from rlhfkit.data.synthetic import generate_corpus
    from rlhfkit.models.loading import load_base_model
    from rlhfkit.models.lora import attach_lora, save_adapter

    root = tmp_path_factory.mktemp("lab")
    rows = [{"id": f"train_{i}", "dialogue": e.dialogue, "summary": e.summary, "topic": e.topic}
            for i, e in enumerate(generate_corpus(60, 0.3, seed=3))]  # fmt: skip
    data = root / "dialogsum.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lab_lora = LoraConfig(r=32, alpha=32, dropout=0.05, target_modules=["q", "v"])
    loaded = attach_lora(load_base_model(ModelConfig(name_or_path="preset:tiny-t5")), lab_lora)
    adapter = save_adapter(loaded.model, loaded.tokenizer, root / "peft-checkpoint", loaded.source)
    return {MODEL: "preset:tiny-t5", DATA: str(data), CLASSIFIER: "backbone:tiny-hate-classifier",
            ADAPTER: str(adapter), "runs/lab-flan-t5-detox": str(root / "run")}  # fmt: skip


@pytest.mark.slow
def test_the_recipe_runs_one_ppo_step_and_an_evaluation_with_stand_ins(tmp_path, capsys, stand_ins):
    text = LAB.read_text()
    for real, local in stand_ins.items():
        assert real in text
        text = text.replace(real, local)
    recipe = tmp_path / "lab.yaml"
    recipe.write_text(text)
    fast = ["ppo.steps=1", "ppo.min_new_tokens=8", "ppo.max_new_tokens=16", "generation.max_new_tokens=16",
            "eval.prompts=8", "eval.bootstrap_resamples=200"]  # fmt: skip
    sets = [arg for o in fast for arg in ("--set", o)]
    assert main(["ppo", "--config", str(recipe), "--no-progress", *sets]) == 0
    run = Path(stand_ins["runs/lab-flan-t5-detox"])
    (step,) = read_metrics(run / "metrics.jsonl")
    # dropout off during the rollout, and the reference is the lab's adapter: no KL before the first update
    assert abs(step["kl/k1"]) < 1e-5 and step["kl/beta"] == pytest.approx(0.2)
    assert yaml.safe_load((run / "config.yaml").read_text())["reward"]["rewards"][0]["label"] == "nothate"

    assert main(["eval", "--config", str(recipe), "-o", str(tmp_path / "eval"), "--no-progress", *sets]) == 0
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["policy_order"] == ["sft", "ppo"] and results["prompts"] == 8
    labels = {m["key"]: m["label"] for m in results["measures"]}
    assert labels["toxicity"] == "toxicity (hate)" and "reward:nothate" in labels
    assert 0.0 <= results["policies"]["ppo"]["measures"]["toxicity"]["mean"] <= 1.0  # a probability of "hate"
