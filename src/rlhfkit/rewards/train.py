"""Training a reward model from preferences (`rlhfkit reward train`).

The loop, top to bottom:

1. read and clean the preference data; hold out a share of the prompts (or read held-out files);
2. load the backbone as a one-output sequence classifier (optionally with LoRA), dropout off;
3. encode every distinct (prompt, response) once; pack length-sorted batches that keep the pairs of a
   prompt together and forward each distinct text once (:mod:`rlhfkit.rewards.batching`);
4. minimise the Bradley–Terry loss −log σ(r_c − r_r − margin) (+ the centering term), AdamW with a
   learning rate decaying linearly to 0, for one epoch by default;
5. evaluate held-out pairwise accuracy with a 95 % interval and by margin bucket;
6. measure the offset and scale that give reference responses mean 0, std 1 (Ouyang et al. 2022,
   sec. C.2) and save them with the model, its tokenizer, the report, metrics and a loss plot.

Unpaired good/bad labels (TRL's ``prompt, completion, label``) train the same one-output model with a
logistic loss instead, a reward > 0 meaning "good".

Under `accelerate launch` with N processes, train.batch_size stays global: every process builds the same
batches and takes a contiguous 1/N of each batch's pairs; the loss is a sum over the local pairs divided by
the batch's pair count, so the all-reduced gradient is that of the batch mean on any number of processes.
"""

from __future__ import annotations

import json
import math
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlhfkit.config import save_config
from rlhfkit.data.agreement import annotator_agreement
from rlhfkit.data.preference_sources import DataReport, PreferenceData, load_preferences
from rlhfkit.data.preferences import cap_by_prompt, split_by_prompt
from rlhfkit.engine.distributed import (
    all_reduce_sum,
    check_split,
    clip_gradients,
    full_parameters,
    is_sharded,
    params_sharded,
    set_deepspeed_micro_batch,
)
from rlhfkit.engine.metrics import MetricsWriter, read_metrics
from rlhfkit.engine.progress import StepProgress
from rlhfkit.engine.runtime import make_accelerator, quiet_libraries
from rlhfkit.errors import RlhfkitError
from rlhfkit.io import atomic_dir, write_json_atomic
from rlhfkit.rewards.batching import (
    TextTable,
    index_comparisons,
    label_batches,
    pair_batches,
    shard_label_batch,
    shard_pair_batch,
)
from rlhfkit.config import RewardTrainConfig
from rlhfkit.rewards.encoding import (
    Encoded,
    classifier_logits,
    classifier_max_length,
    encode_texts,
    pad_batch,
)
from rlhfkit.rewards.evaluation import label_report, pairwise_report
from rlhfkit.rewards.loading import load_classifier
from rlhfkit.rewards.losses import binary_reward_loss, bradley_terry_loss, centering_penalty
from rlhfkit.rewards.quality import QualityVerdict, WeakRewardModelWarning, chance_accuracy, judge_reward_model
from rlhfkit.rewards.reward_model import MODEL_SUBDIR, RewardModelMeta
from rlhfkit.rewards.transforms import offset_scale


@dataclass
class RewardTrainResult:
    output_dir: Path
    model_dir: Path
    """The folder to load as a reward (kind: reward_model)."""
    steps: int
    train_examples: int
    """Pairs (or unpaired labels) trained on, counting every epoch."""
    train_seconds: float
    """Wall time of the optimisation steps (evaluations excluded)."""
    heldout: dict[str, Any]
    """Held-out accuracy, 95 % interval, loss, accuracy by bucket."""
    offset: float
    scale: float
    data: DataReport
    agreement: dict[str, Any] | None = None
    """Agreement between annotators, when the data names several per comparison."""
    truncated: dict[str, int] = field(default_factory=dict)
    """Texts cut to data.max_length, in training and held-out data."""
    scoring_texts_per_second: float = 0.0
    kind: str = "pairs"
    """pairs (Bradley–Terry) or labels (unpaired, logistic loss)."""
    quality: QualityVerdict | None = None
    """The quality gate's verdict (rewards.quality): may this model go on to RL?"""

    @property
    def pairs_per_second(self) -> float:
        return self.train_examples / self.train_seconds if self.train_seconds > 0 else 0.0


# --------------------------------------------------------------------------------------------------
# Data


def load_split(cfg: RewardTrainConfig) -> tuple[PreferenceData, list[Any], list[Any]]:
    """(all training data with its report, training examples, held-out examples)."""
    d = cfg.data
    data = load_preferences(d.train_files, d.format, d.hub_split, d.ties)
    items = data.labels or data.comparisons
    if d.eval_files:
        held = load_preferences(d.eval_files, d.format, d.hub_split, d.ties)
        if held.kind != data.kind:
            raise RlhfkitError(f"the training data holds {data.kind} but data.eval_files holds {held.kind}; use one kind.")
        train, test = list(items), list(held.labels or held.comparisons)
        data.report.sources.update({f"{k} (held out)": v for k, v in held.report.sources.items()})
    else:
        train, test = split_by_prompt(items, d.test_size, d.split_seed)
    return data, cap_by_prompt(train, d.max_pairs), test


# --------------------------------------------------------------------------------------------------
# Model


def load_backbone(cfg: RewardTrainConfig) -> tuple[Any, Any]:
    """The backbone as a one-output sequence classifier (LoRA attached when enabled), and its tokenizer."""
    b = cfg.backbone
    model, tokenizer = load_classifier(b.name_or_path, "reward-model backbone", num_labels=1, revision=b.revision,
                                       trust_remote_code=b.trust_remote_code, pad_token=b.pad_token)  # fmt: skip
    if cfg.train.disable_dropout:
        # Chosen and rejected are scored in one pass; with dropout on, each would see a different random
        # network and the difference r_c − r_r would carry dropout noise (TRL switches it off too).
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    if cfg.lora.enabled:
        model = _attach_lora(model, cfg)
    return model, tokenizer


def _attach_lora(model: Any, cfg: RewardTrainConfig) -> Any:
    from peft import LoraConfig, TaskType, get_peft_model

    lora = cfg.lora
    targets = list(lora.target_modules) if lora.target_modules else None
    if targets == ["all-linear"]:
        targets = "all-linear"  # type: ignore[assignment]
    peft_config = LoraConfig(task_type=TaskType.SEQ_CLS, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=targets)  # fmt: skip
    try:
        # SEQ_CLS keeps the new score head fully trainable next to the adapters
        return get_peft_model(model, peft_config)
    except ValueError as e:
        names = sorted({n.rsplit(".", 1)[-1] for n, _ in model.named_modules() if n})
        raise RlhfkitError(
            f"could not attach LoRA to the backbone: {str(e).splitlines()[0]} Set lora.target_modules to module "
            f"names of this model (or 'all-linear'); they include: {', '.join(names[:40])}."
        ) from None


# --------------------------------------------------------------------------------------------------
# Scoring helpers


def _scores(model: Any, encoded: Encoded, pad_id: int, batch_size: int, device: torch.device) -> torch.Tensor:
    """(N,) rewards of every text in ``encoded``, dropout off, no gradients."""
    was_training = model.training
    model.eval()
    try:
        return classifier_logits(model, encoded, pad_id, batch_size, device)[:, 0]
    finally:
        model.train(was_training)


def _reference_texts(cfg: RewardTrainConfig, train: list[Any]) -> tuple[list[str], list[str], str]:
    """(prompts, responses, description) of the reference samples the reward is normalised on."""
    n, ref = cfg.normalize.max_samples, cfg.normalize.reference
    if ref in ("all", "chosen"):
        seen: dict[tuple[str, str], None] = {}
        for x in train:
            if hasattr(x, "completion"):
                seen[(x.prompt, x.completion)] = None
                continue
            seen[(x.prompt, x.chosen)] = None
            if ref == "all":
                seen[(x.prompt, x.rejected)] = None
        pairs = list(seen)
        random.Random(cfg.run.seed).shuffle(pairs)
        pairs = pairs[:n]
        what = "training responses" if ref == "all" else "chosen training responses"
        return [p for p, _ in pairs], [r for _, r in pairs], f"{len(pairs)} {what}"
    path = Path(ref).expanduser()
    if not path.is_file():
        raise RlhfkitError(f"normalize.reference must be all, chosen or a JSONL file; {ref!r} is neither.")
    from rlhfkit.data.preference_readers import iter_json_lines

    prompts, responses = [], []
    for line, obj in iter_json_lines(path):
        response = next((obj[k] for k in ("response", "completion", "summary") if isinstance(obj.get(k), str)), None)
        if response is None or not isinstance(obj.get("prompt", ""), str):
            raise RlhfkitError(f"{path}:{line}: a reference sample needs a 'prompt' and a 'response' (or 'completion').")
        prompts.append(obj.get("prompt", ""))
        responses.append(response)
        if len(prompts) >= n:
            break
    return prompts, responses, f"{len(prompts)} samples from {path}"


def _plot_loss(records: list[dict[str, Any]], path: Path) -> bool:
    """Loss curve (training loss per logged step, held-out loss where evaluated) as a PNG; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    train = [(r["step"], r["loss"]) for r in records if r.get("event") == "train" and r.get("loss") is not None]
    held = [(r["step"], r["loss"]) for r in records if r.get("event") == "eval" and r.get("loss") is not None]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train:
        ax.plot(*zip(*train), label="training loss")
    if held:
        ax.plot(*zip(*held), "o-", label="held-out loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("reward model")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------------------------------
# The loop


def run_reward_training(cfg: RewardTrainConfig, progress: bool = True,
                        on_log: Callable[[dict[str, Any]], None] | None = None) -> RewardTrainResult:  # fmt: skip
    """Train, evaluate, normalise and save a reward model as ``cfg`` says."""
    quiet_libraries()
    cfg.validate()
    out = Path(cfg.run.output_dir)
    accelerator = make_accelerator(cfg.run)
    main, P, rank = accelerator.is_main_process, accelerator.num_processes, accelerator.process_index
    t = cfg.train
    check_split(P, {"train.batch_size": t.batch_size})
    if cfg.lora.enabled and params_sharded(accelerator):
        raise RlhfkitError("reward-model LoRA is not supported under ZeRO-3 or FSDP (the adapter is merged into "
                           "weights that are sharded); train it with data parallelism (configs/accelerate/"
                           "multi-gpu.yaml) or ZeRO-2, or switch lora.enabled off.")  # fmt: skip
    data, train, test = load_split(cfg)
    paired = data.kind == "pairs"
    if main:
        save_config(cfg, out)
        (out / "metrics.jsonl").unlink(missing_ok=True)
    with accelerator.local_main_process_first():  # it builds a missing built-in backbone before the others look
        model, tok = load_backbone(cfg)
    device = accelerator.device
    pad_id = tok.pad_token_id
    max_length = min(cfg.data.max_length, classifier_max_length(tok, model.config))
    use_types = getattr(model.config, "type_vocab_size", 0) >= 2

    def encode(table: TextTable) -> Encoded:
        return encode_texts(tok, table.prompts, table.responses, cfg.data.input, max_length, use_types)

    train_table, test_table = TextTable(), TextTable()
    if paired:
        train_pairs, test_pairs = index_comparisons(train, train_table), index_comparisons(test, test_table)
    else:
        train_texts = [train_table.add(x.prompt, x.completion) for x in train]
        test_texts = [test_table.add(x.prompt, x.completion) for x in test]
    train_enc, test_enc = encode(train_table), encode(test_table)
    truncated = {"train": sum(train_enc.truncated), "heldout": sum(test_enc.truncated)}
    lengths = train_enc.lengths()

    def epoch_batches(epoch: int) -> list[Any]:
        seed = cfg.run.seed + epoch
        if paired:
            batches: list[Any] = pair_batches(train_pairs, lengths, t.batch_size, seed, t.length_sorted)
        else:
            batches = label_batches(train_texts, [x.label for x in train], t.batch_size, seed)
        return batches  # the same global batches on every process; each takes its share of every batch

    steps_per_epoch = len(epoch_batches(0))
    total_steps = t.max_steps or max(1, math.ceil(t.epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=t.learning_rate,
                                  weight_decay=t.weight_decay)  # fmt: skip
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, int(t.warmup_ratio * total_steps), total_steps)
    set_deepspeed_micro_batch(accelerator, t.batch_size // P)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    metrics = MetricsWriter(out / "metrics.jsonl", enabled=main)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    metrics.write({"event": "start", "kind": data.kind, "train_examples": len(train), "heldout_examples": len(test),
                   "distinct_train_texts": len(train_table), "total_steps": total_steps,
                   "trainable_parameters": trainable, "max_length": max_length, **{f"truncated_{k}": v for k, v in
                   truncated.items()}})  # fmt: skip

    def evaluate(step: int) -> dict[str, Any]:
        started = time.perf_counter()
        # fp32, without autocast: the saved model is evaluated as the reward will run it. Every process scores
        # every held-out text (cheap next to training; under ZeRO-3 all must run the same forward passes).
        with full_parameters(accelerator, model):
            scores = _scores(accelerator.unwrap_model(model), test_enc, pad_id, t.eval_batch_size, device)
        seconds = time.perf_counter() - started
        if paired:
            report = pairwise_report(
                scores[torch.tensor([p.chosen for p in test_pairs], dtype=torch.long)],
                scores[torch.tensor([p.rejected for p in test_pairs], dtype=torch.long)],
                torch.tensor([p.margin for p in test_pairs]) if t.use_margin else torch.zeros(len(test_pairs)),
                torch.tensor([p.target for p in test_pairs]),
            )
        else:
            report = label_report(scores[torch.tensor(test_texts, dtype=torch.long)],
                                  torch.tensor([float(x.label) for x in test]))  # fmt: skip
        report["scoring_texts_per_second"] = len(test_enc) / seconds if seconds > 0 else 0.0
        # the spread of the raw held-out scores: what the quality gate judges when nothing is normalised
        report["score_mean"] = float(scores.mean()) if scores.numel() else None
        report["score_std"] = float(scores.std(correction=0)) if scores.numel() else None
        metrics.write({"event": "eval", "step": step, **{k: v for k, v in report.items() if k != "by_bucket"}})
        return report

    model.train()
    step, examples, train_seconds, epoch = 0, 0, 0.0, 0
    bar = StepProgress("reward", total_steps, enabled=progress and main)
    with bar:
        while step < total_steps:
            for batch in epoch_batches(epoch):
                started = time.perf_counter()
                if paired:
                    local, weight = shard_pair_batch(batch, rank, P)
                else:
                    local, weight = shard_label_batch(batch, rank, P)
                weight = weight.to(device)
                inputs = pad_batch(train_enc, local.texts, pad_id, device)
                with accelerator.autocast():
                    rewards = model(**inputs).logits.squeeze(-1).float()  # (U,) one per distinct text
                if paired:
                    r_c, r_r = rewards[local.chosen.to(device)], rewards[local.rejected.to(device)]
                    margin = local.margin.to(device) if t.use_margin else None
                    loss_sum = (bradley_terry_loss(r_c, r_r, margin, local.target.to(device)) * weight).sum()
                    if t.center_coefficient:  # a mean over the local pairs, times their count: their sum
                        loss_sum = loss_sum + t.center_coefficient * centering_penalty(r_c, r_r) * weight.sum()
                else:
                    loss_sum = (binary_reward_loss(rewards, local.labels.to(device)) * weight).sum()
                # the batch mean over all processes' pairs; DDP averages over the P processes, so scale by P
                accelerator.backward(loss_sum * (P / batch.pairs))
                grad_norm = clip_gradients(accelerator, model.parameters(), t.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                train_seconds += time.perf_counter() - started
                step += 1
                examples += batch.pairs
                value = float(all_reduce_sum(accelerator, [float(loss_sum.detach())])[0]) / batch.pairs
                bar.advance(loss=value)
                if step % t.log_every == 0 or step == total_steps:
                    record = {"event": "train", "step": step, "loss": value, "grad_norm": grad_norm,
                              "lr": scheduler.get_last_lr()[0], "examples": examples,
                              "train_seconds": train_seconds}  # fmt: skip
                    metrics.write(record)
                    if on_log:
                        on_log(record)
                if t.eval_every and step % t.eval_every == 0 and step < total_steps:
                    evaluate(step)
                if step >= total_steps:
                    break
            epoch += 1

    heldout = evaluate(step)
    unwrapped = accelerator.unwrap_model(model)
    # a collective call: under ZeRO-3 / FSDP it gathers the sharded weights (every process must make it)
    full_state = accelerator.get_state_dict(model) if is_sharded(accelerator) else None
    prompts, responses, described = _reference_texts(cfg, train)
    offset, scale = 0.0, 1.0
    if cfg.normalize.enabled:
        ref_enc = encode_texts(tok, prompts, responses, cfg.data.input, max_length, use_types)
        # measured in fp32, as ClassifierReward scores: the saved offset and scale must match its scores
        with full_parameters(accelerator, model):
            raw = _scores(unwrapped, ref_enc, pad_id, t.eval_batch_size, device)
        offset, scale = offset_scale(raw.tolist(), name="the trained reward model")
    quality = _judge(heldout, (offset, scale) if cfg.normalize.enabled else None,
                     0.5 if paired else chance_accuracy([x.label for x in test]))  # fmt: skip
    if main and not quality.ok:
        warnings.warn(f"the reward model in {out} failed the quality gate; do not optimise a policy against it "
                      "before fixing this: " + " ".join(p[0].upper() + p[1:] for p in quality.problems), WeakRewardModelWarning, stacklevel=2)  # fmt: skip
    agreement = annotator_agreement(list(data.comparisons) + (test if paired and cfg.data.eval_files else []))
    result = RewardTrainResult(out, out / MODEL_SUBDIR, step, examples, train_seconds, heldout, offset, scale,
                               data.report, agreement, truncated, heldout.get("scoring_texts_per_second", 0.0),
                               data.kind, quality)  # fmt: skip
    if main:
        _save(result, cfg, unwrapped, tok, max_length, described, full_state)
    accelerator.wait_for_everyone()
    return result


def _judge(heldout: dict[str, Any], normalisation: tuple[float, float] | None, chance: float) -> QualityVerdict:
    """The quality gate's verdict; the spread judged is the normalisation's (the std every reward is divided
    by) when measured, else the raw held-out scores'."""
    n = heldout["n"]
    mean, std = normalisation or (heldout.get("score_mean"), heldout.get("score_std"))
    return judge_reward_model(heldout["accuracy"] * n if n else 0.0, n, mean, std, chance=chance)


def _save(result: RewardTrainResult, cfg: RewardTrainConfig, model: Any, tokenizer: Any, max_length: int,
          reference: str, full_state: dict[str, Any] | None = None) -> None:  # fmt: skip
    if cfg.lora.enabled:
        model = model.merge_and_unload()  # a plain classifier folder: loading needs no peft
    heldout = result.heldout
    meta = RewardModelMeta(
        input=cfg.data.input, max_length=max_length, offset=result.offset, scale=result.scale,
        reference=reference if cfg.normalize.enabled else "not normalised", backbone=cfg.backbone.name_or_path,
        extra={"heldout_accuracy": heldout.get("accuracy"), "heldout_n": heldout.get("n"),
               "train_examples": result.train_examples, "kind": result.kind,
               "quality_ok": result.quality.ok if result.quality else None},
    )  # fmt: skip
    with atomic_dir(result.model_dir) as staging:
        model.save_pretrained(staging, **({"state_dict": full_state} if full_state is not None else {}))
        tokenizer.save_pretrained(staging)
        meta.write(staging)
    out = result.output_dir
    plotted = _plot_loss(read_metrics(out / "metrics.jsonl"), out / "loss_curve.png")
    report = {
        "heldout": heldout,
        "quality": result.quality.to_dict() if result.quality else None,
        "annotator_agreement": result.agreement,
        "data": {**result.data.__dict__, "warnings": result.data.warnings()},
        "truncated": result.truncated,
        "normalization": {"offset": result.offset, "scale": result.scale, "reference": meta.reference},
        "steps": result.steps,
        "train_examples": result.train_examples,
        "train_seconds": result.train_seconds,
        "pairs_per_second": result.pairs_per_second,
        "scoring_texts_per_second": result.scoring_texts_per_second,
        "loss_curve": "loss_curve.png" if plotted else None,
        "model_dir": str(result.model_dir),
    }
    write_json_atomic(out / "report.json", json.loads(json.dumps(report, default=float)))
