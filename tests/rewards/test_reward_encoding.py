"""Encoding texts for a classifier: pairs, truncation that keeps the response, dynamic padding."""

from __future__ import annotations

import pytest

from rlhfkit.rewards.encoding import classifier_max_length, encode_texts, pad_batch


@pytest.fixture(scope="module")
def tokenizer(tiny_bert_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_bert_dir)


def test_response_mode_ignores_the_prompt(tokenizer):
    a = encode_texts(tokenizer, ["one prompt"], ["the reply"], "response", 64)
    b = encode_texts(tokenizer, ["another prompt entirely"], ["the reply"], "response", 64)
    assert a.input_ids == b.input_ids and a.truncated == [False]


def test_pair_mode_puts_the_response_second_with_segment_ids(tokenizer):
    enc = encode_texts(tokenizer, ["the prompt"], ["the reply"], "prompt+response", 64, use_token_types=True)
    ids, types = enc.input_ids[0], enc.token_type_ids[0]
    reply = tokenizer("the reply", add_special_tokens=False)["input_ids"]
    assert ids[-len(reply) - 1 : -1] == reply  # ... reply </s>
    assert types[-1] == 1 and types[0] == 0


def test_long_prompt_is_cut_and_the_response_kept_whole(tokenizer):
    prompt = " ".join(["word"] * 300)
    response = "#Person1# books a table for two on Friday."
    enc = encode_texts(tokenizer, [prompt, "short"], [response, response], "prompt+response", 40)
    assert enc.truncated == [True, False]
    assert len(enc.input_ids[0]) <= 40
    reply = tokenizer(response, add_special_tokens=False)["input_ids"]
    assert enc.input_ids[0][-len(reply) - 1 : -1] == reply


def test_a_response_longer_than_the_budget_keeps_a_quarter_for_the_prompt(tokenizer):
    prompt, response = " ".join(["ask"] * 50), " ".join(["answer"] * 200)
    enc = encode_texts(tokenizer, [prompt], [response], "prompt+response", 40)
    ids = enc.input_ids[0]
    assert enc.truncated == [True] and len(ids) <= 40
    prompt_tokens = ids.index(tokenizer.convert_tokens_to_ids("</s>")) - 1  # between <s> and the first </s>
    assert prompt_tokens >= (40 - 3) // 4 - 1  # about a quarter of the 37-token budget stays with the prompt
    assert "answer" in tokenizer.decode(ids)


def test_response_mode_truncation_is_counted(tokenizer):
    enc = encode_texts(tokenizer, [""] * 2, [" ".join(["w"] * 100), "short"], "response", 16)
    assert enc.truncated == [True, False] and len(enc.input_ids[0]) == 16


def test_pad_batch_pads_to_the_longest_of_the_batch_only(tokenizer):
    enc = encode_texts(tokenizer, [""] * 3, ["a", "a b c d e f", "a b"], "response", 64, use_token_types=True)
    batch = pad_batch(enc, [0, 2], pad_id=tokenizer.pad_token_id)
    width = max(len(enc.input_ids[0]), len(enc.input_ids[2]))
    assert batch["input_ids"].shape == (2, width)
    assert batch["attention_mask"].sum(1).tolist() == [len(enc.input_ids[0]), len(enc.input_ids[2])]
    assert batch["token_type_ids"].shape == (2, width)
    assert (batch["input_ids"][batch["attention_mask"] == 0] == tokenizer.pad_token_id).all()
    assert pad_batch(enc, [0], 0, pad_to_multiple_of=8)["input_ids"].shape == (1, 8)


def test_classifier_max_length_respects_roberta_position_offset(tokenizer):
    class Config:
        model_type, max_position_embeddings, pad_token_id = "roberta", 514, 1

    tokenizer_limit = tokenizer.model_max_length
    assert classifier_max_length(tokenizer, Config()) == min(tokenizer_limit, 512)
