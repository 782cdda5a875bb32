"""`rlhfkit ppo`: PPO with a KL penalty against a frozen reference, from set-up to the saved adapter.

The step itself is :func:`rlhfkit.algos.ppo.step.ppo_step`; this module builds what it works on (policy with a
value head, optimiser, scheduler, KL controller, reward, prompt stream), runs the steps, and writes metrics,
samples, checkpoints (every ``ppo.save_every`` steps) and the final adapter. Randomness is derived from
(seed, step, stage), so ``--resume`` continues a run exactly as if it had never stopped; checkpoints add the
trainable tensors, optimiser, scheduler, KL controller and RNG states (docs/ppo.md, "Checkpoints").
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from rlhfkit.algos.ppo.step import Trainer, ppo_step
from rlhfkit.config import Config, PPOConfig, save_config
from rlhfkit.core.kl_control import AdaptiveKLController, FixedKLController, KLController
from rlhfkit.data.loading import load_dialogues
from rlhfkit.engine.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from rlhfkit.engine.distributed import check_split, gather_objects, is_sharded, set_deepspeed_micro_batch
from rlhfkit.engine.metrics import MetricsWriter, read_metrics
from rlhfkit.engine.progress import StepProgress
from rlhfkit.engine.resume import check_resumable
from rlhfkit.engine.runtime import make_accelerator, quiet_libraries
from rlhfkit.errors import RlhfkitError
from rlhfkit.io import write_json_atomic, write_text_atomic
from rlhfkit.models.lora import save_adapter
from rlhfkit.models.policy import Policy, build_policy
from rlhfkit.models.value_head import attach_value_head
from rlhfkit.rewards.base import Reward
from rlhfkit.rollout.experience import PromptStream
from rlhfkit.rollout.generation import check_prompts

if TYPE_CHECKING:
    from accelerate import Accelerator

# Settings that may change between a run and its resumption without changing what was computed so far.
RESUMABLE_CHANGES = {"ppo.steps", "ppo.save_every", "ppo.keep_checkpoints", "ppo.sample_every", "ppo.tensorboard"}


@dataclass
class PPOResult:
    output_dir: Path
    adapter_dir: Path
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    """The statistics of every step run in this call."""
    skipped_steps: int = 0


# --------------------------------------------------------------------------------------------------
# The run


def _make_controller(ppo: PPOConfig) -> FixedKLController | AdaptiveKLController:
    if ppo.adaptive_kl:
        return AdaptiveKLController(ppo.kl_coef, ppo.kl_target, ppo.kl_horizon)
    return FixedKLController(ppo.kl_coef)


def _build_reward(cfg: Config) -> Reward:
    from rlhfkit.rewards.factory import build_reward

    if not cfg.reward.rewards:
        raise RlhfkitError(
            "PPO needs a reward: add a reward.rewards list to the config, e.g. "
            "reward: {rewards: [{kind: reward_model, path: runs/rm}]} or {kind: classifier, path: ..., label: nothate}, "
            "or pass a reward object to run_ppo() from Python."
        )
    return build_reward(cfg.reward)


def run_ppo(cfg: Config, reward: Reward | None = None, resume: bool = False, progress: bool = True,
            on_step: Callable[[dict[str, Any]], None] | None = None) -> PPOResult:  # fmt: skip
    """Run PPO as configured; ``reward`` overrides the configured one (any callable of the reward protocol)."""
    quiet_libraries()
    ppo = cfg.ppo
    out = Path(cfg.run.output_dir)
    if resume:
        check_resumable(cfg, out, RESUMABLE_CHANGES, "PPO")
    elif list_checkpoints(out):
        raise RlhfkitError(f"{str(out)!r} already holds a PPO run with checkpoints; pass --resume to continue it, "
                           "or choose another output folder.")  # fmt: skip
    accelerator = make_accelerator(cfg.run, ppo.mini_batch_size // ppo.micro_batch_size,
                                   log_with="tensorboard" if ppo.tensorboard else None, project_dir=out)  # fmt: skip
    main, P = accelerator.is_main_process, accelerator.num_processes
    check_split(P, {"ppo.batch_size": ppo.batch_size, "ppo.mini_batch_size": ppo.mini_batch_size,
                    "ppo.micro_batch_size": ppo.micro_batch_size},
                hint=" (ppo.batch_size, mini_batch_size and micro_batch_size are all global.)")  # fmt: skip
    if is_sharded(accelerator) and (ppo.save_every or resume):
        raise RlhfkitError(
            "PPO checkpoints and --resume are not supported under DeepSpeed or FSDP yet (their optimiser states are "
            "split across processes); set ppo.save_every=0 and run without --resume, or use data parallelism "
            "(configs/accelerate/multi-gpu.yaml), which LoRA-sized trainable weights fit easily."
        )
    # the first process of each machine loads first: it builds a missing preset into the shared cache, which
    # several processes building at once would race on
    with accelerator.local_main_process_first():
        reward = reward if reward is not None else _build_reward(cfg)
        data = load_dialogues(cfg.data)
        policy = attach_value_head(build_policy(cfg.model, cfg.lora, reference=ppo.reference,
                                                sft_adapter=ppo.sft_adapter))  # fmt: skip
    prompts = list(data.train["prompt"])
    check_prompts(policy.tokenizer, prompts, cfg.generation.max_prompt_tokens)
    policy.to(accelerator.device)
    if ppo.bf16_frozen_weights and accelerator.mixed_precision == "bf16" and P == 1 and not is_sharded(accelerator):
        # one process only: DDP broadcasts every parameter at start-up, and gloo's bf16 support is not tested here
        policy.store_frozen_weights_in(torch.bfloat16, embeddings=ppo.bf16_frozen_embeddings)
    set_deepspeed_micro_batch(accelerator, ppo.micro_batch_size // P)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=ppo.learning_rate, weight_decay=ppo.weight_decay)
    updates_per_step = ppo.ppo_epochs * (ppo.batch_size // ppo.mini_batch_size)
    from transformers import get_scheduler

    scheduler = get_scheduler(ppo.lr_schedule, optimizer, num_warmup_steps=ppo.warmup_steps,
                              num_training_steps=ppo.steps * updates_per_step)  # fmt: skip
    model, optimizer = accelerator.prepare(policy, optimizer)
    controller = _make_controller(ppo)
    trainer = Trainer(policy, model, optimizer, scheduler, accelerator, controller, reward,
                      PromptStream(prompts, ppo.batch_size, cfg.run.seed))  # fmt: skip
    start_step, skipped = 0, 0
    metrics = MetricsWriter(out / "metrics.jsonl", enabled=main)
    if resume:
        start_step, skipped = _restore(out, policy, optimizer, scheduler, controller, metrics, reward, accelerator)
    elif main:
        save_config(cfg, out)
        metrics.path.unlink(missing_ok=True)
    if ppo.tensorboard and main:
        accelerator.init_trackers("tensorboard")
    history: list[dict[str, Any]] = []
    bar = StepProgress("ppo", ppo.steps, enabled=progress and main)
    bar_started = start_step
    with bar:
        bar.advance(bar_started)
        for step in range(start_step, ppo.steps):
            stats = ppo_step(trainer, ppo, cfg.generation, cfg.run.seed, step)
            if stats.get("skipped"):
                skipped += 1
                why = (f"{stats['score/nonfinite']:.0f} non-finite reward score(s) (NaN, inf or beyond float32's range)"
                       if stats["score/nonfinite"] else "the update made the weights or gradient norm NaN or inf, "
                       "so it was rolled back")  # fmt: skip
                warnings.warn(f"PPO step {step + 1}: {why}; the step was skipped ({skipped} so far).", stacklevel=1)
            stats["skipped_steps"] = skipped
            history.append(stats)
            if main and ((step + 1) % ppo.log_every == 0 or step + 1 == ppo.steps):
                metrics.write({k: v for k, v in stats.items() if k != "samples"})
                if ppo.tensorboard:
                    accelerator.log({k: v for k, v in stats.items() if isinstance(v, (int, float))}, step=step + 1)
            if main and ppo.sample_every and (step + 1) % ppo.sample_every == 0 and "samples" in stats:
                _show_samples(stats["samples"], step + 1, out, progress)
            if on_step:
                on_step(stats)
            bar.advance(score=stats.get("score/mean", float("nan")), kl=stats.get("kl/k1", float("nan")))
            if ppo.save_every and (step + 1) % ppo.save_every == 0 and step + 1 < ppo.steps:
                _save(out, step + 1, policy, optimizer, scheduler, controller, skipped, ppo.keep_checkpoints, reward,
                      accelerator)  # fmt: skip
    if not is_sharded(accelerator):
        _save(out, ppo.steps, policy, optimizer, scheduler, controller, skipped, ppo.keep_checkpoints, reward,
              accelerator)  # fmt: skip
    # a collective call: under ZeRO-3 / FSDP it gathers the sharded weights (every process must make it)
    full_state = accelerator.get_state_dict(model) if is_sharded(accelerator) else None
    if main:
        _save_final(out, policy, ppo.sft_adapter, full_state)
    if ppo.tensorboard and main:
        accelerator.end_training()
    accelerator.wait_for_everyone()
    return PPOResult(out, out / "adapter", ppo.steps, history, skipped)


# --------------------------------------------------------------------------------------------------
# Saving and restoring


def _save(out: Path, step: int, policy: Policy, optimizer: Optimizer, scheduler: LRScheduler,
          controller: KLController, skipped: int, keep: int, reward: Reward,
          accelerator: Accelerator) -> None:  # fmt: skip
    """Checkpoint ``step``. Every process calls it (it gathers each one's RNG and reward state); the main one writes."""
    from rlhfkit.rewards.transforms import running_normalizers

    # a reward normalised by running statistics carries state too; without it a resume would score differently.
    # Each process keeps its own (it sees its share of the scores), so each process's state is saved.
    own = {"rng": rng_state(), "reward_normalizers": [n.state_dict() for n in running_normalizers(reward)]}
    per_process = gather_objects(accelerator, [own])
    if accelerator.is_main_process:
        state = {"skipped_steps": skipped, "controller": controller.state_dict(), "processes": len(per_process),
                 "reward_normalizers": own["reward_normalizers"]}  # fmt: skip
        save_checkpoint(out, step, policy.trainable_state(), optimizer, scheduler, state, keep, per_process)
    accelerator.wait_for_everyone()


def _restore(out: Path, policy: Policy, optimizer: Optimizer, scheduler: LRScheduler,
             controller: KLController, metrics: MetricsWriter, reward: Reward,
             accelerator: Accelerator) -> tuple[int, int]:  # fmt: skip
    from rlhfkit.rewards.transforms import running_normalizers

    found = list_checkpoints(out)
    if not found:
        raise RlhfkitError(f"cannot resume: {str(out)!r} has no finished checkpoint yet; start the run again "
                           "without --resume.")  # fmt: skip
    trainable, training, state = load_checkpoint(found[-1])
    policy.load_trainable_state(trainable)
    optimizer.load_state_dict(training["optimizer"])
    scheduler.load_state_dict(training["scheduler"])
    controller.load_state_dict(state["controller"])
    rank, P = accelerator.process_index, accelerator.num_processes
    # a checkpoint of one process (or one written before multi-process runs) has no per-process list
    per_process = training.get("per_process") or [
        {"rng": training["rng"], "reward_normalizers": state.get("reward_normalizers", [])}
    ]
    if len(per_process) != P:
        warnings.warn(f"the checkpoint was written by {len(per_process)} process(es) and the run resumes with {P}: "
                      "training continues from it, but the steps after it will not repeat the uninterrupted run "
                      "exactly (each process's share of the prompts and random streams change).", stacklevel=2)  # fmt: skip
    own = per_process[rank] if rank < len(per_process) else None
    normalizers, saved = running_normalizers(reward), (own or per_process[0])["reward_normalizers"]
    if len(normalizers) != len(saved):
        raise RlhfkitError(f"cannot resume: the checkpoint holds {len(saved)} running reward normaliser(s), the "
                           f"configured reward has {len(normalizers)}; resume with the run's reward.")  # fmt: skip
    for normalizer, normalizer_state in zip(normalizers, saved):
        normalizer.load_state_dict(normalizer_state)
    if own is not None:
        set_rng_state(own["rng"])
    step = int(state["step"])
    if metrics.enabled and metrics.path.is_file():  # the steps after the checkpoint are run again: drop their lines
        kept = [r for r in read_metrics(metrics.path) if r.get("step", 0) <= step]
        write_text_atomic(metrics.path, "".join(json.dumps(r) + "\n" for r in kept))
    accelerator.wait_for_everyone()  # no process runs ahead while the main one rewrites the metrics
    return step, int(state.get("skipped_steps", 0))


def _save_final(out: Path, policy: Policy, sft_adapter: str | None,
                full_state: dict[str, torch.Tensor] | None = None) -> None:  # fmt: skip
    """The adapter and value head; ``full_state`` is the policy's gathered state dict under ZeRO-3 / FSDP."""
    from safetensors.torch import save_file

    # the RL adapter sits on the SFT adapter merged into the base: record it, so loaders rebuild that stack
    meta = {"trained_by": "rlhfkit ppo", "sft_adapter": str(Path(sft_adapter).resolve()) if sft_adapter else None}
    model_state = value_state = None
    if full_state is not None:
        model_state = {k[len("model.") :]: v for k, v in full_state.items() if k.startswith("model.")}
        value_state = {k[len("value_head.") :]: v for k, v in full_state.items() if k.startswith("value_head.")}
    save_adapter(policy.model, policy.tokenizer, out / "adapter", policy.source, meta, state_dict=model_state)
    value_state = value_state if value_state is not None else policy.value_head.state_dict()
    save_file({k: v.contiguous() for k, v in value_state.items()}, str(out / "value_head.safetensors"))
    write_json_atomic(out / "final.json", {"adapter": str(out / "adapter"), "value_head": str(out / "value_head.safetensors")})


def _show_samples(samples: list[dict[str, Any]], step: int, out: Path, progress: bool) -> None:
    with open(out / "samples.jsonl", "a", encoding="utf-8") as f:
        f.writelines(json.dumps({"step": step, **s}) + "\n" for s in samples)
    if not progress:
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"samples at step {step}", show_lines=True)
    table.add_column("prompt (end)", ratio=2)
    table.add_column("response", ratio=2)
    table.add_column("score", justify="right")
    for s in samples:
        table.add_row("…" + s["prompt"][-120:], s["response"], f"{s['score']:.3f}")
    Console(stderr=True).print(table)

