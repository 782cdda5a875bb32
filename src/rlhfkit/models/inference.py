"""Loading a trained policy for sampling and evaluation: base model + adapter, including adapter chains.

A PPO adapter is trained on top of the SFT adapter merged into the base weights, so it records that SFT
adapter in its ``rlhfkit_adapter.json``; loading the PPO adapter re-creates the same stack
(base → merge SFT → PPO adapter). Adapters are loaded frozen, and the model is put in eval mode.
"""

from __future__ import annotations

import json
from pathlib import Path

from rlhfkit.config import ModelConfig
from rlhfkit.errors import RlhfkitError
from rlhfkit.models.loading import LoadedModel, load_base_model
from rlhfkit.models.lora import ADAPTER_META, check_adapter_matches

BASE_POLICY = "base"  # names the base model without any adapter, wherever a policy is given


def adapter_chain(adapter: str) -> list[str]:
    """The adapters to apply in order, oldest first: [sft, ppo] for a PPO adapter, [sft] for an SFT one."""
    chain: list[str] = []
    current: str | None = adapter
    while current:
        path = Path(current).expanduser()
        if not (path / "adapter_config.json").is_file():
            raise RlhfkitError(f"{current!r} is not an adapter folder (no adapter_config.json); give a folder written "
                               "by `rlhfkit sft` or `rlhfkit ppo` (its adapter/ subfolder), or 'base'.")  # fmt: skip
        if str(path) in chain or len(chain) > 8:
            raise RlhfkitError(f"adapter {current!r} refers back to itself through its sft_adapter chain.")
        chain.insert(0, str(path))
        meta = path / ADAPTER_META
        current = json.loads(meta.read_text()).get("sft_adapter") if meta.is_file() else None
    return chain


def load_policy(model_cfg: ModelConfig, adapter: str | None) -> LoadedModel:
    """The base model with ``adapter`` (and the adapters it was trained on top of) applied, in eval mode."""
    from peft import PeftModel

    loaded = load_base_model(model_cfg)
    model = loaded.model
    if adapter and adapter != BASE_POLICY:
        chain = adapter_chain(adapter)
        for i, path in enumerate(chain):
            check_adapter_matches(model, path)
            try:
                model = PeftModel.from_pretrained(model, path, is_trainable=False)
            except (RuntimeError, ValueError, KeyError) as e:
                raise RlhfkitError(f"the adapter in {path!r} does not fit model {loaded.source!r}: "
                                   f"{str(e).strip().splitlines()[0][:300]}") from None  # fmt: skip
            if i < len(chain) - 1:
                model = model.merge_and_unload()
    model.eval()
    return LoadedModel(model, loaded.tokenizer, loaded.is_encoder_decoder, loaded.source)
