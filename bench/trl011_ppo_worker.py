"""The course lab's PPO step on TRL 0.11.4 (legacy PPOTrainer), timed. Runs inside bench/.venv-trl011.

    python trl011_ppo_worker.py PRESET_DIR PROMPTS_JSON {batched|lab} STEPS

Set up as the lab does it: a LoRA adapter (r=32, alpha=32, dropout 0.05, q and v) on the model, wrapped in
AutoModelForSeq2SeqLMWithValueHead, with a full reference copy from create_reference_model. "lab" generates
one prompt at a time as the lab's loop does; "batched" gives PPOTrainer.generate all prompts at once. The
reward is the same lexicon count rlhfkit's side uses (negligible cost). Prints one JSON line of timings.
"""

from __future__ import annotations

import json
import re
import resource
import sys
import time
from pathlib import Path

import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import AutoConfig, AutoModelForSeq2SeqLM, PreTrainedTokenizerFast
from trl import AutoModelForSeq2SeqLMWithValueHead, PPOConfig, PPOTrainer, create_reference_model

BATCH, MINI_BATCH, NEW_TOKENS, THREADS = 16, 4, 32, 2
LEXICON = Path(__file__).resolve().parents[1] / "src" / "rlhfkit" / "data" / "toxic_lexicon.txt"


def lexicon_scorer():
    words = [w.strip() for w in LEXICON.read_text().splitlines() if w.strip() and not w.startswith("#")]
    pattern = re.compile(r"\b(?:" + "|".join(sorted(map(re.escape, words), key=len, reverse=True)) + r")\b", re.I)
    return lambda text: -float(len(pattern.findall(text)))


def main(preset_dir: str, prompts_json: str, mode: str, steps: int) -> None:
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    # The preset folder was written by transformers 5; build the tokenizer from its tokenizer.json directly.
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(Path(preset_dir) / "tokenizer.json"), pad_token="<pad>",
                                        eos_token="</s>", unk_token="<unk>")  # fmt: skip
    config = AutoConfig.from_pretrained(preset_dir)
    config.tie_word_embeddings = False  # FLAN-T5 keeps a separate output layer (the preset saved both tensors)
    base = AutoModelForSeq2SeqLM.from_pretrained(preset_dir, config=config, torch_dtype=torch.float32)
    lora = LoraConfig(r=32, lora_alpha=32, target_modules=["q", "v"], lora_dropout=0.05, bias="none",
                      task_type=TaskType.SEQ_2_SEQ_LM)  # fmt: skip
    peft_model = get_peft_model(base, lora)
    ppo_model = AutoModelForSeq2SeqLMWithValueHead.from_pretrained(peft_model, torch_dtype=torch.float32,
                                                                   is_trainable=True)  # fmt: skip
    ref_model = create_reference_model(ppo_model)
    ppo_config = PPOConfig(model_name=preset_dir, learning_rate=1.41e-5, ppo_epochs=1, mini_batch_size=MINI_BATCH,
                           batch_size=BATCH, seed=0)  # fmt: skip
    trainer = PPOTrainer(config=ppo_config, model=ppo_model, ref_model=ref_model, tokenizer=tokenizer)
    prompts = json.loads(Path(prompts_json).read_text())
    # on the trainer's device: the lab's one-prompt generate() does not move its input there itself
    device = trainer.accelerator.device
    queries = [tokenizer(p, return_tensors="pt").input_ids.squeeze(0).to(device) for p in prompts]
    assert all(len(q) == 128 for q in queries), [len(q) for q in queries]
    gen_kwargs = {"min_new_tokens": NEW_TOKENS, "max_new_tokens": NEW_TOKENS, "top_k": 0.0, "top_p": 1.0,
                  "do_sample": True, "pad_token_id": tokenizer.pad_token_id}  # fmt: skip
    score = lexicon_scorer()
    timings = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        if mode == "lab":  # the lab's loop: one generate call per prompt
            responses = [trainer.generate(q, **gen_kwargs).squeeze()[-NEW_TOKENS:] for q in queries]
        else:
            responses = trainer.generate(queries, batch_size=BATCH, return_prompt=False, **gen_kwargs)
        t1 = time.perf_counter()
        texts = [tokenizer.decode(r, skip_special_tokens=True) for r in responses]
        rewards = [torch.tensor(score(t)) for t in texts]
        t2 = time.perf_counter()
        stats = trainer.step(queries, responses, rewards)
        t3 = time.perf_counter()
        timings.append({"generate": t1 - t0, "score": t2 - t1, "reference": stats["time/ppo/forward_pass"],
                        "update": t3 - t2 - stats["time/ppo/forward_pass"], "step": t3 - t0,
                        "response_tokens": sum(len(r) for r in responses) / len(responses)})  # fmt: skip
    timed = timings[1:]
    result = {k: sum(t[k] for t in timed) / len(timed) for k in timed[0]}
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["samples_per_second"] = BATCH / result["step"]
    result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
