"""Regenerate every learning-results table and figure in README.md and docs/*.md: `make figures`.

    python scripts/figures.py            # run everything into runs/figures/, then rewrite the marked blocks
    python scripts/figures.py run        # only the runs (--only NAME ... for some of them)
    python scripts/figures.py render     # only rewrite the blocks from what runs/figures/ holds
    python scripts/figures.py check      # every marker has a renderer and is balanced; nothing is written

The runs are the commands the documents quote (the demo with seeds 0-2, seed 0 again with --kl-comparison,
the SFT configs, the MiniLM reward models of docs/rewards.md), each into its own folder under runs/figures/,
its output in runs/figures/<name>.log and its wall time in runs/figures/runs.json together with the commit and
the machine. Rendering reads their outputs (results.json, .stages/*.json, metrics.jsonl, report.json, the logs)
and rewrites only what lies between markers:

    <!-- figures:NAME -->
    ...generated...
    <!-- /figures:NAME -->

Text outside the markers is never changed; a missing, repeated, nested or unbalanced marker is an error, and
so is a marker without a renderer (or a renderer without a marker). The Python layer (parsing, rendering,
replacing) is pure and tested in tests/test_figures.py without any training.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "runs" / "figures"
DOCUMENTS = ("README.md", "docs/*.md")


class FiguresError(Exception):
    """A problem the figures command reports in one paragraph (exit status 2)."""


# --------------------------------------------------------------------------------------------------
# The runs


@dataclass(frozen=True)
class Run:
    name: str
    commands: tuple[tuple[str, ...], ...]
    """Each an argv; 'rlhfkit' is the virtualenv's. The run's folder is runs/figures/<name>."""
    keep: tuple[tuple[str, str], ...] = ()
    """(source, destination) paths under runs/figures copied after the commands, before a later run changes them."""


def _rm_train(name: str, train_pairs: str) -> tuple[str, ...]:
    return ("rlhfkit", "reward", "train", "--data", train_pairs, "--eval-data", "runs/figures/pairs/test.jsonl",
            "-o", f"runs/figures/{name}", "--no-progress", "--set", "backbone.name_or_path=backbone:minilm",
            "--set", "data.max_length=128", "--set", "train.learning_rate=1e-4", "--set", "train.batch_size=32")


RUNS: tuple[Run, ...] = (
    Run("demo0", (("rlhfkit", "demo", "--seed", "0", "-o", "runs/figures/demo0", "--no-progress"),),
        keep=(("demo0/eval", "demo0-eval-plain"),)),
    # the same folder again: stages 1-6 are reused, PPO with beta = 0 is added and all three are evaluated
    Run("demo0-kl", (("rlhfkit", "demo", "--seed", "0", "--kl-comparison", "-o", "runs/figures/demo0",
                      "--no-progress"),)),
    Run("demo1", (("rlhfkit", "demo", "--seed", "1", "-o", "runs/figures/demo1", "--no-progress"),)),
    Run("demo2", (("rlhfkit", "demo", "--seed", "2", "-o", "runs/figures/demo2", "--no-progress"),)),
    Run("sft-tiny-t5", (("rlhfkit", "sft", "--config", "configs/sft-tiny-t5.yaml", "--no-progress",
                         "--set", "run.output_dir=runs/figures/sft-tiny-t5"),)),
    Run("sft-tiny-llama", (("rlhfkit", "sft", "--config", "configs/sft-tiny-llama.yaml", "--no-progress",
                            "--set", "run.output_dir=runs/figures/sft-tiny-llama"),)),
    Run("rm-minilm", (
        ("rlhfkit", "reward", "make-pairs", "--out", "runs/figures/pairs/train.jsonl", "--size", "600"),
        ("rlhfkit", "reward", "make-pairs", "--out", "runs/figures/pairs/test.jsonl", "--size", "200", "--seed", "1"),
        _rm_train("rm-minilm", "runs/figures/pairs/train.jsonl"))),
    Run("rm-minilm-flip", (
        ("rlhfkit", "reward", "make-pairs", "--out", "runs/figures/pairs/train-flip.jsonl", "--size", "600",
         "--flip", "0.25"),
        _rm_train("rm-minilm-flip", "runs/figures/pairs/train-flip.jsonl"))),
)


def git_state(root: Path = ROOT) -> dict[str, Any]:
    """The commit and whether the tracked or untracked (not ignored) files differ from it."""
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                         check=True).stdout.strip()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True,
                            check=True).stdout
    return {"commit": sha, "dirty": bool(status.strip()),
            "dirty_files": [line[3:] for line in status.splitlines() if line.strip()]}


def machine() -> dict[str, Any]:
    """CPU model, cores, torch and transformers versions of the machine the runs are on."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch
    import transformers

    return {"cpu": model, "cores": os.cpu_count(), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


def _argv(command: tuple[str, ...]) -> list[str]:
    if command[0] == "rlhfkit":
        return [sys.executable, "-m", "rlhfkit", *command[1:]]
    return list(command)


def run_all(names: list[str] | None = None, out: Path = OUT) -> None:
    """Run the named runs (all by default) from fresh folders, recording their wall time in runs.json."""
    selected = [r for r in RUNS if names is None or r.name in names]
    unknown = set(names or ()) - {r.name for r in RUNS}
    if unknown:
        raise FiguresError(f"unknown run(s): {', '.join(sorted(unknown))}; the runs are: "
                           + ", ".join(r.name for r in RUNS))
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / "runs.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() and names is not None else {"runs": {}}
    record.update({"git": git_state(), "machine": machine(),
                   "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")})
    env = {**os.environ, "COLUMNS": "80", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
           "PYTHONUNBUFFERED": "1"}
    for run in selected:
        if run.name != "demo0-kl":  # demo0-kl extends demo0's folder; every other run starts fresh
            shutil.rmtree(out / run.name, ignore_errors=True)
        log = out / f"{run.name}.log"
        print(f"[figures] {run.name}: running (log: {log.relative_to(ROOT)})", flush=True)
        t0 = time.perf_counter()
        with log.open("w") as handle:
            for command in run.commands:
                handle.write("$ " + " ".join(command) + "\n")
                handle.flush()
                rc = subprocess.run(_argv(command), cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT).returncode
                if rc != 0:
                    raise FiguresError(f"run {run.name}: `{' '.join(command)}` exited with status {rc}; see {log}")
        seconds = time.perf_counter() - t0
        for source, destination in run.keep:
            shutil.rmtree(out / destination, ignore_errors=True)
            shutil.copytree(out / source, out / destination)
        record["runs"][run.name] = {"commands": [" ".join(c) for c in run.commands], "seconds": round(seconds, 1),
                                    "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        record_path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"[figures] {run.name}: {seconds:.0f} s", flush=True)


# --------------------------------------------------------------------------------------------------
# The command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", nargs="?", default="all", choices=("all", "run", "render", "check"))
    parser.add_argument("--only", nargs="+", metavar="RUN", help="with run: only these runs")
    args = parser.parse_args(argv)
    try:
        if args.action in ("all", "run"):
            run_all(args.only)
    except FiguresError as error:
        print(f"figures: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
