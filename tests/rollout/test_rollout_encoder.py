"""bf16 rollouts: the teacher-forced pass behind the old log-probs takes the sampling pass's encoder output."""

from __future__ import annotations

import pytest
import torch

from rlhfkit.config import LoraConfig, ModelConfig, load_config
from rlhfkit.errors import RlhfkitError
from rlhfkit.models.forward import teacher_forced
from rlhfkit.models.policy import build_policy
from rlhfkit.models.value_head import attach_value_head
from rlhfkit.rollout.experience import ChunkedEncoder, sample_experience, teacher_forced_scores

CPU = torch.device("cpu")
# eight prompts of different lengths, so chunks trim different padding columns
PROMPTS = [f"Summarize: #Person1#: {'we need more chairs for the party ' * n}\n\nSummary: " for n in (1, 5, 2, 9, 3, 3, 7, 1)]


def _trained_policy(preset: str = "tiny-t5"):
    policy = attach_value_head(build_policy(ModelConfig(name_or_path=f"preset:{preset}"), LoraConfig()))
    with torch.no_grad():  # a trained-looking adapter, so the policy's encoder differs from the base's
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
    policy.store_frozen_weights_in(torch.bfloat16)
    return policy


def _count_encoder_calls(policy) -> list[int]:
    calls: list[int] = []
    policy.model.get_encoder().register_forward_hook(lambda _m, args, _out: calls.append(1))
    return calls


@pytest.mark.parametrize("generation_batch, expected_calls", [(8, 4), (3, 5 + 2)])
def test_bf16_old_logprobs_are_bit_for_bit_those_of_a_full_teacher_forced_pass(generation_batch, expected_calls):
    """8 prompts, mini-batches of 2. Generating all 8 at once, the 4 chunk encodings serve the sampling pass and
    the teacher-forced pass alike (it used to be 1 + 4 encoder calls). Generating 3 at a time, the sampling pass
    encodes 5 chunks (2+1, 2+1, 2) of which only rows 0-1 and 6-7 match the teacher-forced pass's chunks: the
    other two are encoded again, and the result is still exactly the same."""
    cfg = load_config([], ["model.name_or_path=preset:tiny-t5", "ppo.batch_size=8", "ppo.mini_batch_size=2",
                           "ppo.micro_batch_size=2", f"generation.batch_size={generation_batch}"])  # fmt: skip
    policy = _trained_policy()
    calls = _count_encoder_calls(policy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rollout = sample_experience(policy, PROMPTS, cfg.generation, 10, seed=0, recompute=True, device=CPU, chunk=2)
        assert len(calls) == expected_calls
        logprobs, values = teacher_forced_scores(policy, rollout.prompt_ids, rollout.prompt_mask, rollout.response_ids,
                                                 rollout.mask, cfg.generation.temperature, CPU, chunk=2)  # fmt: skip
    assert rollout.prompt_mask.sum(1).unique().numel() > 3  # the chunks really trim different widths
    assert torch.equal(logprobs * rollout.mask, rollout.old_logprobs)
    assert torch.equal(values * rollout.mask, rollout.values)
    assert rollout.old_logprobs.abs().sum() > 0


def test_chunked_encoder_gives_the_whole_batch_encoder_output_on_real_tokens():
    policy = build_policy(ModelConfig(name_or_path="preset:tiny-t5"), LoraConfig())
    batch = policy.tokenizer(PROMPTS, padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    encoder = ChunkedEncoder(policy.model, chunk=3)
    with torch.no_grad():
        whole = policy.model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        chunked = encoder(ids, mask)
    assert chunked.shape == whole.shape and len(encoder.kept) == 3
    real = mask.bool()
    # Trimmed chunks are other matrix shapes, so the products round differently: the outputs agree up to float32
    # rounding relative to their scale, a few ulps of max|h| (measured 3.1 ulps, 1.4e-6 of 3.8). ULPS = 64 of them,
    # the budget of test_decoding.py (2.9e-5); a chunk that attended to its padding would be off by 3.5.
    tolerance = 64 * torch.finfo(torch.float32).eps * whole[real].abs().max()
    assert (chunked[real] - whole[real]).abs().max() <= tolerance
    for i in range(0, len(PROMPTS), 3):  # columns where every row of a chunk is padding hold zeros
        width = int(mask[i : i + 3].sum(1).max())
        assert chunked[i : i + 3, width:].abs().sum() == 0
        assert width == ids.shape[1] or chunked[i : i + 3, :width].abs().sum() > 0
    w0 = int(mask[:3].sum(1).max())
    assert w0 < ids.shape[1]
    assert encoder.lookup(ids[:3, :w0], mask[:3, :w0]) is encoder.kept[0][2]  # exactly the tensors of chunk 0
    assert encoder.lookup(ids[:3], mask[:3]) is None  # untrimmed: another shape, other products
    assert encoder.lookup(ids[1:4, :w0], mask[1:4, :w0]) is None  # other rows


def test_encoder_output_is_refused_for_a_decoder_only_model():
    policy = build_policy(ModelConfig(name_or_path="preset:tiny-llama"), LoraConfig())
    ids = torch.ones(1, 3, dtype=torch.long)
    with pytest.raises(RlhfkitError, match="decoder-only"):
        teacher_forced(policy.model, False, 0, ids, torch.ones_like(ids), ids, encoder_hidden=torch.zeros(1, 3, 8))
