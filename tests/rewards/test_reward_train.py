"""Reward-model training end to end on a tiny backbone: outputs, normalisation, LoRA, labels, CLI, bad input."""

from __future__ import annotations

import json
import math

import pytest

from rlhfkit.config import RewardConfig, RewardSpec, RewardTrainConfig, load_config
from rlhfkit.errors import RlhfkitError
from rlhfkit.rewards.factory import build_reward
from rlhfkit.rewards.train import run_reward_training

pytestmark = pytest.mark.slow


def _cfg(tmp_path, train, test=None, *overrides):
    files = [f"data.train_files=[{json.dumps(str(train))}]", f"run.output_dir={tmp_path / 'rm'}", "run.device=cpu",
             "run.precision=fp32", "backbone.name_or_path=backbone:tiny-bert", "data.max_length=128",
             "train.learning_rate=2e-3", "train.batch_size=16", "train.epochs=2", "train.log_every=2"]  # fmt: skip
    if test is not None:
        files.append(f"data.eval_files=[{json.dumps(str(test))}]")
    return load_config([], files + list(overrides), schema=RewardTrainConfig)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_pair_files, _preset_cache):
    train, test = synthetic_pair_files
    folder = tmp_path_factory.mktemp("trained")
    return run_reward_training(_cfg(folder, train, test), progress=False)


def test_training_writes_a_loadable_reward_model_and_a_report(trained):
    out = trained.output_dir
    for name in ("config.yaml", "metrics.jsonl", "report.json", "loss_curve.png"):
        assert (out / name).is_file(), name
    for name in ("config.json", "model.safetensors", "tokenizer.json", "rlhfkit_reward.json"):
        assert (trained.model_dir / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    h = report["heldout"]
    assert h["n"] == 40 and 0 <= h["ci_low"] <= h["accuracy"] <= h["ci_high"] <= 1
    assert h["accuracy"] >= 0.6  # two epochs on 120 pairs: a tiny random BERT learns the easy pairs
    assert [b["n"] for b in h["by_bucket"]] and sum(b["n"] for b in h["by_bucket"]) == 40
    assert report["data"]["kept"] == 120 and report["train_examples"] == 240
    assert report["pairs_per_second"] > 0 and report["scoring_texts_per_second"] > 0
    events = [json.loads(line)["event"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert events[0] == "start" and events.count("train") >= 3 and events[-1] == "eval"


def test_reference_responses_score_mean_zero_std_one_when_loaded(trained, synthetic_pair_files):
    train, _ = synthetic_pair_files
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    seen = {}
    for r in rows:  # the default reference set: every distinct training response
        seen[(r["prompt"], r["chosen"])] = None
        seen[(r["prompt"], r["rejected"])] = None
    prompts, responses = [p for p, _ in seen], [x for _, x in seen]
    reward = build_reward(RewardConfig(rewards=[RewardSpec(kind="reward_model", path=str(trained.output_dir), device="cpu")]))
    scores = reward(prompts, responses)
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    assert mean == pytest.approx(0.0, abs=1e-3) and std == pytest.approx(1.0, abs=1e-3)
    meta = json.loads((trained.model_dir / "rlhfkit_reward.json").read_text())
    assert meta["input"] == "prompt+response" and meta["scale"] == pytest.approx(trained.scale)


def test_cli_make_pairs_train_score(tmp_path, reward_cli):
    code, out, _ = reward_cli(["make-pairs", "--out", str(tmp_path / "p.jsonl"), "--size", "30", "--flip", "0.1"])
    assert code == 0 and "wrote 60 preference pairs" in out
    code, out, err = reward_cli(["train", "--data", str(tmp_path / "p.jsonl"), "-o", str(tmp_path / "rm"), "--no-progress",
                                 "--set", "backbone.name_or_path=backbone:tiny-roberta", "--set", "run.device=cpu",
                                 "--set", "run.precision=fp32",
                                 "--set", "data.max_length=96", "--set", "data.test_size=0.2"])  # fmt: skip
    assert code == 0, err
    assert "held-out pairwise accuracy" in out and "95% CI" in out and "reward model saved to" in out
    code, out, _ = reward_cli(["score", "--reward-model", str(tmp_path / "rm"), "--pairs", str(tmp_path / "p.jsonl")])
    assert code == 0 and "pairwise accuracy" in out
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "Summarize", "response": "A kind summary."}) + "\n" +
                    json.dumps({"prompt": "Summarize", "completion": "You idiot."}) + "\n")  # fmt: skip
    code, out, _ = reward_cli(["score", "--reward-model", str(tmp_path / "rm"), "--file", str(rows), "--out",
                               str(tmp_path / "scored.jsonl")])  # fmt: skip
    assert code == 0 and "2 texts: mean" in out and "offset:" in out
    scored = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert all(isinstance(r["score"], float) for r in scored) and scored[0]["response"] == "A kind summary."


def test_cli_scores_a_classifier_by_label(reward_cli, hate_classifier_dir):
    code, out, _ = reward_cli(["score", "--classifier", hate_classifier_dir, "--label", "nothate", "--output", "prob",
                               "--text", "a kind summary", "--text", "you idiot"])  # fmt: skip
    assert code == 0 and len(out.strip().splitlines()) == 2
    assert all(0.0 < float(line.split("\t")[0]) < 1.0 for line in out.strip().splitlines())
    code, _, err = reward_cli(["score", "--classifier", hate_classifier_dir, "--label", "toxic", "--text", "x"])
    assert code == 2 and "'hate' (id 0), 'nothate' (id 1)" in err
    code, _, err = reward_cli(["score", "--text", "x"])
    assert code == 2 and "name exactly one reward" in err


def test_cli_reports_missing_columns_and_lists_backbones(tmp_path, reward_cli):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "Q", "chosen": "a", "answer": "b"}) + "\n")
    code, _, err = reward_cli(["train", "--data", str(bad), "-o", str(tmp_path / "x"), "--no-progress",
                               "--set", "run.precision=fp32"])  # fmt: skip
    assert code == 2 and "needs 'rejected'" in err
    code, out, _ = reward_cli(["train", "--explain"])
    assert code == 0 and "train.center_coefficient = 0.0" in out and "Eisenstein" in out
    code, out, _ = reward_cli(["backbones"])
    assert code == 0 and "backbone:tiny-bert" in out and "backbone:minilm" in out


def test_unpaired_labels_train_a_binary_reward(tmp_path, write_jsonl):
    from rlhfkit.rewards.synthetic_pairs import make_synthetic_pairs

    rows = []
    for r in make_synthetic_pairs(size=40, seed=2, kinds=["toxic"]):
        rows += [{"prompt": r["prompt"], "completion": r["chosen"], "label": True},
                 {"prompt": r["prompt"], "completion": r["rejected"], "label": False}]  # fmt: skip
    f = write_jsonl(tmp_path / "u.jsonl", rows)
    result = run_reward_training(_cfg(tmp_path, f, None, "data.test_size=0.25", "train.epochs=10", "data.input=response",
                                      "data.max_length=64"), progress=False)  # fmt: skip
    assert result.kind == "labels" and result.heldout["n"] == 20
    assert result.heldout["accuracy"] >= 0.6


def test_lora_training_saves_a_merged_plain_classifier(tmp_path, synthetic_pair_files):
    train, test = synthetic_pair_files
    result = run_reward_training(_cfg(tmp_path, train, test, "lora.enabled=true", "lora.r=4", "train.epochs=1"),
                                 progress=False)  # fmt: skip
    assert not (result.model_dir / "adapter_config.json").exists()
    reward = build_reward(RewardConfig(rewards=[RewardSpec(kind="reward_model", path=str(result.model_dir), device="cpu")]))
    assert len(reward(["p"], ["r"])) == 1
    start = json.loads((result.output_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert start["trainable_parameters"] < 50_000  # adapters and the score head, not the backbone


def test_ties_as_half_wins_and_margins_reported_by_bucket(tmp_path, write_jsonl):
    from rlhfkit.rewards.synthetic_pairs import make_synthetic_pairs

    rows = []
    for i, r in enumerate(make_synthetic_pairs(size=40, seed=4)):
        rows.append({**r, "margin": float(i % 2), "annotator": "a", "tie": i % 10 == 0})
    f = write_jsonl(tmp_path / "m.jsonl", rows)
    result = run_reward_training(_cfg(tmp_path, f, None, "data.ties=half", "data.test_size=0.3", "train.epochs=1"),
                                 progress=False)  # fmt: skip
    assert result.data.ties_half == 8
    buckets = [b["bucket"] for b in result.heldout["by_bucket"]]
    assert buckets == ["label margin = 0", "label margin = 1"]


def test_a_backbone_that_is_not_a_sequence_classifier_is_refused(tmp_path, synthetic_pair_files):
    from transformers import ViTConfig

    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(tmp_path / "vit")
    train, _ = synthetic_pair_files
    with pytest.raises(RlhfkitError, match="no sequence-classification head"):
        run_reward_training(_cfg(tmp_path, train, None, f"backbone.name_or_path={tmp_path / 'vit'}"), progress=False)


def test_reward_model_path_that_is_not_one(tmp_path, tiny_bert_dir):
    with pytest.raises(RlhfkitError, match="not a reward model written by `rlhfkit reward train`"):
        build_reward(RewardConfig(rewards=[RewardSpec(kind="reward_model", path=tiny_bert_dir)]))


def test_training_config_rules_are_checked_up_front():
    with pytest.raises(RlhfkitError) as e:
        load_config([], ["data.ties=maybe", "train.learning_rate=0", "data.test_size=1.5"], schema=RewardTrainConfig)
    message = str(e.value)
    for needle in ("data.train_files is empty", "data.ties", "train.learning_rate", "data.test_size"):
        assert needle in message


def test_a_decoder_only_backbone_scores_the_same_text_the_same_however_it_is_padded(tmp_path, tiny_llama_dir,
                                                                                     synthetic_pair_files):  # fmt: skip
    train, _ = synthetic_pair_files
    result = run_reward_training(_cfg(tmp_path, train, None, f"backbone.name_or_path={tiny_llama_dir}",
                                      "train.epochs=1", "data.test_size=0.2"), progress=False)  # fmt: skip
    reward = build_reward(RewardConfig(rewards=[RewardSpec(kind="reward_model", path=str(result.output_dir),
                                                           device="cpu", batch_size=8)]))  # fmt: skip
    alone = reward(["Summarize: a chat."], ["Short."])[0]
    padded = reward(["Summarize: a chat."] * 2, ["Short.", "A much longer response that forces padding. " * 5])[0]
    assert alone == pytest.approx(padded, abs=1e-4)  # the score is read at the last real token, not at a pad
