"""The lean sampling loop: filters by hand, and the model's own teacher-forced pass as the reference."""

from __future__ import annotations

import math

import pytest
import torch

from rlhfkit.config import GenerationConfig, LoraConfig, ModelConfig
from rlhfkit.core.logprobs import logprobs_from_logits
from rlhfkit.models.policy import build_policy
from rlhfkit.models.value_head import attach_value_head
from rlhfkit.rollout.decoding import DecodeSettings, choose_next, sample_from, top_k_filter, top_p_filter
from rlhfkit.rollout.generation import generate

NEG = float("-inf")
PROMPTS = [
    "Summarize the following conversation.\n\n#Person1#: I lost my wallet on the bus.\n#Person2#: Oh no!\n\nSummary: ",
    "Summarize: #Person1#: Hi.\n\nSummary: ",
    "Summarize: #Person1#: Can I book a table for four on Friday?\n#Person2#: Sure.\n\nSummary: ",
    "Summarize: #Person1#: It rained all week.\n\nSummary: ",
]


# --------------------------------------------------------------------------------------------------
# Pure functions


def test_top_k_keeps_the_k_largest_and_ties_at_the_threshold():
    scores = torch.tensor([[1.0, 4.0, 2.0, 3.0], [5.0, 5.0, 1.0, 0.0]])
    assert top_k_filter(scores, 2).tolist() == [[NEG, 4.0, NEG, 3.0], [5.0, 5.0, NEG, NEG]]
    assert top_k_filter(scores, 1)[1].tolist() == [5.0, 5.0, NEG, NEG]  # both tied maxima survive
    assert torch.equal(top_k_filter(scores, 0), scores) and torch.equal(top_k_filter(scores, 4), scores)


def test_top_p_keeps_the_smallest_set_that_reaches_p():
    # probabilities 0.15, 0.5, 0.05, 0.3 (in vocabulary order); sorted: 0.5, 0.3, 0.15, 0.05
    scores = torch.tensor([[0.15, 0.5, 0.05, 0.3]]).log()
    kept = lambda p: torch.isfinite(top_p_filter(scores, p))[0].tolist()  # noqa: E731
    assert kept(0.5) == [False, True, False, False]  # 0.5 alone reaches 0.5
    assert kept(0.7) == [False, True, False, True]  # 0.5 < 0.7, 0.5 + 0.3 reaches it
    assert kept(0.9) == [True, True, False, True]  # 0.8 < 0.9, + 0.15 = 0.95
    assert kept(0.01) == [False, True, False, False]  # the most likely token always survives
    assert torch.equal(top_p_filter(scores, 1.0), scores)


def test_inverse_cdf_sampling_draws_each_token_with_its_probability_and_never_a_zero_one():
    torch.manual_seed(0)
    probs = torch.tensor([[0.0, 0.1, 0.0, 0.6, 0.3, 0.0]])
    draws = sample_from(probs.expand(200_000, -1))
    freq = torch.bincount(draws, minlength=6).double() / draws.numel()
    assert freq[0] == freq[2] == freq[5] == 0
    assert torch.allclose(freq, probs[0].double(), atol=0.005)


def test_min_new_tokens_bans_eos_until_reached_and_greedy_takes_the_argmax():
    eos = 2
    logits = torch.tensor([[0.0, 1.0, 9.0, 3.0]])  # EOS by far the most likely
    s = DecodeSettings(max_new_tokens=8, eos_token_id=eos, pad_token_id=0, min_new_tokens=3, do_sample=False)
    assert [int(choose_next(logits, s, step)) for step in range(5)] == [3, 3, 3, eos, eos]
    torch.manual_seed(0)
    sampled = DecodeSettings(max_new_tokens=8, eos_token_id=eos, pad_token_id=0, min_new_tokens=3)
    assert all(int(choose_next(logits, sampled, 2)) != eos for _ in range(200))


# --------------------------------------------------------------------------------------------------
# Against the model itself, for both architectures


@pytest.fixture(scope="module", params=["tiny-t5", "tiny-llama"])
def policy(request):
    # its own seed: drawn from whatever state earlier tests left, the weights (and with them the size of
    # float32 rounding in the comparisons below) depended on which tests had run before
    with torch.random.fork_rng():
        torch.manual_seed(0)
        policy = attach_value_head(build_policy(ModelConfig(name_or_path=f"preset:{request.param}"),
                                                LoraConfig(dropout=0.5)))  # fmt: skip
        with torch.no_grad():  # a non-zero adapter and value head, so both paths must agree on them too
            for name, p in policy.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.3)
            policy.value_head.weight.normal_(0, 0.1)  # values of order 1
    policy.eval()
    return policy


# The sampling loop and the teacher-forced pass compute the same function of the same float32 weights; they
# differ only in the order of their sums (one query at a time against a cache, eager attention; the whole
# sequence at once, SDPA; other thread counts split sums differently again). Such differences are rounding
# errors, bounded by a few units in the last place (ulp = float32 eps × magnitude) of the largest terms summed
# into a result. ULPS = 64 leaves a wide margin over what was measured (tiny-t5: up to 6 ulp for log-probs,
# 20 for values, over six weight seeds; these tolerances come to 4.8e-5 and 7.1e-5 there), while a real bug is
# far outside it: a temperature off by 0.1% alone moves log-probs by 3.4e-3 (tiny-t5) and 7.7e-4 (tiny-llama).
ULPS = 64
EPS32 = torch.finfo(torch.float32).eps


def _logprob_tolerance(logits: torch.Tensor, mask: torch.Tensor, temperature: float) -> float:
    """Log-probs are z_y/T − logsumexp(z/T): rounding is relative to the largest tempered logit of a valid
    position."""
    return ULPS * EPS32 * float(logits.abs().amax(-1)[mask.bool()].max()) / temperature


def _value_tolerance(policy, hidden: torch.Tensor, mask: torch.Tensor) -> float:
    """A value is w·h + b over H terms: rounding is relative to Σ|w_i h_i| (not to the value, which cancels)."""
    terms = hidden.abs().float() @ policy.value_head.weight.detach().abs().T  # (B, T, 1)
    return ULPS * EPS32 * float(terms.squeeze(-1)[mask.bool()].max())


def _teacher_forced(policy, out, temperature):
    with torch.no_grad():
        scores = policy.score(out.prompt_ids, out.prompt_mask, out.response_ids, temperature)
        logits, _ = policy._lm_forward(policy.model, out.prompt_ids, out.prompt_mask, out.response_ids)
    return scores, logits


@pytest.fixture()
def eos_bias(policy):
    """Make EOS likely (a constant added to its logit, inside the model), so responses end at different lengths."""
    eos = policy.tokenizer.eos_token_id
    bias = {"value": 5.0}

    def add(_module, _inputs, output):
        output[..., eos] += bias["value"]
        return output

    handle = policy.model.get_output_embeddings().register_forward_hook(add)
    yield bias
    handle.remove()


def test_logprobs_and_values_match_a_teacher_forced_pass(policy, eos_bias):
    gen = GenerationConfig(max_new_tokens=12, temperature=0.7)
    out = generate(policy.model, policy.tokenizer, PROMPTS, gen, policy.is_encoder_decoder, seed=3, collect=True)
    lengths = out.response_mask.sum(1)
    assert out.ended.any() and len(set(lengths.tolist())) > 1  # some rows stop early, at different lengths
    scores, logits = _teacher_forced(policy, out, gen.temperature)
    mask = out.response_mask
    assert ((out.logprobs - scores.logprobs) * mask).abs().max().item() <= _logprob_tolerance(logits, mask, gen.temperature)
    values = policy.values_from_hidden(out.last_hidden)
    assert ((values - scores.values) * mask).abs().max().item() <= _value_tolerance(policy, out.last_hidden, mask)
    if not policy.is_encoder_decoder:
        assert not out.prompt_mask.all()  # left padding (with position ids) was exercised


def test_stops_at_eos_and_pads_after_it(policy, eos_bias):
    tok = policy.tokenizer
    eos_bias["value"] = 8.0
    gen = GenerationConfig(max_new_tokens=40)
    out = generate(policy.model, tok, PROMPTS, gen, policy.is_encoder_decoder, seed=0)
    assert out.ended.all()  # with the bias every row ends well within 40 tokens
    assert out.response_ids.shape[1] == int(out.response_mask.sum(1).max()) < 40  # stopped once all had ended
    for row, n in zip(out.response_ids, out.response_mask.sum(1).long()):
        assert row[n - 1] == tok.eos_token_id and tok.eos_token_id not in row[: n - 1].tolist()
        assert torch.all(row[n:] == tok.pad_token_id)


def test_min_new_tokens_holds_back_eos(policy, eos_bias):
    eos_bias["value"] = 8.0  # EOS would come within a token or two
    gen = GenerationConfig(max_new_tokens=12, min_new_tokens=6)
    out = generate(policy.model, policy.tokenizer, PROMPTS, gen, policy.is_encoder_decoder, seed=0)
    assert (out.response_mask.sum(1) >= 6).all()
    assert out.ended.any()  # and EOS still comes once allowed


@pytest.mark.parametrize("top_k, top_p", [(3, 1.0), (0, 0.6), (5, 0.8)])
def test_sampled_tokens_lie_inside_the_top_k_and_top_p_sets(policy, top_k, top_p):
    temperature = 1.3
    gen = GenerationConfig(max_new_tokens=10, top_k=top_k, top_p=top_p, temperature=temperature)
    out = generate(policy.model, policy.tokenizer, PROMPTS, gen, policy.is_encoder_decoder, seed=1, collect=True)
    _, logits = _teacher_forced(policy, out, temperature)
    allowed = top_p_filter(top_k_filter(logits.flatten(0, 1).float() / temperature, top_k), top_p)  # (B*T, V)
    chosen = allowed.gather(1, out.response_ids.flatten()[:, None]).squeeze(1)  # (B*T,)
    valid = out.response_mask.flatten().bool()
    assert torch.isfinite(chosen[valid]).all()
    # the log-probs still describe the unfiltered tempered distribution (DESIGN, PPO detail 2)
    full = logprobs_from_logits(logits, out.response_ids, temperature)
    tolerance = _logprob_tolerance(logits, out.response_mask, temperature)
    assert ((out.logprobs - full) * out.response_mask).abs().max().item() <= tolerance
    assert math.isfinite(float(out.logprobs.sum()))


def test_decoding_steps_use_eager_attention_on_a_cpu_and_restore_sdpa(policy):
    """The one-query decoding steps run eager attention (CPU SDPA's flash kernel is slow there); after decoding,
    and in the encoder and teacher-forced passes, the model's SDPA is back."""
    base = policy.model.get_base_model()
    assert base.config._attn_implementation == "sdpa"
    seen: list[tuple[int, str]] = []  # (query length, attention implementation) at each forward of the decoder
    decoder = base.get_decoder()
    hook = decoder.register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append(
            (next(v for k, v in kwargs.items() if k in ("input_ids", "inputs_embeds") and v is not None).shape[1],
             base.config._attn_implementation)
        ),
        with_kwargs=True,
    )
    try:
        generate(policy.model, policy.tokenizer, PROMPTS, GenerationConfig(max_new_tokens=4), policy.is_encoder_decoder,
                 seed=0)  # fmt: skip
    finally:
        hook.remove()
    assert len(seen) == 4 and {impl for _, impl in seen} == {"eager"}
    assert {length for length, _ in seen[1:]} == {1}
    assert base.config._attn_implementation == "sdpa"
