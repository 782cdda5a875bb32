"""`rlhfkit feedback generate`: sample candidate responses from policies and add them as items to label.

Either K ≥ 2 samples per prompt from one policy, or one sample each from several policies (e.g. SFT vs
PPO, to let people judge whether RLHF helped). The candidates go into the store through
:func:`rlhfkit.feedback.items.add_candidates`, like imported data.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rlhfkit.config import Config, GenerationConfig, ModelConfig
from rlhfkit.errors import RlhfkitError

if TYPE_CHECKING:
    from rlhfkit.feedback.items import AddResult


@dataclass
class Candidates:
    prompts: list[str]
    candidates: list[list[str]]
    """Per prompt, the sampled responses."""
    sources: list[list[str]]
    """Per prompt, the policy each response came from."""


def sample_candidates(model_cfg: ModelConfig, gen: GenerationConfig, policies: Sequence[str], prompts: Sequence[str],
                      k: int = 2, seed: int = 0, progress: bool = False) -> Candidates:  # fmt: skip
    """K samples per prompt from one policy, or one sample per prompt from each of several policies.

    A policy is an adapter folder (from `rlhfkit sft` or `rlhfkit ppo`) or 'base' for the bare model.
    ``progress`` shows a bar over the responses to sample, with an ETA (this takes minutes on a busy CPU).
    """
    from rlhfkit.engine.progress import StepProgress
    from rlhfkit.models.inference import load_policy
    from rlhfkit.rollout.generation import generate

    if not policies:
        raise RlhfkitError("name at least one policy: an adapter folder, or 'base'.")
    if len(policies) == 1 and k < 2:
        raise RlhfkitError(f"with one policy, sample k >= 2 candidates per prompt to compare (got k={k}).")
    if not prompts:
        raise RlhfkitError("there are no prompts to sample candidates for.")
    runs: list[tuple[str, int]] = [(policies[0], j) for j in range(k)] if len(policies) == 1 else [(p, 0) for p in policies]
    candidates: list[list[str]] = [[] for _ in prompts]
    sources: list[list[str]] = [[] for _ in prompts]
    loaded_name, loaded = None, None
    with StepProgress("sampling pairs", len(runs) * len(prompts), enabled=progress) as bar:
        for name, j in runs:
            if name != loaded_name:
                loaded, loaded_name = load_policy(model_cfg, name), name
            # the same seed for every policy: paired sampling, so differences come from the policies
            out = generate(loaded.model, loaded.tokenizer, list(prompts), gen, loaded.is_encoder_decoder,
                           seed=seed + j, on_batch=bar.advance)  # fmt: skip
            for i, text in enumerate(out.texts):
                candidates[i].append(storable(text))
                sources[i].append(name)
    return Candidates(list(prompts), candidates, sources)


def storable(text: str) -> str:
    """``text`` with NUL characters replaced by U+FFFD, so that any database can store it.

    A byte-level tokenizer can decode any byte, NUL included, and an undertrained policy does emit
    such tokens; PostgreSQL refuses NUL in text, so the store refuses it everywhere (see ``store``).
    """
    return text.replace("\x00", "\ufffd")


def add_generate_command(commands: argparse._SubParsersAction) -> None:
    """Register `feedback generate` in the feedback command group."""
    from rlhfkit.feedback.cli import add_store_argument

    p = commands.add_parser(
        "generate",
        help="sample candidate responses from one or two policies and add them as items",
        description="Sample K >= 2 responses per prompt from one policy (--policy once, -k K), or one response "
        "per prompt from each policy (--policy twice, e.g. the SFT and the PPO adapter), and add comparison items "
        "to the store. Prompts come from data.source (see --config/--set), as in `rlhfkit sft`.",
    )
    add_store_argument(p)
    p.add_argument("--policy", action="append", default=[], required=True, metavar="ADAPTER|base",
                   help="adapter folder (from rlhfkit sft/ppo) or 'base'; repeat for a second policy")  # fmt: skip
    p.add_argument("-k", type=int, default=2, help="samples per prompt with one policy (default: 2)")
    p.add_argument("-n", "--prompts", type=int, default=100, help="number of prompts (default: 100)")
    p.add_argument("--split", choices=("train", "test"), default="train", help="which split's prompts (default: train)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--config", "-c", action="append", default=[], metavar="FILE", help="YAML config (model, data, generation)")
    p.add_argument("--set", "-s", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="override a setting, e.g. --set model.name_or_path=preset:tiny-t5")  # fmt: skip
    p.set_defaults(func=_cmd_generate)


def generate_into_store(store_target: str, cfg: Config, policies: Sequence[str], n_prompts: int, k: int = 2,
                        split: str = "train", seed: int = 0, progress: bool = True) -> AddResult:  # fmt: skip
    """Sample candidates for ``n_prompts`` prompts of ``split`` and add them to the store (with a progress bar
    unless ``progress`` is False)."""
    from rlhfkit.data.loading import load_dialogues
    from rlhfkit.engine.runtime import quiet_libraries
    from rlhfkit.feedback.cli import feedback_store

    quiet_libraries()
    if n_prompts <= 0:
        raise RlhfkitError("the number of prompts must be positive.")
    store = feedback_store().open(store_target)  # says which extra to install when SQLAlchemy is missing
    from rlhfkit.feedback.items import add_candidates
    data = load_dialogues(cfg.data)
    part = data.train if split == "train" else data.test
    rows = part.select(range(min(n_prompts, len(part))))
    sampled = sample_candidates(cfg.model, cfg.generation, policies, list(rows["prompt"]), k=k, seed=seed,
                                progress=progress)  # fmt: skip
    try:
        result = add_candidates(store, sampled.prompts, sampled.candidates, sampled.sources,
                                references=list(rows["summary"]), seed=seed)  # fmt: skip
    finally:
        store.close()
    return result


def _cmd_generate(args: argparse.Namespace) -> int:
    from rlhfkit.config import load_config
    from rlhfkit.feedback.cli import store_target

    cfg = load_config(args.config, args.overrides)
    result = generate_into_store(store_target(args), cfg, args.policy, args.prompts, args.k, args.split, args.seed,
                                 progress=not args.no_progress)  # fmt: skip
    print(f"added {len(result.item_ids)} item(s) to {args.store}; skipped {result.duplicates} already present and "
          f"{result.identical_skipped} pair(s) with identical candidates")  # fmt: skip
    return 0
