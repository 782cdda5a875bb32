"""Policy + value head + reference: the invariants PPO's correctness rests on."""

from __future__ import annotations

import pytest
import torch

from rlhfkit.config import GenerationConfig, LoraConfig, ModelConfig
from rlhfkit.errors import RlhfkitError
from rlhfkit.models.loading import load_base_model
from rlhfkit.models.lora import attach_lora, save_adapter
from rlhfkit.models.policy import build_policy
from rlhfkit.models.value_head import attach_value_head
from rlhfkit.rollout.generation import generate

PROMPTS = [
    "Summarize the following conversation.\n\n#Person1#: I lost my wallet on the bus.\n#Person2#: Oh no!\n\nSummary: ",
    "Summarize: #Person1#: Hi.\n\nSummary: ",
    "Summarize: #Person1#: Can I book a table for four on Friday?\n#Person2#: Sure.\n\nSummary: ",
]
GEN = GenerationConfig(max_new_tokens=12, temperature=0.7)

# Passes that compute the same log-probs and values along different paths (the sampling pass with its KV cache, a
# teacher-forced pass) agree up to float32 rounding relative to the terms they sum: a few ulps of the largest
# tempered logit for a log-prob, of Σ|w_i h_i| for a value (w·h + b cancels, so not of the value itself). ULPS = 64
# of them is the budget of test_decoding.py, which gives the argument and the measurements; here the log-probs came
# within 6 ulps (4.3e-6 at most, against tolerances of 1e-5..5e-5) and the values within 1.2 (1.2e-5 against 6e-4).
ULPS = 64
EPS32 = torch.finfo(torch.float32).eps
EPS_BF16 = torch.finfo(torch.bfloat16).eps


def _largest_tempered_logit(policy, out) -> float:
    with torch.no_grad():
        logits, _ = policy._lm_forward(policy.model, out.prompt_ids, out.prompt_mask, out.response_ids)
    return float(logits.float().abs().amax(-1)[out.response_mask.bool()].max()) / GEN.temperature


def _value_terms(policy, hidden: torch.Tensor, mask: torch.Tensor) -> float:
    terms = hidden.abs().float() @ policy.value_head.weight.detach().abs().T  # (B, T, 1): Σ_i |w_i h_i|
    return float(terms.squeeze(-1)[mask.bool()].max())


@pytest.fixture(scope="module")
def sft_adapters(tmp_path_factory):
    """A non-trivial 'SFT' adapter per architecture (random LoRA weights), to start PPO from."""
    folders = {}
    for preset in ("tiny-t5", "tiny-llama"):
        loaded = attach_lora(load_base_model(ModelConfig(name_or_path=f"preset:{preset}")), LoraConfig())
        torch.manual_seed(0)
        with torch.no_grad():
            for name, p in loaded.model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.3)
        folder = tmp_path_factory.mktemp(f"sft-{preset}")
        save_adapter(loaded.model, loaded.tokenizer, folder, loaded.source)
        folders[preset] = str(folder)
    return folders


def _rollout(policy):
    return generate(policy.model, policy.tokenizer, PROMPTS, GEN, policy.is_encoder_decoder, seed=0, collect=True)


@pytest.mark.parametrize("preset", ["tiny-t5", "tiny-llama"])
@pytest.mark.parametrize("reference", ["adapter", "copy", "sft-adapter", "sft-copy"])
def test_kl_to_reference_is_zero_before_the_first_update(preset, reference, sft_adapters):
    sft = sft_adapters[preset] if reference.startswith("sft") else None
    policy = build_policy(ModelConfig(name_or_path=f"preset:{preset}"), LoraConfig(dropout=0.5),
                          reference=reference.removeprefix("sft-"), sft_adapter=sft)  # fmt: skip
    policy.train()  # the rollout and reference passes must switch dropout (here p=0.5 on LoRA) off themselves
    out = _rollout(policy)
    mask = out.response_mask
    ref = policy.reference_logprobs(out.prompt_ids, out.prompt_mask, out.response_ids, GEN.temperature)
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        policy.eval()
        own = policy.score(out.prompt_ids, out.prompt_mask, out.response_ids, GEN.temperature).logprobs
    # Not close but equal: the reference runs the same weights through the same shapes, and the fresh adapter's
    # B = 0 adds exactly 0.0 (or is merged as W + 0 into the copy), so every product rounds the same way.
    assert torch.equal(own * mask, ref * mask)
    # the generation pass's log-probs agree with the teacher-forced pass (KV cache vs full forward), up to rounding
    tolerance = ULPS * EPS32 * _largest_tempered_logit(policy, out)
    assert ((out.logprobs - own) * mask).abs().max().item() <= tolerance


def test_reference_is_the_sft_model_not_the_raw_base(sft_adapters):
    cfg = ModelConfig(name_or_path="preset:tiny-t5")
    from_sft = build_policy(cfg, LoraConfig(), sft_adapter=sft_adapters["tiny-t5"])
    raw = build_policy(cfg, LoraConfig())
    out = _rollout(from_sft)
    args = (out.prompt_ids, out.prompt_mask, out.response_ids, GEN.temperature)
    # measured: they differ by up to 5.3 nats (2.1 on average per token); rounding alone stays below 1e-4
    assert not torch.allclose(from_sft.reference_logprobs(*args), raw.reference_logprobs(*args), atol=1e-3)


def test_reference_stays_frozen_while_the_adapter_trains():
    policy = build_policy(ModelConfig(name_or_path="preset:tiny-llama"), LoraConfig())
    out = _rollout(policy)
    args = (out.prompt_ids, out.prompt_mask, out.response_ids, GEN.temperature)
    before = policy.reference_logprobs(*args)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)
    assert torch.equal(policy.reference_logprobs(*args), before)
    own = policy.score(*args).logprobs.detach()
    # while the policy itself moved (measured: by up to 1.0 nat; rounding alone stays below 1e-4)
    assert ((own - before) * out.response_mask).abs().max() > 1e-3


def test_a_policy_has_no_value_head_until_ppo_attaches_one():
    policy = build_policy(ModelConfig(name_or_path="preset:tiny-t5"), LoraConfig())
    out = _rollout(policy)
    with torch.no_grad():
        scores = policy.score(out.prompt_ids, out.prompt_mask, out.response_ids, GEN.temperature)
    assert scores.values is None and scores.logprobs.shape == out.response_ids.shape
    assert not any("value_head" in name for name in policy.trainable_state())
    with pytest.raises(RlhfkitError, match="no value head"):
        policy.values_from_hidden(out.last_hidden)
    attach_value_head(policy)
    assert list(policy.trainable_state())[-2:] == ["value_head.weight", "value_head.bias"]  # after the adapter
    with pytest.raises(RlhfkitError, match="already has a value head"):
        attach_value_head(policy)


def test_value_head_starts_at_zero_and_values_line_up_with_generation():
    policy = attach_value_head(build_policy(ModelConfig(name_or_path="preset:tiny-t5"), LoraConfig()))
    out = _rollout(policy)
    assert torch.count_nonzero(policy.values_from_hidden(out.last_hidden)) == 0
    with torch.no_grad():
        policy.value_head.weight.normal_()
    policy.eval()
    with torch.no_grad():
        tf = policy.score(out.prompt_ids, out.prompt_mask, out.response_ids, GEN.temperature).values
    gen_values = policy.values_from_hidden(out.last_hidden)
    tolerance = ULPS * EPS32 * _value_terms(policy, out.last_hidden, out.response_mask)
    assert ((tf - gen_values) * out.response_mask).abs().max() <= tolerance
    assert tf.shape == out.response_ids.shape


def test_trainable_state_round_trip_and_mismatch():
    cfg = ModelConfig(name_or_path="preset:tiny-t5")
    a, b = (attach_value_head(build_policy(cfg, LoraConfig())) for _ in range(2))
    with torch.no_grad():
        for p in a.parameters():
            if p.requires_grad:
                p.normal_()
    b.load_trainable_state(a.trainable_state())
    assert all(torch.equal(x, y) for x, y in zip(a.trainable_state().values(), b.trainable_state().values()))
    assert "value_head.weight" in a.trainable_state()
    other = attach_value_head(build_policy(cfg, LoraConfig(r=8)))
    with pytest.raises(RlhfkitError, match="shape"):
        other.load_trainable_state(a.trainable_state())


def test_lora_adapter_path_is_refused_for_ppo(sft_adapters):
    with pytest.raises(RlhfkitError, match="ppo.sft_adapter"):
        build_policy(ModelConfig(name_or_path="preset:tiny-t5"), LoraConfig(adapter_path=sft_adapters["tiny-t5"]))


@pytest.mark.parametrize("preset", ["tiny-t5", "tiny-llama"])
@pytest.mark.parametrize("reference", ["adapter", "copy", "sft"])
def test_frozen_linears_stored_in_bf16_change_no_result_under_autocast(preset, reference, sft_adapters):
    """Also for a policy started from an SFT adapter, whose merge wrote into the memory-mapped checkpoint: the
    pages given back after the copy must not take the merged weights with them."""
    sft = sft_adapters[preset] if reference == "sft" else None
    policy = attach_value_head(build_policy(ModelConfig(name_or_path=f"preset:{preset}"), LoraConfig(),
                                            reference="adapter" if sft else reference, sft_adapter=sft))  # fmt: skip
    with torch.no_grad():  # a trained-looking adapter, so the policy and the reference differ
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
    out = _rollout(policy)
    policy.eval()  # dropout off, as in every pass of a PPO step

    def passes():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            scored = policy.score(out.prompt_ids, out.prompt_mask, out.response_ids, GEN.temperature)
            ref = policy.reference_logprobs(out.prompt_ids, out.prompt_mask, out.response_ids, GEN.temperature)
        return scored.logprobs, scored.values, ref

    before = passes()
    assert policy.store_frozen_weights_in(torch.bfloat16) > 0
    after = passes()
    for a, b in zip(before, after):
        assert torch.equal(a, b)  # autocast cast those weights to bf16 on every call anyway
    assert all(p.dtype == torch.float32 for p in policy.parameters() if p.requires_grad)
    embeddings = [m for m in policy.model.modules() if isinstance(m, torch.nn.Embedding)]
    assert embeddings and all(m.weight.dtype == torch.float32 for m in embeddings)
    if reference == "copy":
        frozen = [m for m in policy._reference_copy.modules() if isinstance(m, torch.nn.Linear)]
        assert any(m.weight.dtype == torch.bfloat16 for m in frozen)


@pytest.mark.parametrize("preset", ["tiny-t5", "tiny-llama"])
@pytest.mark.parametrize("reference", ["adapter", "copy"])
def test_frozen_embeddings_in_bf16_round_the_tables_but_keep_the_stream_fp32(preset, reference):
    policy = build_policy(ModelConfig(name_or_path=f"preset:{preset}"), LoraConfig(), reference=reference)
    out = _rollout(policy)
    policy.eval()
    args = (out.prompt_ids, out.prompt_mask, out.response_ids, GEN.temperature)

    def passes():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return policy.score(*args).logprobs, policy.reference_logprobs(*args)

    before, _ = passes()
    tables = [policy.model.get_input_embeddings()]
    fp32_rows = [m(out.prompt_ids) for m in tables]
    policy.store_frozen_weights_in(torch.bfloat16, embeddings=True)
    assert all(m.weight.dtype == torch.bfloat16 for m in tables)
    for m, rows in zip(tables, fp32_rows):
        looked_up = m(out.prompt_ids)
        assert looked_up.dtype == torch.float32  # the residual stream starts in fp32
        assert torch.equal(looked_up, rows.bfloat16().float())  # the table's values, rounded once
    output_layer = policy.model.get_output_embeddings()
    if any(output_layer.weight is m.weight for m in tables):  # a tied output layer goes with its table
        assert output_layer.weight.dtype == torch.bfloat16
    after, ref = passes()
    mask = out.response_mask.bool()
    assert torch.equal(after, ref)  # a fresh adapter: still exactly the reference
    assert not torch.equal(after, before)  # the tables did round ...
    # ... by about bf16's own rounding. Each entry moved by at most half a bf16 ulp, a relative 2^-8 = EPS_BF16/2;
    # passed through to the logits unamplified, that moves a log-prob z_y/T − logsumexp(z/T) by at most
    # EPS_BF16 · max|z/T|. Measured: 0.53 of that on both presets (0.029 of 0.054 on tiny-t5); tables rounded to
    # fp8 (e4m3, 16x coarser) instead come to 1.7x (tiny-t5) and 3x (tiny-llama) of it.
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        largest = _largest_tempered_logit(policy, out)
    assert (after - before)[mask].abs().max() <= EPS_BF16 * largest
    if reference == "copy":
        assert policy._reference_copy.get_input_embeddings().weight.dtype == torch.bfloat16


def test_a_tied_output_layer_goes_to_bf16_with_its_embedding(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from rlhfkit.models.presets import ensure_preset

    source = ensure_preset("tiny-llama")
    config = AutoConfig.from_pretrained(source, tie_word_embeddings=True)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(source).save_pretrained(tmp_path)
    policy = build_policy(ModelConfig(name_or_path=str(tmp_path)), LoraConfig())
    table, output_layer = policy.model.get_input_embeddings(), policy.model.get_output_embeddings()
    assert output_layer.weight is table.weight
    out = _rollout(policy)
    policy.store_frozen_weights_in(torch.bfloat16)
    assert table.weight.dtype == torch.float32  # without embeddings=True, the tied pair stays fp32
    policy.store_frozen_weights_in(torch.bfloat16, embeddings=True)
    assert output_layer.weight is table.weight and table.weight.dtype == torch.bfloat16
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        args = (out.prompt_ids, out.prompt_mask, out.response_ids, GEN.temperature)
        assert torch.equal(policy.score(*args).logprobs, policy.reference_logprobs(*args))
