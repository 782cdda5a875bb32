"""PPO step benchmark: rlhfkit vs the course lab's stack (TRL 0.11.4 legacy PPOTrainer), same machine, one run.

Configuration (the issue's): FLAN-T5-small- and -base-shaped presets (random weights, real shapes), LoRA r=32
alpha=32 on q and v, batch 16, mini-batch 4, 1 PPO epoch, prompts of exactly 128 tokens, exactly 32 new
tokens, 2 threads. Every variant runs in its own process (so peak RSS is its own) and reports the mean of the
timed steps after one warm-up step:

* rlhfkit fp32 and rlhfkit bf16 (autocast, fp32 master weights)
* TRL 0.11.4 with batched generation (all 16 prompts in one generate call), fp32
* TRL 0.11.4 with the lab's loop: one generate call per prompt, fp32

TRL runs in its own virtualenv (bench/.venv-trl011: trl==0.11.4, transformers==4.46.3, peft==0.13.2,
accelerate==1.0.1, datasets==3.0.2, rich, torch==2.13.0), created by ``--setup-trl`` (torch installed first).

    .venv/bin/python bench/ppo_step.py --setup-trl          # once
    .venv/bin/python bench/ppo_step.py                      # both presets, all variants
    .venv/bin/python bench/ppo_step.py --presets flan-t5-small-shape --steps 3
    .venv/bin/python bench/ppo_step.py --floor              # only the fp32 floor per step on this CPU

After the ratios it prints the fp32 floor (``fp32_floor``): the seconds no implementation can beat at fp32 on
this CPU, and how close to it each fp32 speed target lies.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRL_VENV = HERE / ".venv-trl011"
TRL_PACKAGES = ["trl==0.11.4", "transformers==4.46.3", "peft==0.13.2", "accelerate==1.0.1", "datasets==3.0.2", "rich"]
PROMPT_TOKENS, NEW_TOKENS, BATCH, MINI_BATCH, THREADS = 128, 32, 16, 4, 2


def setup_trl_venv() -> None:
    """Create the TRL 0.11.4 virtualenv; torch is pinned and installed first (an open range pulls CUDA wheels)."""
    if not (TRL_VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(TRL_VENV)], check=True)
    pip = [str(TRL_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, *TRL_PACKAGES], check=True)


def make_prompts(preset_dir: str, n: int = BATCH) -> list[str]:
    """``n`` prompt texts that tokenize to exactly PROMPT_TOKENS tokens (EOS included) with the preset tokenizer."""
    from transformers import AutoTokenizer

    from rlhfkit.data.synthetic import generate_corpus

    tok = AutoTokenizer.from_pretrained(preset_dir)
    corpus = generate_corpus(400, 0.3, seed=7)
    prompts: list[str] = []
    for i in range(0, len(corpus) - 3, 3):
        text = "Summarize the following conversation.\n\n" + "\n".join(e.dialogue for e in corpus[i : i + 3])
        ids = tok(text, add_special_tokens=False)["input_ids"][: PROMPT_TOKENS - 1]
        candidate = tok.decode(ids)
        if len(tok(candidate)["input_ids"]) == PROMPT_TOKENS:  # byte-level BPE round trips almost always
            prompts.append(candidate)
        if len(prompts) == n:
            return prompts
    raise RuntimeError("could not build enough 128-token prompts")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def lexicon_scores(responses: list[str]) -> list[float]:
    from rlhfkit.data.lexicon import LexiconJudge

    judge = LexiconJudge()
    return [-float(judge.count(r)) for r in responses]


# --------------------------------------------------------------------------------------------------
# rlhfkit worker


def run_rlhfkit(preset: str, precision: str, steps: int) -> dict:
    """Time ``steps`` PPO steps of rlhfkit after a warm-up step; the run's files go to a folder removed after."""
    from rlhfkit.models.presets import ensure_preset

    preset_dir = str(ensure_preset(preset))
    with tempfile.TemporaryDirectory(prefix="bench-ppo-") as folder:
        return _time_rlhfkit(preset_dir, Path(folder), precision, steps)


def _time_rlhfkit(preset_dir: str, work: Path, precision: str, steps: int) -> dict:
    import torch

    from rlhfkit.algos.ppo.run import run_ppo
    from rlhfkit.config import load_config, replace
    from rlhfkit.rewards.simple import CallableReward

    torch.set_num_threads(THREADS)
    data = work / "prompts.jsonl"
    data.write_text("".join(json.dumps({"dialogue": p, "summary": ""}) + "\n" for p in make_prompts(preset_dir)))
    cfg = load_config([], [
        f"model.name_or_path={preset_dir}", f"data.source={data}", "data.template='{dialogue}'", "data.min_chars=0",
        "data.max_chars=100000", "data.test_size=0.01", f"run.precision={precision}", f"run.num_threads={THREADS}",
        f"ppo.steps={steps + 1}", f"ppo.batch_size={BATCH}", f"ppo.mini_batch_size={MINI_BATCH}",
        f"ppo.micro_batch_size={MINI_BATCH}", "ppo.ppo_epochs=1", f"ppo.min_new_tokens={NEW_TOKENS}",
        f"ppo.max_new_tokens={NEW_TOKENS}", f"generation.min_new_tokens={NEW_TOKENS}",
        f"generation.max_new_tokens={NEW_TOKENS}", f"generation.batch_size={BATCH}", "ppo.tensorboard=false",
        "ppo.sample_every=0", "ppo.save_every=0", "generation.max_prompt_tokens=256",
    ])  # fmt: skip
    cfg = replace(cfg, **{"run.output_dir": str(work / "run"), "data.max_train_examples": BATCH})
    history = run_ppo(cfg, reward=CallableReward(lambda p, r: lexicon_scores(r)), progress=False).history
    timed = history[1:]  # step 1 warms up allocators and kernels

    def mean(key: str) -> float:
        return sum(h[key] for h in timed) / len(timed)

    # run.device is auto: on a machine with a GPU the policy runs there (bf16 on Ampere or newer)
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {"generate": mean("time/generate"), "score": mean("time/score"), "reference": mean("time/reference"),
            "update": mean("time/update") + mean("time/advantages"), "step": mean("time/step"),
            "peak_rss_mib": peak_rss_mib(), "response_tokens": mean("response/length_mean"),
            "samples_per_second": BATCH / mean("time/step"), "peak_gpu_mib": gpu}  # fmt: skip


# --------------------------------------------------------------------------------------------------
# the fp32 floor: what the arithmetic allows on this CPU


def fp32_floor(preset_dir: str) -> dict:
    """A lower bound on the seconds of one fp32 PPO step on this machine, for any implementation.

    A step must at least sample (one forward pass over prompt and response), score the responses under the
    reference (one forward pass) and update (a forward and a backward pass; with frozen weights and a LoRA
    adapter the backward computes input gradients only, about one forward pass again). Matrix products are
    counted by torch's ``FlopCounterMode`` on the preset with the benchmark's adapter (r=32 on q and v), for
    one 128 + 32-token example, times the batch; the rate is the best ``F.linear`` throughput measured here
    over the products' shapes (bench/cpu_rates.py prints the full table). Attention, normalisation, sampling
    and every element-wise operation are left out, so no step can be faster than this.
    """
    import torch
    # bench/ is the script's folder, first on sys.path: a module there must not share a package's name
    # (bench/kernels.py once shadowed the `kernels` package transformers imports, and building a preset failed)
    from cpu_rates import linear_gmacs
    from peft import LoraConfig, get_peft_model
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForSeq2SeqLM

    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
    base = AutoModelForSeq2SeqLM.from_pretrained(preset_dir).eval()
    lora = LoraConfig(r=32, lora_alpha=32, target_modules=["q", "v"], lora_dropout=0.0, task_type="SEQ_2_SEQ_LM")
    model = get_peft_model(base, lora)
    prompt = torch.randint(5, base.config.vocab_size, (1, PROMPT_TOKENS))
    response = torch.randint(5, base.config.vocab_size, (1, NEW_TOKENS))

    def forward() -> torch.Tensor:
        return model(input_ids=prompt, attention_mask=torch.ones_like(prompt), decoder_input_ids=response).logits

    with torch.no_grad(), FlopCounterMode(display=False) as counted:
        forward()
    forward_macs = counted.get_total_flops() / 2 * BATCH
    with FlopCounterMode(display=False) as counted:
        forward().logsumexp(-1).sum().backward()
    update_macs = counted.get_total_flops() / 2 * BATCH
    macs = 2 * forward_macs + update_macs  # sampling + reference + update
    d, ff, vocab = base.config.d_model, base.config.d_ff, base.config.vocab_size
    inner = base.config.num_heads * base.config.d_kv
    rows = MINI_BATCH * PROMPT_TOKENS
    best = max(linear_gmacs(r, k, n, torch.float32) for r, k, n in
               ((rows, d, inner), (rows, d, ff), (rows, ff, d), (MINI_BATCH * NEW_TOKENS, d, vocab),
                (BATCH * PROMPT_TOKENS, d, ff)))  # fmt: skip
    return {"gmacs": macs / 1e9, "forward_gmacs": forward_macs / 1e9, "peak_gmacs_per_s": best,
            "seconds": macs / 1e9 / best}  # fmt: skip


def print_floor(preset: str, preset_dir: str, targets: dict[str, float] | None = None) -> None:
    """Print the fp32 floor of ``preset`` and, for each target (name -> seconds per step), how close it is."""
    floor = fp32_floor(preset_dir)
    print(f"  fp32 floor on this CPU, {preset}: 4 passes of {floor['forward_gmacs']:.0f} G multiply-adds "
          f"({floor['gmacs']:.0f} G, matrix products only) at the best fp32 rate measured here, "
          f"{floor['peak_gmacs_per_s']:.0f} G/s: {floor['seconds']:.2f} s per step")
    for name, seconds in (targets or {}).items():
        verdict = "below the floor: no implementation reaches it" if seconds < floor["seconds"] else \
            f"every stage at {floor['seconds'] / seconds:.0%} of the peak rate"
        print(f"    {name} means {seconds:.2f} s per step: {verdict}")


# --------------------------------------------------------------------------------------------------
# orchestration


def _worker(args: list[str], python: str = sys.executable, pythonpath: str | None = None) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(THREADS), "TOKENIZERS_PARALLELISM": "false"}
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run([python, *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"worker {' '.join(args[:3])} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["flan-t5-small-shape", "flan-t5-base-shape"])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up step)")
    parser.add_argument("--setup-trl", action="store_true", help="create the TRL 0.11.4 virtualenv and exit")
    parser.add_argument("--skip-trl", action="store_true", help="time rlhfkit only")
    parser.add_argument("--trl-python", default=str(TRL_VENV / "bin" / "python"),
                        help="Python that runs the TRL 0.11.4 side (default: the --setup-trl virtualenv)")
    parser.add_argument("--trl-pythonpath", help="PYTHONPATH for the TRL side, e.g. a folder its packages were "
                        "installed into with pip --target (on a machine where no virtualenv can be built)")
    parser.add_argument("--floor", action="store_true",
                        help="print only the fp32 floor per step (matrix products at this CPU's best rate) and exit")
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "PRESET", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.setup_trl:
        setup_trl_venv()
        return
    if args.worker:
        kind, preset, variant = args.worker
        print(json.dumps(run_rlhfkit(preset, variant, args.steps)))
        return
    from rlhfkit.models.presets import ensure_preset

    trl_python = Path(shutil.which(args.trl_python) or args.trl_python)
    if not args.skip_trl and not trl_python.exists():
        sys.exit("TRL 0.11.4's virtualenv is missing: run `python bench/ppo_step.py --setup-trl` first (or --skip-trl).")
    if not args.floor:
        print(f"PPO step, batch {BATCH}, mini-batch {MINI_BATCH}, 1 epoch, {PROMPT_TOKENS}-token prompts, exactly "
              f"{NEW_TOKENS} new tokens, {THREADS} threads; mean of {args.steps} steps after a warm-up step\n")  # fmt: skip
    header = f"{'preset':22s} {'variant':26s} {'generate':>9s} {'score':>7s} {'reference':>9s} {'update':>8s} {'step s':>8s} {'peak RSS':>10s}"  # noqa: E501
    for preset in args.presets:
        preset_dir = str(ensure_preset(preset))
        if args.floor:
            print_floor(preset, preset_dir)
            continue
        results: dict[str, dict] = {}
        for precision in ("fp32", "bf16"):
            t0 = time.perf_counter()
            results[f"rlhfkit {precision}"] = _worker([__file__, "--steps", str(args.steps), "--worker", "rlhfkit", preset, precision])  # noqa: E501
            print(f"  measured rlhfkit {precision} on {preset} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        if not args.skip_trl:
            with tempfile.TemporaryDirectory(prefix="bench-trl-") as folder:
                prompts_file = Path(folder) / "prompts.json"
                prompts_file.write_text(json.dumps(make_prompts(preset_dir)))
                for mode in ("batched", "lab"):
                    results[f"TRL 0.11.4 {mode} fp32"] = _worker(
                        [str(HERE / "trl011_ppo_worker.py"), preset_dir, str(prompts_file), mode, str(args.steps)],
                        python=str(trl_python), pythonpath=args.trl_pythonpath,
                    )
        print(header)
        for name, r in results.items():
            print(f"{preset:22s} {name:26s} {r['generate']:9.2f} {r['score']:7.3f} {r['reference']:9.2f} "
                  f"{r['update']:8.2f} {r['step']:8.2f} {r['peak_rss_mib']:8.0f} MiB")  # fmt: skip
            if r.get("peak_gpu_mib") is not None:
                print(f"{'':22s} {'':26s} {r['samples_per_second']:.1f} samples/s, peak GPU memory "
                      f"{r['peak_gpu_mib']:.0f} MiB")  # fmt: skip
        if not args.skip_trl:
            ours32, ours16 = results["rlhfkit fp32"], results["rlhfkit bf16"]
            trl_b, trl_lab = results["TRL 0.11.4 batched fp32"], results["TRL 0.11.4 lab fp32"]
            print(f"  speed-up fp32 vs TRL batched: {trl_b['step'] / ours32['step']:.2f}x (target >= 2)")
            print(f"  speed-up fp32 vs the lab's loop: {trl_lab['step'] / ours32['step']:.2f}x (target >= 6)")
            print(f"  speed-up bf16 vs TRL batched: {trl_b['step'] / ours16['step']:.2f}x (target >= 3)")
            print(f"  peak RSS fp32 / TRL batched: {ours32['peak_rss_mib'] / trl_b['peak_rss_mib']:.2f} (target <= 0.6)")
            print(f"  peak RSS bf16 (rlhfkit's default) / TRL batched: "
                  f"{ours16['peak_rss_mib'] / trl_b['peak_rss_mib']:.2f} (target <= 0.6)")
        if results["rlhfkit fp32"].get("peak_gpu_mib") is None:  # the floor is a CPU's
            targets = None if args.skip_trl else {"2x TRL batched": trl_b["step"] / 2,
                                                  "6x the lab's loop": trl_lab["step"] / 6}  # fmt: skip
            print_floor(preset, preset_dir, targets)
        print()


if __name__ == "__main__":
    main()
