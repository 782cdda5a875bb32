"""TRL's RewardTrainer on a preference file; run by bench/reward_train.py inside bench/.venv-trl.

Trains with the settings the benchmark passes (the same as rlhfkit's run), then scores the held-out
texts the way a user of the trained model would (batches in file order, padded to the longest), and
writes pairs/s, texts/s and held-out accuracy as JSON. Imports nothing from rlhfkit.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from datasets import load_dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from trl import RewardConfig, RewardTrainer


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--learning-rate", type=float, required=True)
    p.add_argument("--max-length", type=int, required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--workdir", required=True)
    args = p.parse_args()

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if tokenizer.eos_token is None:  # BERT-style tokenizers: TRL appends the EOS token to every text
        tokenizer.eos_token = tokenizer.sep_token
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    train = load_dataset("json", data_files=args.train, split="train")
    config = RewardConfig(
        output_dir=args.workdir,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=0,
        num_train_epochs=1,
        weight_decay=0.0,
        max_grad_norm=1.0,
        max_length=args.max_length,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,  # TRL's default is on; off is the fair (faster) setting on this size
        disable_dropout=True,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
    )
    trainer = RewardTrainer(model=model, args=config, train_dataset=train, processing_class=tokenizer)
    kept = len(trainer.train_dataset)
    output = trainer.train()
    train_seconds = float(output.metrics["train_runtime"])

    with open(args.test, encoding="utf-8") as f:
        test = [json.loads(line) for line in f if line.strip()]
    texts = [r["prompt"] + r["chosen"] + tokenizer.eos_token for r in test]
    texts += [r["prompt"] + r["rejected"] + tokenizer.eos_token for r in test]
    model = trainer.model.eval()
    scores: list[float] = []
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(texts), 64):
            batch = tokenizer(texts[start : start + 64], padding=True, truncation=True, max_length=args.max_length,
                              return_tensors="pt")  # fmt: skip
            scores += model(**batch).logits[:, 0].tolist()
    score_seconds = time.perf_counter() - started
    n = len(test)
    correct = sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(scores[:n], scores[n:]))
    result = {
        "train_pairs": len(train),
        "pairs_kept_by_trl": kept,
        "train_seconds": train_seconds,
        "pairs_per_second": kept / train_seconds,
        "scoring_texts_per_second": len(texts) / score_seconds,
        "heldout_accuracy": correct / n,
        "heldout_n": n,
    }
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
