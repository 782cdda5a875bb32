"""Presets (save → from_pretrained round trip, sane init), model loading, and LoRA for both architectures."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rlhfkit.config import LoraConfig, ModelConfig
from rlhfkit.errors import RlhfkitError
from rlhfkit.models.loading import load_base_model, prepare_tokenizer
from rlhfkit.models.lora import attach_lora, save_adapter, trainable_parameters
from rlhfkit.models.presets import build_preset, ensure_preset, get_spec

# Two float32 computations of the same logits along different paths agree up to rounding relative to the logits'
# scale: a few ulps of max|logit| per operation. ULPS = 64 of them, as in test_decoding.py.
ULPS = 64
EPS32 = torch.finfo(torch.float32).eps


def _logits(loaded, text="#Person1#: Hello there. #Person2#: Hi!"):
    tok, model = loaded.tokenizer, loaded.model
    model.eval()
    enc = tok([text], return_tensors="pt")
    with torch.no_grad():
        if loaded.is_encoder_decoder:
            return model(**enc, decoder_input_ids=torch.tensor([[tok.pad_token_id, 5, 6]])).logits
        return model(**enc).logits


@pytest.mark.parametrize("preset, enc_dec", [("tiny-t5", True), ("tiny-llama", False)])
def test_preset_round_trips_through_from_pretrained(tmp_path, preset, enc_dec):
    from transformers import AutoConfig

    folder = ensure_preset(preset)
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    assert json.loads((folder / "rlhfkit_preset.json").read_text())["preset"] == preset
    by_name = load_base_model(ModelConfig(name_or_path=f"preset:{preset}"))
    by_folder = load_base_model(ModelConfig(name_or_path=str(folder)))
    assert by_name.is_encoder_decoder is enc_dec and AutoConfig.from_pretrained(folder).is_encoder_decoder is enc_dec
    assert torch.equal(_logits(by_name), _logits(by_folder))
    # building again with the same seed gives the same weights: presets are reproducible
    rebuilt = load_base_model(ModelConfig(name_or_path=str(build_preset(preset, tmp_path / "again"))))
    assert torch.equal(_logits(rebuilt), _logits(by_folder))  # the same weights, the same pass: bit for bit


def test_tanh_gelu_runs_as_one_fused_kernel_with_the_same_results():
    from transformers.activations import GELUTanh, NewGELUActivation

    fused = load_base_model(ModelConfig(name_or_path="preset:tiny-t5"))
    plain = load_base_model(ModelConfig(name_or_path="preset:tiny-t5", fused_activations=False))
    kinds = lambda loaded: {type(m) for m in loaded.model.modules()}  # noqa: E731
    assert NewGELUActivation in kinds(plain) and GELUTanh not in kinds(plain)  # FLAN-T5's 'gelu_new'
    assert NewGELUActivation not in kinds(fused) and GELUTanh in kinds(fused)
    # The same tanh formula evaluated in another order rounds differently in every GELU; the logits then agree
    # up to float32 rounding relative to their own scale: measured 2.1 ulps of max|logit| (9.5e-7 of 3.8), within
    # ULPS = 64 of them (2.9e-5). The exact erf GELU in place of the tanh one moves the logits by 5.3e-4.
    fused_logits, plain_logits = _logits(fused), _logits(plain)
    assert (fused_logits - plain_logits).abs().max() <= ULPS * EPS32 * plain_logits.abs().max()

    def saved_for_backward(loaded) -> int:
        """Bytes autograd keeps from a training forward pass (storages counted once)."""
        storages: dict[int, int] = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        ids = torch.randint(5, 100, (2, 24))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loaded.model(input_ids=ids, decoder_input_ids=ids[:, :8]).logits.sum()
        weights = {p.untyped_storage().data_ptr() for p in loaded.model.parameters()}
        return sum(n for ptr, n in storages.items() if ptr not in weights)

    assert saved_for_backward(fused) < saved_for_backward(plain)  # one saved input per GELU instead of four


@pytest.mark.parametrize("preset", ["tiny-t5", "tiny-llama"])
def test_preset_tokenizer_pads_with_a_token_that_is_not_eos(preset):
    loaded = load_base_model(ModelConfig(name_or_path=f"preset:{preset}"))
    tok = loaded.tokenizer
    assert tok.pad_token_id != tok.eos_token_id
    assert tok.padding_side == ("right" if loaded.is_encoder_decoder else "left")
    ids = tok("#Person1#: I lost my wallet.")["input_ids"]
    if loaded.is_encoder_decoder:
        assert ids[-1] == tok.eos_token_id  # T5 inputs end with </s>
    else:
        assert ids[0] == tok.bos_token_id and tok.eos_token_id not in ids  # prompts must not end the sequence
    assert tok.decode(ids, skip_special_tokens=True) == "#Person1#: I lost my wallet."


def test_untied_t5_output_layer_is_not_near_greedy():
    """T5's own init (std 1.0 on an untied lm_head) gives logit std ~sqrt(d_model): sampling ≈ argmax."""
    loaded = load_base_model(ModelConfig(name_or_path="preset:tiny-t5"))
    logits = _logits(loaded)[0]
    probs = logits.softmax(-1)
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean().item()
    # the preset is built from a fixed seed, so these are fixed numbers: std 1.01 (T5's own init: ~sqrt(128) = 11)
    # and an entropy of 0.93 · log V
    assert logits.std().item() < 3.0
    assert entropy > 0.5 * math.log(logits.shape[-1])  # far from one-hot
    model = loaded.model  # untied like FLAN-T5: the output layer is its own tensor, also after from_pretrained
    assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
    assert not torch.equal(model.lm_head.weight, model.shared.weight)


def test_flan_shapes_match_the_real_models():
    small, base = get_spec("flan-t5-small-shape"), get_spec("flan-t5-base-shape")
    assert small.model_vocab_size == base.model_vocab_size == 32128
    assert (small.model_config["d_model"], small.model_config["num_layers"], small.model_config["num_heads"]) == (512, 8, 6)
    assert (base.model_config["d_model"], base.model_config["num_layers"], base.model_config["num_heads"]) == (768, 12, 12)


def test_unknown_preset_and_missing_folder_are_clear():
    with pytest.raises(RlhfkitError, match="unknown preset 'tiny-gpt'.*tiny-t5, tiny-llama"):
        load_base_model(ModelConfig(name_or_path="preset:tiny-gpt"))
    with pytest.raises(RlhfkitError, match="does not exist"):
        load_base_model(ModelConfig(name_or_path="./no/such/model"))
    with pytest.raises(RlhfkitError, match="HF_HUB_OFFLINE"):
        load_base_model(ModelConfig(name_or_path="google/flan-t5-base-not-real"))


def test_folder_without_config_json_is_explained(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(RlhfkitError, match="no config.json.*lora.adapter_path"):
        load_base_model(ModelConfig(name_or_path=str(tmp_path)))


def test_tokenizer_without_pad_or_with_pad_equal_eos_is_refused(tiny_llama_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tok.pad_token = None
    with pytest.raises(RlhfkitError, match="no pad token.*model.pad_token"):
        prepare_tokenizer(tok, is_encoder_decoder=False)
    with pytest.raises(RlhfkitError, match="also the EOS token"):
        prepare_tokenizer(tok, is_encoder_decoder=False, pad_token="</s>")
    prepare_tokenizer(tok, is_encoder_decoder=False, pad_token="<unk>")
    assert tok.pad_token == "<unk>" and tok.padding_side == "left"
    with pytest.raises(RlhfkitError, match="not in the tokenizer's vocabulary"):
        prepare_tokenizer(tok, is_encoder_decoder=False, pad_token="<nope>")


@pytest.mark.parametrize("preset, expected", [("tiny-t5", {"q", "v"}), ("tiny-llama", {"q_proj", "v_proj"})])
def test_lora_defaults_per_architecture(preset, expected):
    loaded = attach_lora(load_base_model(ModelConfig(name_or_path=f"preset:{preset}")), LoraConfig())
    peft_cfg = loaded.model.peft_config["default"]
    assert set(peft_cfg.target_modules) == expected
    assert (peft_cfg.r, peft_cfg.lora_alpha, peft_cfg.lora_dropout) == (32, 32, 0.05)
    trainable, total = trainable_parameters(loaded.model)
    assert 0 < trainable < total
    names = [n for n, p in loaded.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)


def test_lora_all_linear_with_a_fully_trained_output_layer():
    loaded = attach_lora(
        load_base_model(ModelConfig(name_or_path="preset:tiny-t5")),
        LoraConfig(target_modules=["all-linear"], modules_to_save=["lm_head"]),
    )
    trainable = {n for n, p in loaded.model.named_parameters() if p.requires_grad}
    assert any(".wi_0.lora_A" in n for n in trainable) and any(".o.lora_A" in n for n in trainable)
    assert any("lm_head" in n and "modules_to_save" in n for n in trainable)


def test_wrong_target_modules_name_the_models_modules():
    with pytest.raises(RlhfkitError, match="lora.target_modules.*q_proj"):
        attach_lora(load_base_model(ModelConfig(name_or_path="preset:tiny-llama")), LoraConfig(target_modules=["query"]))


@pytest.mark.parametrize("preset", ["tiny-t5", "tiny-llama"])
def test_saved_adapter_loads_back_as_trainable_with_identical_outputs(tmp_path, preset):
    cfg = ModelConfig(name_or_path=f"preset:{preset}")
    first = attach_lora(load_base_model(cfg), LoraConfig())
    with torch.no_grad():  # move the adapter away from its zero init so the comparison means something
        for name, p in first.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    save_adapter(first.model, first.tokenizer, tmp_path / "adapter", first.source)
    assert (tmp_path / "adapter" / "rlhfkit_adapter.json").is_file()
    second = attach_lora(load_base_model(cfg), LoraConfig(adapter_path=str(tmp_path / "adapter")))
    assert torch.equal(_logits(first), _logits(second))  # fp32 weights saved and read back: the same bits
    assert trainable_parameters(second.model)[0] == trainable_parameters(first.model)[0]


def test_adapter_for_another_base_model_is_refused(tmp_path):
    t5 = attach_lora(load_base_model(ModelConfig(name_or_path="preset:tiny-t5")), LoraConfig())
    save_adapter(t5.model, t5.tokenizer, tmp_path / "t5-adapter", t5.source)
    llama = load_base_model(ModelConfig(name_or_path="preset:tiny-llama"))
    with pytest.raises(RlhfkitError, match="different base model.*model_type: adapter 't5' vs model 'llama'"):
        attach_lora(llama, LoraConfig(adapter_path=str(tmp_path / "t5-adapter")))
    # without our metadata, peft's own failure is still turned into a clear message
    (tmp_path / "t5-adapter" / "rlhfkit_adapter.json").unlink()
    with pytest.raises(RlhfkitError, match="does not fit this base model"):
        attach_lora(load_base_model(ModelConfig(name_or_path="preset:tiny-llama")),
                    LoraConfig(adapter_path=str(tmp_path / "t5-adapter")))  # fmt: skip
    with pytest.raises(RlhfkitError, match="not a LoRA adapter folder"):
        attach_lora(llama, LoraConfig(adapter_path=str(tmp_path)))
