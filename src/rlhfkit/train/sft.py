"""Supervised fine-tuning of a LoRA adapter on prompt → summary pairs (`rlhfkit sft`).

The loop is plain PyTorch on top of Accelerate: tokenize → batches → AdamW on the adapter → evaluate
(held-out loss, ROUGE of greedy summaries, lexicon toxicity of sampled summaries) → save the adapter
with its tokenizer, the resolved config and the metrics.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import DataLoader

from rlhfkit.config import Config, save_config
from rlhfkit.data.lexicon import LexiconJudge
from rlhfkit.data.loading import SplitData, load_dialogues
from rlhfkit.eval.rouge import rouge
from rlhfkit.io import write_json_atomic
from rlhfkit.models.loading import LoadedModel, load_base_model
from rlhfkit.models.lora import attach_lora, save_adapter, trainable_parameters
from rlhfkit.rollout.generation import generate, position_ids_from_mask
from rlhfkit.train.metrics import MetricsWriter
from rlhfkit.train.progress import StepProgress
from rlhfkit.train.runtime import make_accelerator, quiet_libraries

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


def tokenize_pair(tokenizer: Any, prompt: str, summary: str, is_encoder_decoder: bool, max_source: int,
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
    if left_pad:  # decoder-only: positions count from the first real token (DESIGN, PPO detail 5)
        batch["position_ids"] = position_ids_from_mask(batch["attention_mask"])
    return batch


def _tokenized(data: Any, loaded: LoadedModel, cfg: Config) -> list[dict[str, list[int]]]:
    tok, enc_dec, s = loaded.tokenizer, loaded.is_encoder_decoder, cfg.sft
    return [tokenize_pair(tok, p, t, enc_dec, s.max_source_tokens, s.max_target_tokens) for p, t in zip(data["prompt"], data["summary"])]  # noqa: E501


# --------------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def evaluation_loss(model: Any, batches: list[dict[str, torch.Tensor]], device: torch.device) -> float:
    """Token-weighted mean cross-entropy over ``batches``, with dropout off."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        n = int((batch["labels"] != IGNORE_INDEX).sum())
        total += float(model(**batch).loss) * n
        count += n
    model.train(was_training)
    return total / max(count, 1)


def evaluate_summaries(loaded: LoadedModel, cfg: Config, prompts: list[str], references: list[str],
                       seed: int) -> tuple[dict[str, float], list[dict[str, Any]]]:  # fmt: skip
    """ROUGE of greedy summaries against ``references``; lexicon toxicity of sampled summaries."""
    model, tok, enc_dec = loaded.model, loaded.tokenizer, loaded.is_encoder_decoder
    greedy = generate(model, tok, prompts, cfg.generation, enc_dec, do_sample=False).texts
    sampled = generate(model, tok, prompts, cfg.generation, enc_dec, do_sample=True, seed=seed).texts
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
    """Train a LoRA adapter with ``cfg``; returns where it was saved and the final evaluation."""
    quiet_libraries()
    out = Path(cfg.run.output_dir)
    accelerator = make_accelerator(cfg.run, cfg.sft.gradient_accumulation_steps)
    main = accelerator.is_main_process
    if main:
        save_config(cfg, out)
    data = data if data is not None else load_dialogues(cfg.data)
    loaded = attach_lora(load_base_model(cfg.model), cfg.lora)
    model, tok = loaded.model, loaded.tokenizer
    trainable, total = trainable_parameters(model)

    s = cfg.sft
    micro = s.batch_size // s.gradient_accumulation_steps
    left_pad = not loaded.is_encoder_decoder
    train_features = _tokenized(data.train, loaded, cfg)
    generator = torch.Generator().manual_seed(cfg.run.seed)
    loader = DataLoader(train_features, batch_size=micro, shuffle=True, generator=generator,  # type: ignore[arg-type]
                        collate_fn=lambda f: collate(f, tok.pad_token_id, left_pad))  # fmt: skip
    eval_n = min(s.eval_examples, len(data.test))
    eval_set = data.test.select(range(eval_n))
    eval_features = _tokenized(eval_set, loaded, cfg)
    eval_batches = [collate(eval_features[i : i + micro], tok.pad_token_id, left_pad) for i in range(0, eval_n, micro)]

    steps_per_epoch = math.ceil(len(train_features) / s.batch_size)
    total_steps = s.max_steps or max(1, math.ceil(s.epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=s.learning_rate,
                                  weight_decay=s.weight_decay)  # fmt: skip
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, int(s.warmup_ratio * total_steps), total_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    metrics = MetricsWriter(out / "metrics.jsonl", enabled=main)
    metrics.write({"event": "start", "train_examples": len(train_features), "eval_examples": eval_n,
                   "trainable_parameters": trainable, "total_parameters": total, "total_steps": total_steps})  # fmt: skip

    def evaluate(step: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        unwrapped = accelerator.unwrap_model(model)
        view = LoadedModel(unwrapped, tok, loaded.is_encoder_decoder, loaded.source)
        with accelerator.autocast():
            loss = evaluation_loss(unwrapped, eval_batches, accelerator.device)
            scores, samples = evaluate_summaries(view, cfg, eval_set["prompt"], eval_set["summary"], cfg.run.seed)
        record = {"event": "eval", "step": step, "eval_loss": loss, **scores}
        metrics.write(record)
        return record, samples

    model.train()
    step, running, started = 0, 0.0, time.perf_counter()
    bar = StepProgress("sft", total_steps, enabled=progress and main)
    with bar:
        while step < total_steps:
            for batch in loader:
                with accelerator.accumulate(model):
                    loss = model(**batch).loss
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(model.parameters(), s.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
                running += float(loss.detach()) / s.gradient_accumulation_steps
                if not accelerator.sync_gradients:
                    continue
                step += 1
                bar.advance(loss=running)
                if step % s.log_every == 0 or step == total_steps:
                    record = {"event": "train", "step": step, "loss": running, "lr": scheduler.get_last_lr()[0],
                              "elapsed_s": time.perf_counter() - started}  # fmt: skip
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
    final = {k: v for k, v in record.items() if k not in ("event", "step")}
    adapter_dir = out / "adapter"
    if main:
        save_adapter(accelerator.unwrap_model(model), tok, adapter_dir, loaded.source, {"trained_by": "rlhfkit sft"})
        write_json_atomic(out / "final_metrics.json", {**final, "steps": step, "train_seconds": train_seconds})
        write_json_atomic(out / "samples.json", samples[:20])
    accelerator.wait_for_everyone()
    return SFTResult(out, adapter_dir, step, train_seconds, final, samples[:20])
