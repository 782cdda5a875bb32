"""Batched generation: dropout off, EOS truncation, prompt budget, reproducible sampling, left padding."""

from __future__ import annotations

import pytest
import torch

from rlhfkit.config import GenerationConfig, LoraConfig, ModelConfig
from rlhfkit.errors import RlhfkitError
from rlhfkit.models.forward import position_ids_from_mask
from rlhfkit.models.loading import load_base_model
from rlhfkit.models.lora import attach_lora
from rlhfkit.rollout.generation import generate, response_mask_from_eos

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


def test_row_seeds_make_each_prompt_independent_of_its_batch(policy):
    """Paired evaluation: a prompt's sample depends on its seed only, not on batch order or batch size."""
    gen = GenerationConfig(max_new_tokens=12, batch_size=3)
    seeds = [11, 22, 33]
    together = generate(policy.model, policy.tokenizer, PROMPTS, gen, policy.is_encoder_decoder, row_seeds=seeds)
    reversed_one_by_one = generate(policy.model, policy.tokenizer, PROMPTS[::-1],
                                   GenerationConfig(max_new_tokens=12, batch_size=1), policy.is_encoder_decoder,
                                   row_seeds=seeds[::-1])  # fmt: skip
    assert together.texts == reversed_one_by_one.texts[::-1]
    other = generate(policy.model, policy.tokenizer, PROMPTS, gen, policy.is_encoder_decoder, row_seeds=[12, 23, 34])
    assert other.texts != together.texts
    with pytest.raises(RlhfkitError, match="one per prompt"):
        generate(policy.model, policy.tokenizer, PROMPTS, gen, policy.is_encoder_decoder, row_seeds=[1])


def test_row_seeded_sampling_draws_from_the_tempered_top_k_distribution(tiny_t5_dir):
    """Gumbel-max per row is exact sampling: first-token frequencies match softmax(top-k logits / T)."""
    loaded = load_base_model(ModelConfig(name_or_path="preset:tiny-t5"))
    model, tok = loaded.model.eval(), loaded.tokenizer
    prompt, n, temperature, k = PROMPTS[1], 3000, 1.5, 20
    gen = GenerationConfig(max_new_tokens=1, temperature=temperature, top_k=k, batch_size=1000)
    out = generate(model, tok, [prompt] * n, gen, True, row_seeds=list(range(n)), collect=True)
    first = out.response_ids[:, 0]
    enc = tok([prompt], return_tensors="pt")
    start = torch.tensor([[model.config.decoder_start_token_id]])
    with torch.no_grad():
        logits = model(**enc, decoder_input_ids=start).logits[0, -1] / temperature
    top = torch.topk(logits, k)
    probs = torch.softmax(top.values, dim=-1)
    assert set(first.tolist()) <= set(top.indices.tolist())  # nothing outside the top k
    counts = torch.stack([(first == t).sum() for t in top.indices]).double()
    # Pearson's goodness of fit over the k tokens: X² = Σ (O − E)²/E is χ² with k − 1 = 19 degrees of freedom
    # when the samples come from `probs` (every expected count here is above 120, where the χ² approximation
    # holds). P(χ²₁₉ > 64) = 1e-6 (scipy.stats.chi2.sf), so a correct sampler fails with negligible
    # probability; measured X² = 14.6. Sampling from the top 21 or top 40 instead of the top 20 gives X² = 136
    # and 2266; ignoring the temperature gives 41, which 3000 samples of this flat distribution cannot tell apart.
    expected = n * probs.double()
    assert float(((counts - expected) ** 2 / expected).sum()) < 64
    # the log-probs kept from the sampling pass are those of the full tempered distribution (no top-k renormalising);
    # the two passes ran on batches of 1000 and 1 rows, so they agree up to float32 rounding (see _logprob_tolerance)
    full = torch.log_softmax(logits, dim=-1)
    assert (out.logprobs[:, 0] - full[first]).abs().max() <= _logprob_tolerance(logits)


# The sampling pass (batch of 1000, KV cache) and a separate forward pass (batch of 1) compute the same logits with
# other matrix shapes, so they round differently. A log-prob z_y/T − logsumexp(z/T) rounds relative to the largest
# tempered logit, by a few float32 ulps of it per operation: ULPS = 64 of them is the budget of test_decoding.py.
# Measured here: 1.4e-6, 5.8 ulps of max|z/T| = 2.08 (the tolerance is 1.6e-5); renormalising over the top 20
# would raise every log-prob by −log Σ_top-20 p = 2.8.
ULPS = 64
EPS32 = torch.finfo(torch.float32).eps


def _logprob_tolerance(tempered_logits: torch.Tensor) -> float:
    return ULPS * EPS32 * float(tempered_logits.abs().max())
