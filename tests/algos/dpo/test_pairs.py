"""Preference pairs as token ids: response + EOS as PPO scores a sample, truncation counted, clear refusals."""

from __future__ import annotations

import pytest
import torch

from rlhfkit.algos.dpo.pairs import collate_pairs, tokenise_pairs
from rlhfkit.config import ModelConfig
from rlhfkit.data.preferences import PreferencePair
from rlhfkit.errors import RlhfkitError
from rlhfkit.models.loading import load_base_model
from rlhfkit.rollout.generation import response_mask_from_eos

PAIRS = [
    PreferencePair("Summarize: #Person1#: I lost my wallet.\n\nSummary: ", "Person1 lost a wallet.", "Nothing."),
    PreferencePair("Summarize: #Person1#: Hi.\n\nSummary: ", "They greet.", "A long story about a cat and a dog."),
]


@pytest.fixture(scope="module", params=["tiny-t5", "tiny-llama"])
def tokenizer_and_arch(request):
    loaded = load_base_model(ModelConfig(name_or_path=f"preset:{request.param}"))
    return loaded.tokenizer, loaded.is_encoder_decoder


def test_responses_end_with_eos_and_are_masked_as_ppo_masks_a_sample(tokenizer_and_arch):
    tok, enc_dec = tokenizer_and_arch
    out = tokenise_pairs(tok, PAIRS, enc_dec, max_prompt_tokens=64, max_response_tokens=32)
    assert (out.prompts_truncated, out.chosen_truncated, out.rejected_truncated) == (0, 0, 0)
    for pair, t in zip(PAIRS, out.pairs):
        assert list(t.prompt_ids) == tok(pair.prompt)["input_ids"]  # as the sampling loop encodes prompts
        assert list(t.chosen_ids) == tok(pair.chosen, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert list(t.rejected_ids) == tok(pair.rejected, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    batch = collate_pairs(out.pairs, tok.pad_token_id, enc_dec)
    assert batch.index.tolist() == [0, 1]
    for ids, mask, side in ((batch.chosen_ids, batch.chosen_mask, "chosen_ids"),
                            (batch.rejected_ids, batch.rejected_mask, "rejected_ids")):  # fmt: skip
        ppo_mask, ended = response_mask_from_eos(ids, tok.eos_token_id)  # rollout's rule: up to and incl. first EOS
        assert torch.equal(mask, ppo_mask) and bool(ended.all())
        lengths = [len(getattr(t, side)) for t in out.pairs]
        assert mask.sum(1).tolist() == lengths
        assert (ids[mask == 0] == tok.pad_token_id).all()
    # prompts padded on the architecture's side: left for decoder-only, so each prompt ends where its response starts
    real_last = batch.prompt_mask[:, -1].bool().all()
    real_first = batch.prompt_mask[:, 0].bool().all()
    assert (real_first if enc_dec else real_last)
    assert (batch.prompt_ids[batch.prompt_mask == 0] == tok.pad_token_id).all()


def test_truncation_is_counted_as_sft_truncates(tokenizer_and_arch):
    tok, enc_dec = tokenizer_and_arch
    # limits that fit every pair of PAIRS exactly (responses with their EOS), so only the long pair is cut
    max_prompt = max(len(tok(p.prompt)["input_ids"]) for p in PAIRS)
    max_response = 1 + max(len(tok(r, add_special_tokens=False)["input_ids"]) for p in PAIRS for r in (p.chosen, p.rejected))
    long_prompt = "Summarize: " + "#Person1#: I lost my wallet on the bus. " * 10 + "\n\nSummary: "
    long_response = "a b c d e f g h " * 10
    pairs = [*PAIRS, PreferencePair(long_prompt, long_response, "x")]
    out = tokenise_pairs(tok, pairs, enc_dec, max_prompt_tokens=max_prompt, max_response_tokens=max_response)
    assert (out.prompts_truncated, out.chosen_truncated, out.rejected_truncated) == (1, 1, 0)
    last = out.pairs[-1]
    assert list(last.prompt_ids) == tok(long_prompt, truncation=True, max_length=max_prompt)["input_ids"]  # SFT's rule
    assert len(last.prompt_ids) == max_prompt
    # a cut response keeps its first tokens and, like a sample that hit the length limit, has no EOS
    assert list(last.chosen_ids) == tok(long_response, add_special_tokens=False)["input_ids"][:max_response]
    assert tok.eos_token_id not in last.chosen_ids
    assert last.rejected_ids[-1] == tok.eos_token_id
    # one token less, and the longest PAIRS response is cut too
    tighter = tokenise_pairs(tok, pairs, enc_dec, max_prompt_tokens=max_prompt, max_response_tokens=max_response - 1)
    assert tighter.chosen_truncated + tighter.rejected_truncated >= 2


@pytest.mark.parametrize(
    "pair, message",
    [
        (PreferencePair("p", "", "no"), "empty chosen response"),
        (PreferencePair("p", "yes", "   "), "empty rejected response"),
        (PreferencePair("p", "same", "same"), "same text as chosen and as rejected"),
        (PreferencePair("p", "yes </s> more", "no"), "contains the EOS token"),
    ],
)
def test_bad_pairs_are_refused_with_one_clear_paragraph(tokenizer_and_arch, pair, message):
    tok, enc_dec = tokenizer_and_arch
    with pytest.raises(RlhfkitError, match=message) as info:
        tokenise_pairs(tok, [PAIRS[0], pair], enc_dec, 64, 32)
    assert "pair #1" in str(info.value) and "\n" not in str(info.value)


def test_pairs_identical_after_truncation_and_bad_settings_are_refused(tokenizer_and_arch):
    tok, enc_dec = tokenizer_and_arch
    with pytest.raises(RlhfkitError, match="raise max_response_tokens"):
        tokenise_pairs(tok, [PreferencePair("p", "a b c d e f", "a b c d e f g h")], enc_dec, 64, 4)
    with pytest.raises(RlhfkitError, match="no preference pairs"):
        tokenise_pairs(tok, [], enc_dec, 64, 32)
    with pytest.raises(RlhfkitError, match=">= 1"):
        tokenise_pairs(tok, PAIRS, enc_dec, 0, 32)
    with pytest.raises(RlhfkitError, match="padded on the"):  # ids for one architecture, tokenizer of the other
        tokenise_pairs(tok, PAIRS, not enc_dec, 64, 32)
    with pytest.raises(RlhfkitError, match="empty list"):
        collate_pairs([], tok.pad_token_id, enc_dec)
