"""rlhfkit: the complete RLHF loop for encoder-decoder and decoder-only models.

The command line is a thin layer over these names::

    from rlhfkit import load_config, run_sft
    cfg = load_config(["configs/sft-tiny-t5.yaml"], ["sft.max_steps=100"])
    result = run_sft(cfg)
    print(result.final["rougeL"], result.adapter_dir)

Imports are lazy, so ``import rlhfkit`` does not load torch or transformers until a name is used.
"""

from __future__ import annotations

import os
from importlib import import_module
from typing import Any

# OpenMP threads that spin while they wait for work keep the CPU from every other busy process: on 2 shared
# cores with one other busy process, LoRA SFT of tiny-t5 ran ~9x slower per step with libgomp's default spin
# than alone. Spinning at most 2000 rounds before sleeping keeps that cost near 1.5x and costs ~5% alone
# (OMP_WAIT_POLICY=PASSIVE: ~1.2x beside, ~20% alone); results are bit-identical (bench/cpu_contention.py).
# libgomp (torch's Linux wheels) reads it once, when torch is first imported, so it is set here, before any
# torch import, and only when the user set neither variable. docs/scaling.md, "Sharing the CPU".
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "2000"

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
