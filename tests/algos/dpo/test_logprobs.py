"""Summed sequence log-probs of preference pairs and the reference's disk cache, on both tiny presets."""

from __future__ import annotations

import pytest
import torch

from rlhfkit.algos.dpo import logprobs as dpo_logprobs
from rlhfkit.algos.dpo.logprobs import policy_start_id, reference_logprobs_cached, sequence_logprobs
from rlhfkit.algos.dpo.losses import log_ratios
from rlhfkit.algos.dpo.pairs import collate_pairs, tokenise_pairs
from rlhfkit.config import LoraConfig, ModelConfig
from rlhfkit.data.preferences import PreferencePair
from rlhfkit.models.forward import evaluation_mode, unwrapped
from rlhfkit.models.policy import build_policy

PAIRS = [
    PreferencePair("Summarize: #Person1#: I lost my wallet on the bus.\n#Person2#: Oh no!\n\nSummary: ",
                   "Person1 lost a wallet.", "Nothing happened at all today."),
    PreferencePair("Summarize: #Person1#: Hi.\n\nSummary: ", "They greet.", "A cat."),
    PreferencePair("Summarize: #Person1#: Can I book a table for four?\n\nSummary: ", "A booking.",
                   "Person1 wants to book a table for four people on Friday."),
    PreferencePair("Summarize: #Person1#: It rains.\n\nSummary: ", "Rain.", "Sun and a long walk."),
    PreferencePair("Summarize: #Person1#: Bye.\n\nSummary: ", "A farewell.", "Hello."),
]

# Float32 rounding budget. Two passes over the same tokens in different shapes (padding, other rows) round
# differently: each log-prob = logit − logsumexp(logits) is exact up to a few ulps of the largest |logit| at that
# position (test_decoding.py argues ULPS = 64 and measured ≤ 6 for the sampling loop against a teacher-forced
# pass, the same kind of difference). A sum of n such terms errs by at most n times that. The float64 hand
# computation below starts from the same float32 logits, so the same bound covers it.
ULPS = 64
EPS32 = torch.finfo(torch.float32).eps


@pytest.fixture(scope="module", params=["tiny-t5", "tiny-llama"])
def policy(request):
    # a fresh LoRA adapter: B = 0, so the policy equals its reference (dropout on, to show eval mode is used)
    p = build_policy(ModelConfig(name_or_path=f"preset:{request.param}"), LoraConfig(dropout=0.5))
    p.model.eval()
    return p


@pytest.fixture(scope="module")
def tokenised(policy):
    return tokenise_pairs(policy.tokenizer, PAIRS, policy.is_encoder_decoder, max_prompt_tokens=64,
                          max_response_tokens=48)  # fmt: skip


def _hand(policy, prompt: list[int], response: list[int]) -> tuple[float, float]:
    """Σ_t log softmax(logits_t)[token_t] in float64 for one unpadded pair, token by token; and max |logit|."""
    model = unwrapped(policy.model)
    with torch.no_grad(), policy.reference_model():  # LoRA B = 0: the adapter adds exactly nothing
        if policy.is_encoder_decoder:
            decoder_in = [policy_start_id(policy)] + response[:-1]
            logits = model(input_ids=torch.tensor([prompt]), decoder_input_ids=torch.tensor([decoder_in])).logits[0]
            rows = list(range(len(response)))  # decoder position t predicts response token t
        else:
            logits = model(input_ids=torch.tensor([prompt + response])).logits[0]
            rows = [len(prompt) - 1 + t for t in range(len(response))]  # position P-1+t predicts token t
    total = 0.0
    for t, row in enumerate(rows):
        logp = torch.log_softmax(logits[row].double(), dim=-1)
        total += float(logp[response[t]])
    return total, float(logits[rows].abs().max())


def _tolerance(n_tokens: int, largest_logit: float) -> float:
    return ULPS * EPS32 * max(largest_logit, 1.0) * n_tokens


def _scores(policy, batch, reference=False):
    args = (policy.is_encoder_decoder, policy_start_id(policy), policy.tokenizer.pad_token_id)
    with torch.no_grad(), evaluation_mode(policy.model):
        if reference:
            with policy.reference_model() as ref:
                return sequence_logprobs(ref, batch, *args)
        return sequence_logprobs(policy.model, batch, *args)


def test_summed_logprobs_equal_a_float64_hand_computation_and_ignore_padding(policy, tokenised):
    batch = collate_pairs(tokenised.pairs, policy.tokenizer.pad_token_id, policy.is_encoder_decoder)
    chosen, rejected = _scores(policy, batch)
    assert chosen.shape == rejected.shape == (len(PAIRS),)
    for i, pair in enumerate(tokenised.pairs):
        alone = collate_pairs([pair], policy.tokenizer.pad_token_id, policy.is_encoder_decoder)
        alone_c, alone_r = _scores(policy, alone)  # no padding at all, on the side scored
        for got, single, ids in ((chosen[i], alone_c[0], pair.chosen_ids), (rejected[i], alone_r[0], pair.rejected_ids)):
            want, largest = _hand(policy, list(pair.prompt_ids), list(ids))
            tol = _tolerance(len(ids), largest)
            assert abs(float(got) - want) <= tol, (i, float(got), want, tol)
            assert abs(float(single) - want) <= tol
            assert abs(float(got) - float(single)) <= 2 * tol  # padding in the batch changes nothing beyond rounding


def test_fresh_adapter_gives_the_reference_logprobs_so_the_margin_is_zero(policy, tokenised):
    batch = collate_pairs(tokenised.pairs, policy.tokenizer.pad_token_id, policy.is_encoder_decoder)
    pc, pr = _scores(policy, batch)
    rc, rr = _scores(policy, batch, reference=True)
    # LoRA's B starts at 0: each adapted layer adds x·A·0 = +0.0 exactly, so every logit, and every sum, is identical
    assert torch.equal(pc, rc) and torch.equal(pr, rr)
    assert torch.equal(log_ratios(pc, pr, rc, rr), torch.zeros(len(PAIRS)))


def test_gradients_reach_the_adapter(policy, tokenised):
    batch = collate_pairs(tokenised.pairs[:2], policy.tokenizer.pad_token_id, policy.is_encoder_decoder)
    c, r = sequence_logprobs(policy.model, batch, policy.is_encoder_decoder, policy_start_id(policy),
                             policy.tokenizer.pad_token_id)  # fmt: skip
    (c - r).sum().backward()
    grads = [p.grad for n, p in policy.model.named_parameters() if "lora_A" in n]
    try:  # with B = 0 only B receives a gradient; the A grads are exactly zero, B's are not
        assert any(g is not None and bool(g.abs().sum() == 0) for g in grads)
        assert any(p.grad is not None and float(p.grad.abs().sum()) > 0
                   for n, p in policy.model.named_parameters() if "lora_B" in n)  # fmt: skip
    finally:
        policy.model.zero_grad(set_to_none=True)


class _Counter:
    """Counts forward passes of the underlying transformers model; optionally fails on pass number ``fail_at``."""

    def __init__(self, policy, fail_at: int | None = None) -> None:
        self.calls, self.fail_at = 0, fail_at
        self.handle = unwrapped(policy.model).register_forward_pre_hook(self)

    def __call__(self, *_args):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt("simulated kill")

    def __enter__(self):
        return self

    def __exit__(self, *_exc):
        self.handle.remove()


def test_reference_cache_is_reused_without_a_forward_pass(policy, tokenised, tmp_path):
    path = tmp_path / "run" / "reference_logprobs.safetensors"
    with _Counter(policy) as count:
        first = reference_logprobs_cached(policy, tokenised, path, batch_size=2)
    assert (first.status, first.computed, count.calls) == ("computed", len(PAIRS), 3)  # 5 pairs, 2 per pass
    batch = collate_pairs(tokenised.pairs, policy.tokenizer.pad_token_id, policy.is_encoder_decoder)
    rc, rr = _scores(policy, batch, reference=True)
    for i, pair in enumerate(tokenised.pairs):  # other batch shapes than the cache's: rounding only
        for got, want, ids in ((first.chosen[i], rc[i], pair.chosen_ids), (first.rejected[i], rr[i], pair.rejected_ids)):
            _, big = _hand(policy, list(pair.prompt_ids), list(ids))
            assert abs(float(got) - float(want)) <= 2 * _tolerance(len(ids), big)
    with _Counter(policy) as count:
        again = reference_logprobs_cached(policy, tokenised, path, batch_size=2)
    assert (again.status, again.computed, count.calls) == ("reused", 0, 0)
    assert torch.equal(again.chosen, first.chosen) and torch.equal(again.rejected, first.rejected)
    assert not [p for p in path.parent.iterdir() if p.name != path.name]  # no temporary files left


def test_reference_cache_is_recomputed_when_the_data_or_settings_change(policy, tokenised, tmp_path):
    path = tmp_path / "reference.safetensors"
    reference_logprobs_cached(policy, tokenised, path, batch_size=5)
    changed = [*PAIRS[:-1], PreferencePair(PAIRS[-1].prompt, "A different farewell.", PAIRS[-1].rejected)]
    other = tokenise_pairs(policy.tokenizer, changed, policy.is_encoder_decoder, 64, 48)
    with _Counter(policy) as count:
        result = reference_logprobs_cached(policy, other, path, batch_size=5)
    assert (result.status, result.computed, count.calls) == ("recomputed", len(PAIRS), 1)
    assert "pairs (token ids)" in result.reason and "weights" not in result.reason
    assert reference_logprobs_cached(policy, other, path, batch_size=5).status == "reused"  # the new file stands
    hotter = reference_logprobs_cached(policy, other, path, batch_size=5, temperature=0.7)
    assert hotter.status == "recomputed" and "settings" in hotter.reason
    path.write_bytes(b"not a safetensors file")
    broken = reference_logprobs_cached(policy, other, path, batch_size=5, temperature=0.7)
    assert broken.status == "recomputed" and "could not be read" in broken.reason


def test_reference_cache_resumes_after_a_kill(policy, tokenised, tmp_path):
    whole = reference_logprobs_cached(policy, tokenised, tmp_path / "whole.safetensors", batch_size=1)
    path = tmp_path / "cut.safetensors"
    with _Counter(policy, fail_at=4) as count, pytest.raises(KeyboardInterrupt):
        reference_logprobs_cached(policy, tokenised, path, batch_size=1, save_every=2)  # killed in the 4th pass
    assert count.calls == 4
    from safetensors.torch import load_file

    assert load_file(str(path))["chosen"].shape == (2,)  # the prefix saved after passes 2 (not 3: every 2nd pass)
    with _Counter(policy) as count:
        resumed = reference_logprobs_cached(policy, tokenised, path, batch_size=1, save_every=2)
    assert (resumed.status, resumed.computed, count.calls) == ("resumed", 3, 3)
    # same rows in the same one-pair batches: the same computation, so the same values (up to rounding)
    for i, pair in enumerate(tokenised.pairs):
        for got, want, ids in ((resumed.chosen[i], whole.chosen[i], pair.chosen_ids),
                               (resumed.rejected[i], whole.rejected[i], pair.rejected_ids)):  # fmt: skip
            _, big = _hand(policy, list(pair.prompt_ids), list(ids))
            assert abs(float(got) - float(want)) <= _tolerance(len(ids), big)
    assert reference_logprobs_cached(policy, tokenised, path, batch_size=1).status == "reused"


def test_the_fingerprint_covers_the_reference_weights_not_the_adapter(policy, tokenised):
    before = dpo_logprobs.reference_fingerprint(policy, tokenised, 1.0)
    with torch.no_grad():
        lora_b = next(p for n, p in policy.model.named_parameters() if "lora_B" in n)
        lora_b.add_(1.0)  # training the adapter leaves the reference as it was
        assert dpo_logprobs.reference_fingerprint(policy, tokenised, 1.0) == before
        lora_b.sub_(1.0)
        frozen = next(p for p in policy.model.parameters() if not p.requires_grad)
        frozen.view(-1)[0] += 1.0
        try:
            after = dpo_logprobs.reference_fingerprint(policy, tokenised, 1.0)
        finally:
            frozen.view(-1)[0] -= 1.0
    assert after["model"] != before["model"] and after["data"] == before["data"]
