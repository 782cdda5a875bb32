"""Supervised fine-tuning of a LoRA adapter on prompt → summary pairs (`rlhfkit sft`).

The loop is plain PyTorch on top of Accelerate: tokenize → batches → AdamW on the adapter → evaluate
(held-out loss, ROUGE of greedy summaries, lexicon toxicity of sampled summaries) → save the adapter
with its tokenizer, the resolved config and the metrics.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader

from rlhfkit.config import Config, save_config
from rlhfkit.data.lexicon import LexiconJudge
from rlhfkit.data.loading import SplitData, load_dialogues
from rlhfkit.engine.distributed import (
    all_reduce_sum,
    broadcast_objects,
    check_split,
    clip_gradients,
    full_parameters,
    gather_objects,
    is_sharded,
    padded_shard,
)
from rlhfkit.engine.metrics import MetricsWriter
from rlhfkit.engine.progress import StepProgress
from rlhfkit.engine.runtime import make_accelerator, quiet_libraries
from rlhfkit.errors import RlhfkitError
from rlhfkit.eval.rouge import rouge
from rlhfkit.io import write_json_atomic
from rlhfkit.models.forward import position_ids_from_mask
from rlhfkit.models.loading import LoadedModel, load_base_model
from rlhfkit.models.lora import attach_lora, save_adapter, trainable_parameters
from rlhfkit.rollout.generation import generate

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100  # label value that cross-entropy skips (prompt tokens of decoder-only models, padding)


@dataclass
class SFTResult:
    output_dir: Path
    adapter_dir: Path
    steps: int
    train_seconds: float
    """Wall time of the training loop (without the final evaluation)."""
    final: dict[str, float]
    """Final evaluation: eval_loss, rouge1, rouge2, rougeL, toxic_fraction (sampled)."""
    samples: list[dict[str, Any]] = field(default_factory=list)
    """A few held-out prompts with reference, greedy and sampled summaries and their toxicity."""


# --------------------------------------------------------------------------------------------------
# Tokenization and batching


def tokenize_pair(tokenizer: PreTrainedTokenizerBase, prompt: str, summary: str, is_encoder_decoder: bool, max_source: int,
                  max_target: int) -> dict[str, list[int]]:  # fmt: skip
    """Token ids and labels for one example.

    Encoder-decoder: the prompt feeds the encoder and the summary (with EOS) is the decoder's target.
    Decoder-only: prompt and summary are one sequence; the loss covers only the summary and its EOS.
    """
    if is_encoder_decoder:
        source = tokenizer(prompt, truncation=True, max_length=max_source)["input_ids"]
        target = tokenizer(summary, truncation=True, max_length=max_target)["input_ids"]
        return {"input_ids": source, "labels": target}
    source = tokenizer(prompt, truncation=True, max_length=max_source)["input_ids"]
    target = tokenizer(summary, add_special_tokens=False, truncation=True, max_length=max_target - 1)["input_ids"]
    target = target + [tokenizer.eos_token_id]
    return {"input_ids": source + target, "labels": [IGNORE_INDEX] * len(source) + target}


def collate(features: Sequence[dict[str, list[int]]], pad_id: int, left_pad: bool) -> dict[str, torch.Tensor]:
    """Pad a list of tokenized examples into tensors (labels padded with IGNORE_INDEX)."""

    def pad(rows: list[list[int]], value: int) -> torch.Tensor:
        width = max(len(r) for r in rows)
        return torch.tensor([([value] * (width - len(r)) + r) if left_pad else (r + [value] * (width - len(r))) for r in rows])

    ids = [f["input_ids"] for f in features]
    batch = {
        "input_ids": pad(ids, pad_id),
        "attention_mask": pad([[1] * len(r) for r in ids], 0),
        "labels": pad([f["labels"] for f in features], IGNORE_INDEX),
    }
    if left_pad:  # decoder-only: positions count from the first real token (docs/ppo.md, detail 5)
        batch["position_ids"] = position_ids_from_mask(batch["attention_mask"])
    return batch


def _tokenized(data: Dataset, loaded: LoadedModel, cfg: Config) -> list[dict[str, list[int]]]:
    tok, enc_dec, s = loaded.tokenizer, loaded.is_encoder_decoder, cfg.sft
    return [tokenize_pair(tok, p, t, enc_dec, s.max_source_tokens, s.max_target_tokens) for p, t in zip(data["prompt"], data["summary"])]  # noqa: E501


# --------------------------------------------------------------------------------------------------
# The loss


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor, is_encoder_decoder: bool) -> tuple[torch.Tensor, int]:
    """(sum of the cross-entropy over the labelled tokens, number of labelled tokens).

    A sum, not a mean: the caller divides by the token count of the whole batch across all processes, so
    that the all-reduced gradient is that of the global token mean however tokens fall across processes
    (a mean per process, averaged, would weigh a process's tokens by 1 / its own token count).
    Encoder-decoder logits line up with the labels; decoder-only logits at t predict the label at t + 1.
    """
    if not is_encoder_decoder:
        logits, labels = logits[:, :-1], labels[:, 1:]
    flat_logits = logits.reshape(-1, logits.shape[-1]).float()
    flat_labels = labels.reshape(-1)
    total = torch.nn.functional.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return total, int((flat_labels != IGNORE_INDEX).sum())


def _forward(model: torch.nn.Module, batch: dict[str, torch.Tensor], is_encoder_decoder: bool) -> tuple[torch.Tensor, int]:
    # T5 builds its decoder inputs from the labels; a decoder-only model needs none (and computes no loss of its own)
    inputs = batch if is_encoder_decoder else {k: v for k, v in batch.items() if k != "labels"}
    return token_loss_sum(model(**inputs).logits, batch["labels"], is_encoder_decoder)


# --------------------------------------------------------------------------------------------------
# Evaluation (each process takes a share of the held-out examples; the main process reports)


@torch.no_grad()
def evaluation_loss(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], device: torch.device,
                    is_encoder_decoder: bool) -> tuple[float, int]:  # fmt: skip
    """(summed cross-entropy, labelled tokens) over ``batches``, with dropout off."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        loss_sum, n = _forward(model, {k: v.to(device) for k, v in batch.items()}, is_encoder_decoder)
        total += float(loss_sum)
        count += n
    model.train(was_training)
    return total, count


def sample_summaries(loaded: LoadedModel, cfg: Config, prompts: list[str], seed: int) -> tuple[list[str], list[str]]:
    """(greedy, sampled) summaries of ``prompts``."""
    model, tok, enc_dec = loaded.model, loaded.tokenizer, loaded.is_encoder_decoder
    greedy = generate(model, tok, prompts, cfg.generation, enc_dec, do_sample=False).texts
    sampled = generate(model, tok, prompts, cfg.generation, enc_dec, do_sample=True, seed=seed).texts
    return greedy, sampled


def summary_scores(prompts: list[str], references: list[str], greedy: list[str],
                   sampled: list[str]) -> tuple[dict[str, float], list[dict[str, Any]]]:  # fmt: skip
    """ROUGE of greedy summaries against ``references``; lexicon toxicity of sampled summaries."""
    judge = LexiconJudge()
    scores = rouge(greedy, references)
    scores["toxic_fraction"] = judge.toxic_fraction(sampled)
    scores["greedy_toxic_fraction"] = judge.toxic_fraction(greedy)
    samples = [
        {"prompt": p, "reference": r, "greedy": g, "sampled": s, "sampled_toxic": judge.is_toxic(s)}
        for p, r, g, s in zip(prompts, references, greedy, sampled)
    ]
    return scores, samples


# --------------------------------------------------------------------------------------------------
# The loop


def run_sft(cfg: Config, data: SplitData | None = None, progress: bool = True,
            on_log: Callable[[dict[str, Any]], None] | None = None) -> SFTResult:  # fmt: skip
    """Train a LoRA adapter with ``cfg``; returns where it was saved and the final evaluation.

    Under `accelerate launch` the batch size is global: each of N processes takes sft.batch_size /
    (gradient_accumulation_steps × N) examples per micro-batch, so any N trains on the same batches.
    """
    quiet_libraries()
    out = Path(cfg.run.output_dir)
    s = cfg.sft
    accelerator = make_accelerator(cfg.run, s.gradient_accumulation_steps, split_batches=True)
    main, P = accelerator.is_main_process, accelerator.num_processes
    micro = s.batch_size // s.gradient_accumulation_steps  # global micro-batch, split across the processes
    per_step = "" if s.gradient_accumulation_steps == 1 else " / sft.gradient_accumulation_steps"
    check_split(P, {"sft.batch_size" + per_step: micro})
    data = data if data is not None else load_dialogues(cfg.data)
    # the first process of each machine loads first: it builds a missing preset into the shared cache, which
    # several processes building at once would race on
    with accelerator.local_main_process_first():
        loaded = attach_lora(load_base_model(cfg.model), cfg.lora)
    model, tok = loaded.model, loaded.tokenizer
    enc_dec = loaded.is_encoder_decoder
    trainable, total = trainable_parameters(model)

    left_pad = not enc_dec
    train_features = _tokenized(data.train, loaded, cfg)
    if len(train_features) < s.batch_size:
        raise RlhfkitError(f"only {len(train_features)} training examples, fewer than sft.batch_size={s.batch_size}; "
                           "lower sft.batch_size or add data.")  # fmt: skip
    generator = torch.Generator().manual_seed(cfg.run.seed)
    # drop_last: every optimiser step sees exactly sft.batch_size examples, on any number of processes
    loader = DataLoader(train_features, batch_size=micro, shuffle=True, generator=generator,  # type: ignore[arg-type]
                        drop_last=True, collate_fn=lambda f: collate(f, tok.pad_token_id, left_pad))  # fmt: skip
    eval_n = min(s.eval_examples, len(data.test))
    eval_set = data.test.select(range(eval_n))
    eval_features = _tokenized(eval_set, loaded, cfg)
    own, real = padded_shard(eval_n, accelerator.process_index, P)
    # padding rows (there so that every process runs as many forward passes) carry no labelled token
    own_features = [f if i < real else {**f, "labels": [IGNORE_INDEX] * len(f["labels"])}
                    for i, f in enumerate(eval_features[j] for j in own)]  # fmt: skip
    eval_micro = max(micro // P, 1)
    eval_batches = [collate(own_features[i : i + eval_micro], tok.pad_token_id, left_pad)
                    for i in range(0, len(own_features), eval_micro)]  # fmt: skip

    steps_per_epoch = max(1, len(train_features) // s.batch_size)
    total_steps = s.max_steps or max(1, math.ceil(s.epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=s.learning_rate,
                                  weight_decay=s.weight_decay)  # fmt: skip
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, int(s.warmup_ratio * total_steps), total_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    # nothing is written before this point: a run refused for its data, model or settings leaves no folder
    # behind that looks like a run (the next run would find a config.yaml and nothing else)
    if main:
        save_config(cfg, out)
    metrics = MetricsWriter(out / "metrics.jsonl", enabled=main)
    metrics.write({"event": "start", "train_examples": len(train_features), "eval_examples": eval_n,
                   "trainable_parameters": trainable, "total_parameters": total, "total_steps": total_steps,
                   "processes": P, "precision": accelerator.mixed_precision})  # fmt: skip

    def evaluate(step: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        unwrapped = accelerator.unwrap_model(model)
        view = LoadedModel(unwrapped, tok, enc_dec, loaded.source)
        prompts = [eval_set["prompt"][j] for j in own]
        with accelerator.autocast(), full_parameters(accelerator, model):
            loss_sum, count = evaluation_loss(unwrapped, eval_batches, accelerator.device, enc_dec)
            greedy, sampled = sample_summaries(view, cfg, prompts, cfg.run.seed + accelerator.process_index)
        loss_sum, count = all_reduce_sum(accelerator, [loss_sum, count]).tolist()
        texts = gather_objects(accelerator, list(zip(own[:real], greedy[:real], sampled[:real])))
        record: dict[str, Any] = {"event": "eval", "step": step, "eval_loss": loss_sum / max(count, 1)}
        samples: list[dict[str, Any]] = []
        if main:  # ROUGE and toxicity over all held-out examples, in their order
            ordered = sorted(texts)
            scores, samples = summary_scores(eval_set["prompt"], eval_set["summary"], [g for _, g, _ in ordered],
                                             [x for _, _, x in ordered])  # fmt: skip
            record.update(scores)
            metrics.write(record)
        return record, samples

    model.train()
    step, running, grad_norm, started = 0, 0.0, 0.0, time.perf_counter()
    bar = StepProgress("sft", total_steps, enabled=progress and main)
    with bar:
        while step < total_steps:
            for batch in loader:
                with accelerator.accumulate(model):
                    loss_sum, n = _forward(model, batch, enc_dec)
                    global_sum, global_n = all_reduce_sum(accelerator, [float(loss_sum.detach()), n]).tolist()
                    # the global token mean of this micro-batch: DDP averages over P processes, so scale by P
                    accelerator.backward(loss_sum * (P / max(global_n, 1.0)))
                    if accelerator.sync_gradients:
                        grad_norm = clip_gradients(accelerator, model.parameters(), s.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
                running += global_sum / max(global_n, 1.0) / s.gradient_accumulation_steps
                if not accelerator.sync_gradients:
                    continue
                step += 1
                bar.advance(loss=running)
                if step % s.log_every == 0 or step == total_steps:
                    record = {"event": "train", "step": step, "loss": running, "grad_norm": grad_norm,
                              "lr": scheduler.get_last_lr()[0], "elapsed_s": time.perf_counter() - started}  # fmt: skip
                    metrics.write(record)
                    if on_log:
                        on_log(record)
                running = 0.0
                if s.eval_every and step % s.eval_every == 0 and step < total_steps:
                    evaluate(step)
                if step >= total_steps:
                    break
    train_seconds = time.perf_counter() - started
    record, samples = evaluate(step)
    adapter_dir = out / "adapter"
    # a collective call: under ZeRO-3 / FSDP it gathers the sharded weights (every process must make it)
    state_dict = accelerator.get_state_dict(model) if is_sharded(accelerator) else None
    if main:
        final = {k: v for k, v in record.items() if k not in ("event", "step")}
        save_adapter(accelerator.unwrap_model(model), tok, adapter_dir, loaded.source, {"trained_by": "rlhfkit sft"},
                     state_dict=state_dict)  # fmt: skip
        write_json_atomic(out / "final_metrics.json", {**final, "steps": step, "train_seconds": train_seconds})
        write_json_atomic(out / "samples.json", samples[:20])
    accelerator.wait_for_everyone()
    # every process returns the same numbers: the main process's evaluation, broadcast
    record, samples = broadcast_objects(accelerator, record, samples[:20])
    final = {k: v for k, v in record.items() if k not in ("event", "step")}
    return SFTResult(out, adapter_dir, step, train_seconds, final, samples)
