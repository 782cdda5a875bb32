"""Sampled text is decoded whole and holds no U+FFFD, even where a policy sampled bytes that form no character."""

from __future__ import annotations

import torch

from rlhfkit.rollout.generation import decode_texts


def test_bytes_that_form_no_character_are_dropped_and_split_characters_are_joined(tiny_t5_dir):
    """tiny-t5's tokenizer is byte-level BPE trained on ASCII text: every non-ASCII byte is a token of its own."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_t5_dir)

    def ids(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    e_acute = ids("é")  # two byte tokens, 0xC3 0xA9: a character split over tokens
    assert len(e_acute) == 2 and all("\ufffd" in tok.decode([i]) for i in e_acute)
    lead, continuation = e_acute
    # as a policy samples them: a lone lead byte inside a word (what an undertrained or β = 0 policy emits),
    # the split character, and a lead byte cut off by max_new_tokens at the end
    sampled = [*ids("cinema"), lead, *ids("orrow caf"), lead, continuation, *ids(" ok"), continuation, lead]
    plain = ids("plain text")
    rows = torch.tensor([sampled + [tok.eos_token_id],
                         plain + [tok.eos_token_id] + [tok.pad_token_id] * (len(sampled) - len(plain))])  # fmt: skip
    assert "\ufffd" in tok.batch_decode(rows, skip_special_tokens=True)[0]  # the problem, as the tokenizer has it
    assert decode_texts(tok, rows) == ["cinemaorrow café ok", "plain text"]
