"""Offline model presets: small models built from a config, saved, then loaded like any checkpoint.

Our machines have no model hub. A preset is therefore *built*: a tokenizer is trained on the fly with
the `tokenizers` library (on the built-in synthetic corpus), a model is created from a config with
random weights, and both are written with ``save_pretrained`` into a folder. From then on the preset is
loaded through ``from_pretrained(folder)`` — exactly the code path a downloaded hub checkpoint takes.

Presets:

* ``tiny-t5``, ``tiny-llama`` — a few hundred thousand parameters, fast enough for tests and the demo.
* ``flan-t5-small-shape``, ``flan-t5-base-shape`` — random weights with the real FLAN-T5 shapes
  (vocabulary 32128, untied output layer, gated-GELU), for benchmarks that must cost what the real
  models cost. Their tokenizer is the small trained one; ids beyond it decode to nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlhfkit.errors import RlhfkitError

PRESET_PREFIX = "preset:"
# Bump when a preset's recipe changes, so stale cached folders are rebuilt rather than reused.
PRESET_FORMAT_VERSION = 3

SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>", "<s>")  # ids 0, 1, 2, 3


@dataclass(frozen=True)
class PresetSpec:
    name: str
    description: str
    architecture: str
    """'t5' (encoder-decoder) or 'llama' (decoder-only)."""
    model_config: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the transformers config class."""
    tokenizer_vocab_size: int = 2048
    """Vocabulary size the BPE tokenizer is trained to."""
    model_vocab_size: int | None = None
    """Embedding rows of the model; None = the tokenizer's size."""
    max_length: int = 512
    """Tokenizer model_max_length."""


PRESETS: dict[str, PresetSpec] = {
    spec.name: spec
    for spec in (
        PresetSpec(
            "tiny-t5",
            "T5 encoder-decoder, d_model 128, 2+2 layers (tests, demo)",
            "t5",
            # no dropout inside the tiny models: on a CPU the dropout masks cost half the forward pass;
            # the LoRA branch keeps its own dropout, which rollouts must (and do) switch off
            dict(d_model=128, d_kv=32, d_ff=384, num_layers=2, num_decoder_layers=2, num_heads=4,
                 relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.0),
        ),
        PresetSpec(
            "tiny-llama",
            "Llama decoder-only, hidden 128, 2 layers (tests, demo)",
            "llama",
            dict(hidden_size=128, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=1024),
            max_length=1024,
        ),
        PresetSpec(
            "flan-t5-small-shape",
            "random weights, FLAN-T5-small shapes (77M parameters; benchmarks)",
            "t5",
            dict(d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_decoder_layers=8, num_heads=6),
            model_vocab_size=32128,
        ),
        PresetSpec(
            "flan-t5-base-shape",
            "random weights, FLAN-T5-base shapes (248M parameters; benchmarks)",
            "t5",
            dict(d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_decoder_layers=12, num_heads=12),
            model_vocab_size=32128,
        ),
    )
}  # fmt: skip


def preset_names() -> list[str]:
    return list(PRESETS)


def is_preset(name_or_path: str) -> bool:
    return name_or_path.startswith(PRESET_PREFIX)


def get_spec(name: str) -> PresetSpec:
    name = name.removeprefix(PRESET_PREFIX)
    if name not in PRESETS:
        raise RlhfkitError(
            f"unknown preset {name!r}. Available presets: {', '.join(PRESETS)}. "
            f"Use model.name_or_path=preset:NAME, a local folder, or a hub id."
        )
    return PRESETS[name]


def presets_home() -> Path:
    """Where built presets are cached: $RLHFKIT_HOME/presets (default ~/.cache/rlhfkit/presets)."""
    root = os.environ.get("RLHFKIT_HOME") or Path.home() / ".cache" / "rlhfkit"
    return Path(root).expanduser() / "presets"


def preset_folder(name: str, root: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Where preset ``name`` is (or will be) cached; the folder may not exist yet."""
    spec = get_spec(name)
    root = Path(root) if root is not None else presets_home()
    return root / f"{spec.name}-v{PRESET_FORMAT_VERSION}-seed{seed}"


def is_built(name: str, root: str | os.PathLike | None = None, seed: int = 0) -> bool:
    """True when preset ``name`` is in the cache, so that loading it costs no build."""
    # the marker file is written last, inside the staging folder renamed into place: a half build has none
    return (preset_folder(name, root, seed) / "rlhfkit_preset.json").is_file()


def ensure_preset(name: str, root: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Return the folder of preset ``name``, building it first if it is not cached yet."""
    target = preset_folder(name, root, seed)
    if is_built(name, root, seed):
        return target
    return build_preset(get_spec(name).name, target, seed=seed)


def build_preset(name: str, out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Build preset ``name`` into ``out_dir`` (atomically: built aside, then renamed into place)."""
    spec = get_spec(name)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        tokenizer = train_tokenizer(spec)
        with torch.random.fork_rng():  # seeded for the preset's weights, without resetting the caller's stream
            model = _build_model(spec, tokenizer, seed)
        from rlhfkit.engine.runtime import library_bars_off

        with library_bars_off():  # transformers' "Writing model shards" bar would leak into non-TTY logs
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
        meta = {"preset": spec.name, "format_version": PRESET_FORMAT_VERSION, "seed": seed,
                "description": spec.description, "parameters": sum(p.numel() for p in model.parameters())}
        (staging / "rlhfkit_preset.json").write_text(json.dumps(meta, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        try:
            os.replace(staging, out_dir)
        except OSError:
            if not (out_dir / "rlhfkit_preset.json").is_file():  # not a concurrent builder's finished copy
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _tokenizer_training_text() -> list[str]:
    """Text the preset tokenizers are trained on: the synthetic corpus, prompts and the lexicon."""
    from rlhfkit.config import DEFAULT_TEMPLATE
    from rlhfkit.data.lexicon import default_lexicon
    from rlhfkit.data.synthetic import generate_corpus

    texts = [DEFAULT_TEMPLATE.replace("{dialogue}", "")] * 50
    for example in generate_corpus(size=2000, toxic_fraction=0.5, seed=1234):
        texts += [example.dialogue, example.summary]
    texts += [" ".join(default_lexicon())] * 20
    return texts


def train_tokenizer(spec: PresetSpec):
    """Train a byte-level BPE tokenizer and wrap it as a transformers fast tokenizer.

    Byte-level BPE never produces an unknown token, so real user text still tokenizes. T5-style models
    get ``</s>`` appended to every input; Llama-style models get ``<s>`` prepended and no EOS (a prompt
    must not end the sequence). The pad token is never the EOS token.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.tokenizer_vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_tokenizer_training_text(), trainer)
    eos_id, bos_id = tok.token_to_id("</s>"), tok.token_to_id("<s>")
    if spec.architecture == "t5":
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos_id)]
        )
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        bos_token="<s>",
        model_max_length=spec.max_length,
        padding_side="right" if spec.architecture == "t5" else "left",
    )


def _build_model(spec: PresetSpec, tokenizer, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    vocab = spec.model_vocab_size or len(tokenizer)
    ids = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    if spec.architecture == "t5":
        config = T5Config(
            vocab_size=vocab, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
            decoder_start_token_id=tokenizer.pad_token_id, **ids, **spec.model_config,
        )  # fmt: skip
        model = T5ForConditionalGeneration(config)
        # FLAN-T5 has an output layer separate from the input embedding. transformers 5 ties the two when
        # it builds a T5 (its config forces tie_word_embeddings=True), so untie them here; from_pretrained
        # keeps them apart afterwards because the saved tensors differ, as it does for real checkpoints.
        model.lm_head.weight = torch.nn.Parameter(torch.empty_like(model.lm_head.weight))
        getattr(model, "all_tied_weights_keys", {}).pop("lm_head.weight", None)
        # T5 initialises an untied output layer with std 1.0 (factor * 1.0). Its input is RMS-normalised
        # hidden states of scale ~1 per dimension, so logits get std ~sqrt(d_model) (11 for d_model 128,
        # 28 for 768): sampling is then almost greedy, and a random preset looks deterministic. With std
        # d_model**-0.5 the logits start at std ~1, like a model whose sampling temperature means something.
        torch.nn.init.normal_(model.lm_head.weight, mean=0.0, std=config.d_model**-0.5)
    else:
        config = LlamaConfig(
            vocab_size=vocab, tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
            rms_norm_eps=1e-6, **ids, **spec.model_config,
        )  # fmt: skip
        model = LlamaForCausalLM(config)
        # Llama's default init (std 0.02) gives logits of std ~0.2, nearly uniform: also fine to sample.
    _check_logit_scale(model, spec)
    return model


def _check_logit_scale(model, spec: PresetSpec) -> None:
    """Guard the init fix above: initial logits must have a moderate spread (not near-greedy)."""
    model.eval()
    with torch.no_grad():
        ids = torch.arange(4, 24).unsqueeze(0)
        if spec.architecture == "t5":
            logits = model(input_ids=ids, decoder_input_ids=ids[:, :4]).logits
        else:
            logits = model(input_ids=ids).logits
    std = logits.float().std().item()
    if not 0.01 < std < 3.0:  # pragma: no cover - a recipe bug, not a user error
        raise AssertionError(f"preset {spec.name}: initial logit std {std:.2f} is outside (0.01, 3)")
    model.train()
