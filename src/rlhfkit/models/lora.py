"""LoRA adapters through peft: attach a fresh one, load an existing one as trainable, save with metadata.

Defaults follow the course lab for T5 (r=32, alpha=32, dropout 0.05); the adapted modules default to
peft's per-architecture table (T5: q and v; Llama: q_proj and v_proj). Next to every adapter we save a
small ``rlhfkit_adapter.json`` with the base model's shape facts, so an adapter loaded onto a different
base model is refused with a clear message instead of a size-mismatch traceback from inside torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlhfkit.config import LoraConfig
from rlhfkit.errors import RlhfkitError
from rlhfkit.io import atomic_dir
from rlhfkit.models.loading import LoadedModel, model_fingerprint

ADAPTER_META = "rlhfkit_adapter.json"


def attach_lora(loaded: LoadedModel, cfg: LoraConfig, adapter_name: str = "default") -> LoadedModel:
    """Wrap ``loaded.model`` in a peft model with a trainable adapter (fresh, or from cfg.adapter_path)."""
    if cfg.adapter_path:
        model = load_adapter_as_trainable(loaded.model, cfg.adapter_path, adapter_name)
    else:
        model = _fresh_adapter(loaded, cfg, adapter_name)
    return LoadedModel(model, loaded.tokenizer, loaded.is_encoder_decoder, loaded.source)


def _fresh_adapter(loaded: LoadedModel, cfg: LoraConfig, adapter_name: str) -> Any:
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType, get_peft_model

    task = TaskType.SEQ_2_SEQ_LM if loaded.is_encoder_decoder else TaskType.CAUSAL_LM
    peft_config = PeftLoraConfig(
        task_type=task,
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=_targets(cfg.target_modules),
        modules_to_save=list(cfg.modules_to_save) if cfg.modules_to_save else None,
    )
    try:
        return get_peft_model(loaded.model, peft_config, adapter_name=adapter_name)
    except ValueError as e:
        names = sorted({n.rsplit(".", 1)[-1] for n, _ in loaded.model.named_modules() if n})
        raise RlhfkitError(
            f"could not attach a LoRA adapter: {str(e).splitlines()[0]} Set lora.target_modules to module "
            f"names of this model (for example 'all-linear'); its module names include: {', '.join(names[:40])}."
        ) from None


def _targets(names: list[str] | None) -> list[str] | str | None:
    """peft takes the shorthand 'all-linear' only as a bare string, not inside a list."""
    if not names:
        return None
    return "all-linear" if list(names) == ["all-linear"] else list(names)


def check_adapter_matches(base_model: Any, adapter_path: str | Path) -> None:
    """Refuse an adapter whose recorded base model has other shapes than ``base_model``."""
    path = Path(adapter_path).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise RlhfkitError(
            f"{str(path)!r} is not a LoRA adapter folder (no adapter_config.json). Point lora.adapter_path at a "
            "folder written by `rlhfkit sft` or peft's save_pretrained."
        )
    meta_file = path / ADAPTER_META
    if not meta_file.is_file():
        return  # an adapter from elsewhere: peft's own checks below still apply
    recorded = json.loads(meta_file.read_text()).get("base_model", {})
    actual = model_fingerprint(base_model.config)
    diffs = [f"{k}: adapter {recorded[k]!r} vs model {actual[k]!r}" for k in actual if k in recorded and recorded[k] != actual[k]]
    if diffs:
        raise RlhfkitError(
            f"the adapter in {str(path)!r} was trained on a different base model ({'; '.join(diffs)}). "
            f"It was made for {recorded.get('source', 'an unknown model')!r}: set model.name_or_path to that model, "
            "or train a new adapter for this one."
        )


def load_adapter_as_trainable(base_model: Any, adapter_path: str | Path, adapter_name: str = "default") -> Any:
    """Load an adapter folder onto ``base_model`` with its weights trainable."""
    from peft import PeftModel

    check_adapter_matches(base_model, adapter_path)
    try:
        return PeftModel.from_pretrained(base_model, str(adapter_path), adapter_name=adapter_name, is_trainable=True)
    except (RuntimeError, ValueError, KeyError) as e:
        raise RlhfkitError(
            f"the adapter in {str(adapter_path)!r} does not fit this base model ({type(e).__name__}: "
            f"{str(e).strip().splitlines()[0][:300]}). It was probably trained on another model; set "
            "model.name_or_path to the adapter's base model."
        ) from None


def save_adapter(model: Any, tokenizer: Any, out_dir: str | Path, source: str, extra: dict | None = None,
                 state_dict: dict | None = None) -> Path:  # fmt: skip
    """Save adapter weights, tokenizer and the base-model fingerprint into ``out_dir``.

    ``state_dict``: the model's full weights gathered across processes (ZeRO-3 / FSDP), when the model's own
    parameters are only shards; peft picks the adapter's tensors out of it.
    """
    base_config = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    meta = {"base_model": {**model_fingerprint(base_config), "source": source}, **(extra or {})}
    with atomic_dir(out_dir) as staging:
        model.save_pretrained(staging, **({"state_dict": state_dict} if state_dict is not None else {}))
        tokenizer.save_pretrained(staging)
        (staging / ADAPTER_META).write_text(json.dumps(meta, indent=2))
    return Path(out_dir)


def trainable_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
