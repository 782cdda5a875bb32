"""rlhfkit: the complete RLHF loop for encoder-decoder and decoder-only models.

The command line is a thin layer over these names::

    from rlhfkit import load_config, run_sft
    cfg = load_config(["configs/sft-tiny-t5.yaml"], ["sft.max_steps=100"])
    result = run_sft(cfg)
    print(result.final["rougeL"], result.adapter_dir)

Imports are lazy, so ``import rlhfkit`` does not load torch or transformers until a name is used.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "rlhfkit.config",
    "load_config": "rlhfkit.config",
    "save_config": "rlhfkit.config",
    "RlhfkitError": "rlhfkit.errors",
    "ConfigError": "rlhfkit.errors",
    "generate_corpus": "rlhfkit.data.synthetic",
    "LexiconJudge": "rlhfkit.data.lexicon",
    "load_dialogues": "rlhfkit.data.loading",
    "render_prompt": "rlhfkit.data.loading",
    "ensure_preset": "rlhfkit.models.presets",
    "build_preset": "rlhfkit.models.presets",
    "load_base_model": "rlhfkit.models.loading",
    "attach_lora": "rlhfkit.models.lora",
    "generate": "rlhfkit.rollout.generation",
    "run_sft": "rlhfkit.algos.sft",
    "run_ppo": "rlhfkit.algos.ppo.run",
    "run_demo": "rlhfkit.demo",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rlhfkit' has no attribute {name!r}")
