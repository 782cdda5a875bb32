"""Batched generation: dropout off, EOS truncation, prompt budget, reproducible sampling, left padding."""

from __future__ import annotations

import pytest
import torch

from rlhfkit.config import GenerationConfig, LoraConfig, ModelConfig
from rlhfkit.errors import RlhfkitError
from rlhfkit.models.loading import load_base_model
from rlhfkit.models.lora import attach_lora
from rlhfkit.rollout.generation import generate, position_ids_from_mask, response_mask_from_eos

PROMPTS = [
    "Summarize the following conversation.\n\n#Person1#: Hi.\n#Person2#: Hello, how are you today?\n\nSummary: ",
    "Summarize: #Person1#: I lost my wallet on the bus.\n\nSummary: ",
    "Summarize: short\n\nSummary: ",
]


def test_response_mask_keeps_tokens_up_to_and_including_the_first_eos():
    eos = 1
    ids = torch.tensor([[5, 6, 1, 7, 1], [5, 1, 0, 0, 0], [5, 6, 7, 8, 9], [1, 5, 5, 5, 5]])
    mask, ended = response_mask_from_eos(ids, eos)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert ended.tolist() == [True, True, False, True]


def test_position_ids_start_at_the_first_real_token():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


@pytest.fixture(scope="module", params=["tiny-t5", "tiny-llama"])
def policy(request):
    loaded = attach_lora(load_base_model(ModelConfig(name_or_path=f"preset:{request.param}")), LoraConfig(dropout=0.5))
    with torch.no_grad():  # a non-zero adapter, so LoRA dropout would change outputs if it were on
        for name, p in loaded.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return loaded


def test_generation_runs_with_dropout_off_and_restores_train_mode(policy):
    gen = GenerationConfig(max_new_tokens=12, do_sample=False)
    policy.model.train()
    a = generate(policy.model, policy.tokenizer, PROMPTS, gen, policy.is_encoder_decoder)
    b = generate(policy.model, policy.tokenizer, PROMPTS, gen, policy.is_encoder_decoder)
    assert torch.equal(a.response_ids, b.response_ids)  # with dropout 0.5 active these would differ
    assert policy.model.training


def test_outputs_are_masked_after_eos_and_shapes_line_up(policy):
    tok = policy.tokenizer
    gen = GenerationConfig(max_new_tokens=20, batch_size=2)  # two batches of different widths
    out = generate(policy.model, tok, PROMPTS, gen, policy.is_encoder_decoder, seed=0)
    assert out.response_ids.shape == out.response_mask.shape and out.response_ids.shape[0] == 3
    assert out.prompt_ids.shape == out.prompt_mask.shape
    for row, mask, ended in zip(out.response_ids, out.response_mask, out.ended):
        n = int(mask.sum())
        assert torch.all(row[n:] == tok.pad_token_id)
        if ended:
            assert row[n - 1] == tok.eos_token_id and tok.eos_token_id not in row[: n - 1].tolist()
        else:
            assert n == out.response_ids.shape[1] == 20 or tok.eos_token_id not in row.tolist()
    if not policy.is_encoder_decoder:
        assert torch.all(out.prompt_mask[:, -1] == 1)  # left padding: every prompt ends at the same column
    assert len(out.texts) == 3 and all(isinstance(t, str) for t in out.texts)


def test_sampling_is_reproducible_by_seed_without_touching_global_rng(policy):
    gen = GenerationConfig(max_new_tokens=16)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = generate(policy.model, policy.tokenizer, PROMPTS, gen, policy.is_encoder_decoder, seed=7)
    after = torch.rand(1)
    b = generate(policy.model, policy.tokenizer, PROMPTS, gen, policy.is_encoder_decoder, seed=7)
    c = generate(policy.model, policy.tokenizer, PROMPTS, gen, policy.is_encoder_decoder, seed=8)
    assert a.texts == b.texts and a.texts != c.texts
    assert torch.equal(before, after)  # the caller's random stream is unchanged


def test_batched_greedy_equals_one_at_a_time(policy):
    """Padding must not change results: left padding + position ids for decoder-only models."""
    gen = GenerationConfig(max_new_tokens=10, do_sample=False)
    batched = generate(policy.model, policy.tokenizer, PROMPTS, gen, policy.is_encoder_decoder).texts
    single = [generate(policy.model, policy.tokenizer, [p], gen, policy.is_encoder_decoder).texts[0] for p in PROMPTS]
    assert batched == single


def test_too_long_prompt_is_refused_with_the_numbers(policy):
    gen = GenerationConfig(max_prompt_tokens=8)
    with pytest.raises(RlhfkitError, match=r"exceed generation.max_prompt_tokens=8.*#0"):
        generate(policy.model, policy.tokenizer, PROMPTS, gen, policy.is_encoder_decoder)
    with pytest.raises(RlhfkitError, match="no prompts"):
        generate(policy.model, policy.tokenizer, [], gen, policy.is_encoder_decoder)
