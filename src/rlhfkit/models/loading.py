"""Loading a base model and its tokenizer by hub id, local folder or preset name.

The code path is ordinary ``from_pretrained``: a preset is first built into a folder (see
:mod:`rlhfkit.models.presets`), then loaded exactly like ``google/flan-t5-base`` after download.
Encoder-decoder vs decoder-only is read from the model's config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlhfkit.config import ModelConfig
from rlhfkit.errors import RlhfkitError
from rlhfkit.models.presets import ensure_preset, is_preset


@dataclass
class LoadedModel:
    """A base model (or a peft model wrapping it) with its tokenizer."""

    model: Any
    """transformers PreTrainedModel, or peft PeftModel once an adapter is attached."""
    tokenizer: Any
    is_encoder_decoder: bool
    source: str
    """The folder or hub id the weights came from."""


def resolve_source(name_or_path: str) -> str:
    """Turn preset:NAME into its folder; check that a path-like source exists; pass hub ids through."""
    if is_preset(name_or_path):
        return str(ensure_preset(name_or_path))
    path = Path(name_or_path).expanduser()
    looks_like_path = name_or_path.startswith((".", "/", "~")) or path.exists() or name_or_path.count("/") > 1
    if looks_like_path:
        if not path.is_dir():
            raise RlhfkitError(
                f"model folder {name_or_path!r} does not exist. Give model.name_or_path as a folder written by "
                "save_pretrained, a hub id such as google/flan-t5-base, or a preset such as preset:tiny-t5 "
                "(`rlhfkit presets` lists them)."
            )
        if not (path / "config.json").is_file():
            raise RlhfkitError(
                f"folder {name_or_path!r} has no config.json, so it is not a transformers model folder. "
                "If it holds a LoRA adapter, set lora.adapter_path to it and model.name_or_path to its base model."
            )
        return str(path)
    return name_or_path


def _from_pretrained(loader: Any, source: str, what: str, **kwargs: Any) -> Any:
    try:
        return loader.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as e:
        hint = (
            "This looks like a hub id: check the spelling and your network (with HF_HUB_OFFLINE=1 nothing is "
            "downloaded), or point model.name_or_path at a local folder."
            if not Path(source).exists()
            else "The folder seems incomplete or corrupt; rebuild or re-download it."
        )
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RlhfkitError(f"could not load the {what} from {source!r}: {first_line}. {hint}") from None


def load_base_model(cfg: ModelConfig, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load the model named by ``cfg`` and its tokenizer, and check the tokenizer is usable."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    source = resolve_source(cfg.name_or_path)
    common = dict(revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    model_config = _from_pretrained(AutoConfig, source, "model config", **common)
    is_encoder_decoder = bool(getattr(model_config, "is_encoder_decoder", False))
    loader = AutoModelForSeq2SeqLM if is_encoder_decoder else AutoModelForCausalLM
    tokenizer = _from_pretrained(AutoTokenizer, source, "tokenizer", **common)
    model = _from_pretrained(loader, source, "model", dtype=dtype, **common)
    prepare_tokenizer(tokenizer, is_encoder_decoder, cfg.pad_token)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    _record_actual_tying(model)
    if cfg.fused_activations:
        fuse_tanh_gelu(model)
    return LoadedModel(model, tokenizer, is_encoder_decoder, source)


def fuse_tanh_gelu(model: torch.nn.Module) -> int:
    """Swap transformers' Python tanh-GELU for PyTorch's fused kernel of the same function; returns how many.

    FLAN-T5 and GPT-2 use 'gelu_new' (``NewGELUActivation``), written as five tensor operations: each allocates a
    full (tokens × d_ff) tensor, and in a training pass autograd keeps four of them per layer for the backward
    pass. ``F.gelu(x, approximate="tanh")`` (transformers' own ``GELUTanh``, 'gelu_pytorch_tanh') computes the
    same formula in one kernel and keeps only its input: on the FLAN-T5-small shape a PPO update stores ~30 MiB
    less (``bench/ppo_step.py``). The results agree to ~2e-7 in fp32; in bf16 the fused kernel is the more
    accurate one, because it does not round four intermediate results to bf16.
    """
    from transformers.activations import GELUTanh, NewGELUActivation

    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is NewGELUActivation:  # exact type: a subclass may compute something else
                setattr(parent, name, GELUTanh())
                count += 1
    return count


def _record_actual_tying(model: Any) -> None:
    """Make ``config.tie_word_embeddings`` say what the weights are.

    transformers 5 sets it to True for every T5 even when the checkpoint's output layer is separate (as in
    FLAN-T5) and loads the two apart; peft reads the flag, so it must be truthful.
    """
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    if out is not None and inp is not None and out.weight.data_ptr() != inp.weight.data_ptr():
        model.config.tie_word_embeddings = False


def prepare_tokenizer(tokenizer: Any, is_encoder_decoder: bool, pad_token: str | None = None) -> None:
    """Pick the pad token and padding side that rollouts and training rely on.

    Decoder-only prompts are left-padded, so that every response starts at the same position; the pad
    token must differ from EOS, otherwise masking "everything after the first EOS" would also mask
    real padding ambiguity away (docs/ppo.md, detail 5).
    """
    if pad_token is not None:
        if pad_token not in tokenizer.get_vocab():
            raise RlhfkitError(
                f"model.pad_token {pad_token!r} is not in the tokenizer's vocabulary; choose an existing token "
                "that is not the EOS token (for Llama-style tokenizers, '<unk>' is a common choice)."
            )
        tokenizer.pad_token = pad_token
    if tokenizer.pad_token is None:
        raise RlhfkitError(
            "the tokenizer has no pad token. Set model.pad_token to an existing token that is not the EOS token "
            "(for example model.pad_token='<unk>'); rlhfkit does not silently reuse EOS for padding."
        )
    if tokenizer.eos_token is None:
        raise RlhfkitError("the tokenizer has no EOS token, so responses cannot end; use a tokenizer that has one.")
    if not is_encoder_decoder and tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise RlhfkitError(
            f"the pad token {tokenizer.pad_token!r} is also the EOS token. Set model.pad_token to a different "
            "existing token (for example '<unk>'), so padding and the end of a response stay distinguishable."
        )
    tokenizer.padding_side = "right" if is_encoder_decoder else "left"


def model_fingerprint(model_config: Any) -> dict[str, Any]:
    """The shape facts an adapter depends on; stored next to adapters to catch a wrong base model."""
    return {
        "model_type": getattr(model_config, "model_type", None),
        "vocab_size": getattr(model_config, "vocab_size", None),
        "hidden_size": getattr(model_config, "d_model", None) or getattr(model_config, "hidden_size", None),
        "num_layers": getattr(model_config, "num_layers", None) or getattr(model_config, "num_hidden_layers", None),
        "is_encoder_decoder": bool(getattr(model_config, "is_encoder_decoder", False)),
    }


def pick_device(device: str) -> torch.device:
    """'auto' → CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RlhfkitError(f"run.device={device!r} but no CUDA device is available; use run.device=cpu or auto.")
    return torch.device(device)
