"""What one other busy process costs a training run, with OpenMP's default waiting and with passive waiting.

Runs the same short LoRA SFT of tiny-t5 (`rlhfkit sft`, 2 torch threads) alone and beside a process that
keeps one core busy, under three ways of waiting: the OpenMP runtime's default (libgomp's threads spin),
rlhfkit's default (GOMP_SPINCOUNT=2000, set when rlhfkit is imported before torch; src/rlhfkit/__init__.py)
and OMP_WAIT_POLICY=PASSIVE. Prints seconds per step and what the busy neighbour costs in each case.

    .venv/bin/python bench/cpu_contention.py            # about 3 minutes on an idle 2-core machine
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "sft-tiny-t5.yaml"
SETTINGS = ["sft.eval_examples=4", "data.synthetic.size=200", "run.num_threads=2"]
BUSY = "while True: pass"


# the variables each way sets; OMP_WAIT_POLICY="" is the runtime's default (rlhfkit leaves a set value alone)
WAYS = {
    "OpenMP default (spin)": {"OMP_WAIT_POLICY": ""},
    "rlhfkit: GOMP_SPINCOUNT=2000": {},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
}


def seconds_per_step(way: dict[str, str], steps: int, folder: Path) -> float:
    """Train ``steps`` steps in a fresh process whose environment holds only ``way``'s OpenMP variables."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(way, HF_HUB_OFFLINE="1")
    args = [sys.executable, "-m", "rlhfkit", "sft", "--config", str(CONFIG), "--no-progress",
            "--set", f"sft.max_steps={steps}", "--set", f"run.output_dir={folder}"]  # fmt: skip
    for setting in SETTINGS:
        args += ["--set", setting]
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    found = re.search(r"trained (\d+) steps in ([\d.]+) s", done.stdout)
    if found is None:
        raise SystemExit(f"no training time in the output of {' '.join(args)}:\n{done.stdout}\n{done.stderr}")
    return float(found.group(2)) / int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="rlhfkit-contention-") as tmp:
        seconds_per_step({}, 1, Path(tmp) / "warm-up")  # builds the preset once, outside the timings
        for i, (name, way) in enumerate(WAYS.items()):
            alone = seconds_per_step(way, args.steps, Path(tmp) / f"alone-{i}")
            busy = subprocess.Popen([sys.executable, "-c", BUSY])
            try:
                beside = seconds_per_step(way, args.steps, Path(tmp) / f"beside-{i}")
            finally:
                busy.kill()
                busy.wait()
            rows[name] = (alone, beside)
    print(f"LoRA SFT of tiny-t5, 2 threads, {args.steps} steps, on {os.cpu_count()} cores; seconds per step")
    print(f"{'waiting':30s} {'alone':>8s} {'1 busy process':>15s} {'cost':>7s}")
    for name, (alone, beside) in rows.items():
        print(f"{name:30s} {alone:8.3f} {beside:15.3f} {beside / alone:6.1f}x")


if __name__ == "__main__":
    main()
