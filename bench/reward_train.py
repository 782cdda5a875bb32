"""Benchmark: reward-model training (pairs/s) and scoring (texts/s), rlhfkit vs TRL's RewardTrainer.

Both train on the same synthetic preference pairs (`rlhfkit reward make-pairs`), from the same backbone
folder, with the same batch size (pairs per step), learning rate (linear decay to 0, no warm-up), one
epoch, fp32, dropout off, no gradient checkpointing, and a maximum length long enough that neither
truncates nor drops a pair. TRL runs in its own virtual environment (bench/.venv-trl, created here with
torch pinned first), in a separate process, one run after the other.

    .venv/bin/python bench/reward_train.py                       # MiniLM and roberta-base-shape
    .venv/bin/python bench/reward_train.py --backbones minilm --dialogues 100

Pairs/s counts training pairs over the wall time of the optimisation steps (TRL: its train_runtime;
rlhfkit: its step time). The two run alternately ``--repeats`` times and the best run of each is
compared: on a shared machine, other jobs only ever slow a run down. Texts/s scores the held-out chosen and rejected texts, 64 per batch, with the
trained model (rlhfkit: through the reward API that PPO uses). Results go to runs/bench-reward/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRL_VENV = ROOT / "bench" / ".venv-trl"
OUT = ROOT / "runs" / "bench-reward"
TORCH_PIN = "torch==2.13.0"


def ensure_trl_venv() -> Path:
    """bench/.venv-trl with torch (pinned, installed first), current trl, and our transformers version."""
    python = TRL_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TRL_VENV)], check=True)
    probe = subprocess.run([str(python), "-c", "import trl, torch; print(trl.__version__, torch.__version__)"],
                           capture_output=True, text=True, check=False)  # fmt: skip
    if probe.returncode != 0:
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        # torch first and pinned: an open range pulls gigabytes of CUDA wheels on a CPU machine
        subprocess.run([*pip, TORCH_PIN], check=True)
        subprocess.run([*pip, "trl", f"transformers=={version('transformers')}", "accelerate", "datasets"], check=True)
        probe = subprocess.run([str(python), "-c", "import trl, torch; print(trl.__version__, torch.__version__)"],
                               capture_output=True, text=True, check=True)  # fmt: skip
    print(f"TRL venv: trl {probe.stdout.split()[0]}, torch {probe.stdout.split()[1]}")
    return python


def write_pairs(dialogues: int, folder: Path) -> tuple[Path, Path]:
    from rlhfkit.feedback.formats import write_jsonl_atomic
    from rlhfkit.rewards.synthetic_pairs import make_synthetic_pairs

    folder.mkdir(parents=True, exist_ok=True)
    train, test = folder / "train.jsonl", folder / "test.jsonl"
    write_jsonl_atomic(make_synthetic_pairs(size=dialogues, seed=0), train)
    write_jsonl_atomic(make_synthetic_pairs(size=max(20, dialogues // 2), seed=1), test)
    return train, test


def run_rlhfkit(backbone: str, train: Path, test: Path, args: argparse.Namespace, out: Path) -> dict:
    from rlhfkit.config import load_config
    from rlhfkit.config import RewardTrainConfig
    from rlhfkit.rewards.reward_model import load_reward_model
    from rlhfkit.rewards.train import run_reward_training

    cfg = load_config([], [
        f"data.train_files=[{json.dumps(str(train))}]", f"data.eval_files=[{json.dumps(str(test))}]",
        f"run.output_dir={out}", "run.device=cpu", "run.precision=fp32", f"backbone.name_or_path={backbone}",
        f"data.max_length={args.max_length}", f"train.learning_rate={args.learning_rate}",
        f"train.batch_size={args.batch_size}", "train.eval_batch_size=64", "normalize.max_samples=64",
    ], schema=RewardTrainConfig)  # fmt: skip
    result = run_reward_training(cfg, progress=False)
    rows = [json.loads(line) for line in test.read_text().splitlines()]
    reward = load_reward_model(out, batch_size=64, device="cpu")
    prompts = [r["prompt"] for r in rows] * 2
    responses = [r["chosen"] for r in rows] + [r["rejected"] for r in rows]
    started = time.perf_counter()
    reward(prompts, responses)
    seconds = time.perf_counter() - started
    return {
        "train_pairs": result.train_examples,
        "train_seconds": result.train_seconds,
        "pairs_per_second": result.pairs_per_second,
        "scoring_texts_per_second": len(responses) / seconds,
        "heldout_accuracy": result.heldout["accuracy"],
        "heldout_n": result.heldout["n"],
        "truncated": result.truncated,
    }


def run_trl(python: Path, model_dir: str, train: Path, test: Path, args: argparse.Namespace, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    result_file = out / "trl_result.json"
    cmd = [str(python), str(ROOT / "bench" / "_trl_reward_worker.py"), "--model", model_dir, "--train", str(train),
           "--test", str(test), "--batch-size", str(args.batch_size), "--learning-rate", str(args.learning_rate),
           "--max-length", str(args.max_length), "--output", str(result_file), "--workdir", str(out / "trl-work")]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
        return {"error": f"TRL's RewardTrainer failed (exit {done.returncode}):\n{tail}"}
    return json.loads(result_file.read_text())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbones", default="minilm,roberta-base-shape", help="comma-separated: minilm, roberta-base-shape")
    p.add_argument("--dialogues", type=int, default=150, help="training dialogues (2 pairs each) for MiniLM")
    p.add_argument("--dialogues-large", type=int, default=24, help="training dialogues for roberta-base-shape")
    p.add_argument("--batch-size", type=int, default=16, help="pairs per optimiser step (both frameworks)")
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--max-length", type=int, default=512, help="long enough that no pair is cut or dropped")
    p.add_argument("--repeats", type=int, default=2, help="alternating runs of each; the best of each is compared")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rlhfkit.engine.runtime import quiet_libraries
    from rlhfkit.rewards.tiny_backbones import resolve_backbone

    quiet_libraries()
    python = ensure_trl_venv()
    import torch

    print(f"rlhfkit side: torch {torch.__version__}, transformers {version('transformers')}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    results = {}
    for name in [b.strip() for b in args.backbones.split(",") if b.strip()]:
        backbone = f"backbone:{name}"
        folder = resolve_backbone(backbone)
        dialogues = args.dialogues if name == "minilm" else args.dialogues_large
        train, test = write_pairs(dialogues, OUT / name / "data")
        print(f"\n{name}: {2 * dialogues} training pairs, batch {args.batch_size}, max_length {args.max_length}")
        runs: dict[str, list[dict]] = {"rlhfkit": [], "trl": []}
        for repeat in range(args.repeats):  # alternate the two, so that load from other jobs hits both alike
            ours = run_rlhfkit(backbone, train, test, args, OUT / name / "rlhfkit")
            runs["rlhfkit"].append(ours)
            print(f"  [{repeat + 1}] rlhfkit: {ours['pairs_per_second']:.2f} pairs/s, "
                  f"{ours['scoring_texts_per_second']:.1f} texts/s, held-out accuracy "
                  f"{100 * ours['heldout_accuracy']:.1f}% (n={ours['heldout_n']}); load {os.getloadavg()[0]:.1f}")  # fmt: skip
            theirs = run_trl(python, folder, train, test, args, OUT / name / "trl")
            if "error" in theirs:
                print(f"  TRL: {theirs['error']}")
                break
            runs["trl"].append(theirs)
            print(f"  [{repeat + 1}] TRL:     {theirs['pairs_per_second']:.2f} pairs/s, "
                  f"{theirs['scoring_texts_per_second']:.1f} texts/s, held-out accuracy "
                  f"{100 * theirs['heldout_accuracy']:.1f}% (n={theirs['heldout_n']}), {theirs['pairs_kept_by_trl']} of "
                  f"{theirs['train_pairs']} pairs kept by its length filter; load {os.getloadavg()[0]:.1f}")  # fmt: skip
        if runs["trl"]:
            # best of the repeats: other jobs on the machine only ever slow a run down
            best = {k: {m: max(r[m] for r in v) for m in ("pairs_per_second", "scoring_texts_per_second")}
                    for k, v in runs.items()}  # fmt: skip
            print(f"  best of {len(runs['trl'])}, rlhfkit / TRL: "
                  f"{best['rlhfkit']['pairs_per_second'] / best['trl']['pairs_per_second']:.2f}x pairs/s, "
                  f"{best['rlhfkit']['scoring_texts_per_second'] / best['trl']['scoring_texts_per_second']:.2f}x texts/s")  # fmt: skip
        results[name] = runs
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nresults written to {OUT / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
