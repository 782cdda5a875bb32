"""A classifier as a reward: the class chosen by name (never by position), outputs, truncation, bad models."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from rlhfkit.config import RewardConfig, RewardSpec
from rlhfkit.data.synthetic import generate_corpus
from rlhfkit.errors import RlhfkitError
from rlhfkit.rewards.classifier import ClassifierReward, resolve_label
from rlhfkit.rewards.factory import build_reward

SUMMARIES = [e.summary for e in generate_corpus(size=40, toxic_fraction=0.5, seed=5)]


@pytest.fixture(scope="module")
def not_hate(hate_classifier_dir):
    return ClassifierReward(hate_classifier_dir, label="nothate", device="cpu")


def _direct_logits(folder, texts):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(**tok(texts, padding=True, return_tensors="pt")).logits


def test_the_label_is_read_by_name(not_hate, hate_classifier_dir):
    assert not_hate.labels == ["hate", "nothate"] and not_hate.column == 1
    scores = not_hate([""] * len(SUMMARIES), SUMMARIES)
    assert scores == pytest.approx(_direct_logits(hate_classifier_dir, SUMMARIES)[:, 1].tolist(), abs=1e-5)


def test_position_based_selection_of_a_sorted_pipeline_result_picks_the_wrong_class(not_hate, hate_classifier_dir):
    """The course lab's bug: ``pipeline(..., top_k=None)`` sorts classes by score, so a fixed index is not a class."""
    from transformers import pipeline

    pipe = pipeline("text-classification", model=hate_classifier_dir, top_k=None, function_to_apply="none", device="cpu")
    outputs = pipe(SUMMARIES)
    nothate_id = 1
    by_position = [o[nothate_id]["label"] for o in outputs]
    assert "hate" in by_position and "nothate" in by_position  # position 1 is whichever class scored lower
    by_name = [next(d["score"] for d in o if d["label"] == "nothate") for o in outputs]
    assert not_hate([""] * len(SUMMARIES), SUMMARIES) == pytest.approx(by_name, abs=1e-5)
    wrong = [o[nothate_id]["score"] for o in outputs]
    assert wrong != pytest.approx(by_name, abs=1e-5)


def test_an_unknown_label_lists_the_models_labels(hate_classifier_dir):
    with pytest.raises(RlhfkitError, match=r"no class named 'not_hate'. Its classes are: 'hate' \(id 0\), 'nothate' \(id 1\)"):
        ClassifierReward(hate_classifier_dir, label="not_hate", device="cpu")
    with pytest.raises(RlhfkitError, match="has 2 classes.*never picks a class by position"):
        ClassifierReward(hate_classifier_dir, label=None, device="cpu")
    assert resolve_label({0: "hate", 1: "nothate"}, "NotHate", "m") == 1


def test_probability_and_log_probability_outputs(hate_classifier_dir, not_hate):
    logits = _direct_logits(hate_classifier_dir, SUMMARIES[:5])
    prob = ClassifierReward(hate_classifier_dir, label="nothate", output="prob", device="cpu")
    logprob = ClassifierReward(hate_classifier_dir, label="nothate", output="logprob", device="cpu")
    expected = torch.softmax(logits, -1)[:, 1]
    assert prob([""] * 5, SUMMARIES[:5]) == pytest.approx(expected.tolist(), abs=1e-5)
    assert logprob([""] * 5, SUMMARIES[:5]) == pytest.approx(expected.log().tolist(), abs=1e-5)


def test_dropout_is_off_and_scores_are_repeatable(not_hate):
    assert not not_hate.model.training
    assert not any(p.requires_grad for p in not_hate.model.parameters())
    assert not_hate([""] * 3, SUMMARIES[:3]) == not_hate([""] * 3, SUMMARIES[:3])
    assert not_hate([], []) == []


def test_prompt_plus_response_reads_both(hate_classifier_dir):
    pair = ClassifierReward(hate_classifier_dir, label="nothate", input="prompt+response", device="cpu")
    a, b = pair(["first prompt", "a different prompt here"], [SUMMARIES[0], SUMMARIES[0]])
    assert a != b


def test_truncation_is_counted_and_warned_once(hate_classifier_dir):
    reward = ClassifierReward(hate_classifier_dir, label="nothate", max_length=8, device="cpu")
    with pytest.warns(RuntimeWarning, match=r"2 of 3 texts were longer than 8 tokens"):
        reward([""] * 3, [SUMMARIES[0], SUMMARIES[1], "hi"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reward([""], [SUMMARIES[2]])  # counted, not warned again
    assert reward.stats() == {"scored": 4.0, "truncated": 3.0}
    with pytest.raises(RlhfkitError, match="exceeds what the classifier"):
        ClassifierReward(hate_classifier_dir, label="nothate", max_length=100_000, device="cpu")


def test_a_bare_encoder_is_refused_as_a_classifier(tmp_path, tiny_bert_dir):
    from transformers import AutoModel, AutoTokenizer

    AutoModel.from_pretrained(tiny_bert_dir).save_pretrained(tmp_path / "bare")
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(tmp_path / "bare")
    with pytest.raises(RlhfkitError, match="without a trained classification head"):
        ClassifierReward(str(tmp_path / "bare"), device="cpu")


def test_a_model_without_a_sequence_classification_head_is_refused(tmp_path):
    from transformers import ViTConfig

    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(tmp_path)
    with pytest.raises(RlhfkitError, match="'vit' model, which has no sequence-classification head"):
        ClassifierReward(str(tmp_path), label="x", device="cpu")


def test_missing_folder_and_offline_hub_id_are_clear_errors(tmp_path):
    with pytest.raises(RlhfkitError, match="folder .* does not exist"):
        ClassifierReward(str(tmp_path / "missing"), label="nothate")
    with pytest.raises(RlhfkitError, match="could not load the reward classifier config from 'someone/hate-model'"):
        ClassifierReward("someone/hate-model", label="nothate")


def test_factory_builds_weighted_normalised_clipped_sums(hate_classifier_dir, not_hate):
    cfg = RewardConfig(rewards=[
        RewardSpec(kind="classifier", path=hate_classifier_dir, label="nothate", normalize="fixed", offset=1.0,
                   scale=2.0, device="cpu"),
        RewardSpec(kind="length", weight=-0.01),
    ], clip_max=100.0)  # fmt: skip
    reward = build_reward(cfg)
    texts = SUMMARIES[:4]
    raw = not_hate([""] * 4, texts)
    expected = [(r - 1.0) / 2.0 - 0.01 * len(t.split()) for r, t in zip(raw, texts)]
    assert reward([""] * 4, texts) == pytest.approx(expected, abs=1e-5)
    assert "length:words" in reward.name or "length" in json.dumps(reward.stats())


def test_factory_single_term_of_weight_one_is_the_reward_itself(hate_classifier_dir):
    reward = build_reward(RewardConfig(rewards=[RewardSpec(path=hate_classifier_dir, label="nothate", device="cpu")]))
    assert isinstance(reward, ClassifierReward)


def test_reward_config_reports_every_problem():
    with pytest.raises(RlhfkitError) as e:
        RewardConfig(rewards=[RewardSpec(kind="classifier", output="score", normalize="sometimes"),
                              RewardSpec(kind="callable", path="no_colon")]).validate()  # fmt: skip
    message = str(e.value)
    for needle in ("rewards[0].path is empty", "rewards[0].output", "rewards[0].normalize", "package.module:function"):
        assert needle in message
    with pytest.raises(RlhfkitError, match="rewards is empty"):
        RewardConfig().validate()


def test_factory_reaches_the_callable_and_lexicon_kinds():
    lexicon = build_reward(RewardConfig(rewards=[RewardSpec(kind="lexicon", weight=2.0)]))
    assert lexicon(["p", "p"], ["you idiot", "a kind summary"]) == [-2.0, 0.0]  # 2 × (−1 per insult)
    named = build_reward(RewardConfig(rewards=[RewardSpec(kind="callable", path="os.path:join", name="joined")]))
    assert named.name == "joined"
    with pytest.raises(RlhfkitError, match="cannot import module 'no_such_module'"):
        build_reward(RewardConfig(rewards=[RewardSpec(kind="callable", path="no_such_module:f")]))
