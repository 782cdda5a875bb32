"""Print a fingerprint of short PPO runs: every logged statistic (times left out) and a SHA-256 of the final
adapter and value head. Two commits whose fingerprints are equal computed the same runs bit for bit.

    .venv/bin/python scripts/ppo_fingerprint.py > before.json   # at one commit
    .venv/bin/python scripts/ppo_fingerprint.py > after.json    # at another
    diff before.json after.json && echo identical

Runs tiny-t5 and tiny-llama with seeds 0 and 1 for 10 steps each (the rule reward `vowel_share`, fp32 and
bf16 autocast), in a temporary folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SETTINGS = [
    "ppo.batch_size=4", "ppo.mini_batch_size=2", "ppo.micro_batch_size=1", "ppo.ppo_epochs=2",
    "ppo.learning_rate=1e-3", "ppo.save_every=5", "ppo.tensorboard=false", "ppo.sample_every=0",
    "generation.max_new_tokens=8", "ppo.min_new_tokens=4", "data.synthetic.size=120",
]  # fmt: skip


def vowel_share(prompts: list[str], responses: list[str]) -> list[float]:
    return [10 * sum(c in "aeiouAEIOU" for c in r) / max(len(r), 1) for r in responses]


def fingerprint(preset: str, seed: int, steps: int, precision: str, root: Path) -> dict:
    try:
        from rlhfkit import run_ppo
    except ImportError:  # commits before the engine/algos split (59b9372) kept it in train/ppo.py
        from rlhfkit.train.ppo import run_ppo
    from rlhfkit.config import load_config, replace
    from rlhfkit.rewards.simple import CallableReward

    out = root / f"{preset}-seed{seed}-{precision}"
    cfg = load_config([], [*SETTINGS, f"model.name_or_path=preset:{preset}", f"run.seed={seed}",
                           f"ppo.steps={steps}", f"run.precision={precision}"])  # fmt: skip
    run_ppo(replace(cfg, **{"run.output_dir": str(out)}), reward=CallableReward(vowel_share), progress=False)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    metrics = [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")} for line in lines]
    files = sorted(p for p in (out / "adapter").rglob("*.safetensors")) + [out / "value_head.safetensors"]
    return {"metrics": metrics,
            "sha256": {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny-t5", "tiny-llama"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rlhfkit-fingerprint-") as tmp:
        os.environ.setdefault("RLHFKIT_HOME", str(Path(tmp) / "home"))
        from rlhfkit.models.presets import ensure_preset

        for preset in args.presets:  # built before any run, so no run depends on whether it built the preset
            ensure_preset(preset)
        result = {f"{p}/seed{s}/{x}": fingerprint(p, s, args.steps, x, Path(tmp))
                  for p in args.presets for s in args.seeds for x in args.precisions}  # fmt: skip
    json.dump(result, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
