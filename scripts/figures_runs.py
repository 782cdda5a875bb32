"""The runs behind `make figures` (scripts/figures.py) and the reading of their outputs into one plain dict."""

from __future__ import annotations

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
from typing import Any

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
    Run("sft-tiny-t5", (("rlhfkit", "sft", "--config", "configs/sft-tiny-t5.yaml", "--no-progress",
                         "--set", "run.output_dir=runs/figures/sft-tiny-t5"),)),
    Run("sft-tiny-llama", (("rlhfkit", "sft", "--config", "configs/sft-tiny-llama.yaml", "--no-progress",
                            "--set", "run.output_dir=runs/figures/sft-tiny-llama"),)),
    Run("demo1", (("rlhfkit", "demo", "--seed", "1", "-o", "runs/figures/demo1", "--no-progress"),)),
    Run("demo2", (("rlhfkit", "demo", "--seed", "2", "-o", "runs/figures/demo2", "--no-progress"),)),
    Run("rm-minilm", (
        ("rlhfkit", "reward", "make-pairs", "--out", "runs/figures/pairs/train.jsonl", "--size", "600"),
        ("rlhfkit", "reward", "make-pairs", "--out", "runs/figures/pairs/test.jsonl", "--size", "200", "--seed", "1"),
        _rm_train("rm-minilm", "runs/figures/pairs/train.jsonl"))),
    Run("rm-minilm-flip", (
        ("rlhfkit", "reward", "make-pairs", "--out", "runs/figures/pairs/train-flip.jsonl", "--size", "600",
         "--flip", "0.25"),
        _rm_train("rm-minilm-flip", "runs/figures/pairs/train-flip.jsonl"))),
)


def git_state(root: Path = ROOT, commit: str = "HEAD") -> dict[str, Any]:
    """The commit and whether the tracked or untracked (not ignored) files differ from HEAD."""
    sha = subprocess.run(["git", "rev-parse", "--short", commit], cwd=root, capture_output=True, text=True,
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


def export_commit(destination: Path, commit: str, root: Path = ROOT) -> None:
    """The committed src/ and configs/ of ``commit``, exported to ``destination``: the runs use the commit's code, not
    whatever uncommitted edits the working tree holds while they run (others may be editing it)."""
    shutil.rmtree(destination, ignore_errors=True)
    destination.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "--format=tar", commit, "src", "configs"], cwd=root,
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(destination)], input=archive, check=True)


def _argv(command: tuple[str, ...], code: Path) -> list[str]:
    argv = [sys.executable, "-m", "rlhfkit", *command[1:]] if command[0] == "rlhfkit" else list(command)
    return [str(code / a) if a.startswith("configs/") else a for a in argv]


def run_all(names: list[str] | None = None, out: Path = OUT, threads: int | None = None, commit: str = "HEAD") -> None:
    """Run the named runs (all by default) from fresh folders, recording their wall time in runs.json."""
    selected = [r for r in RUNS if names is None or r.name in names]
    unknown = set(names or ()) - {r.name for r in RUNS}
    if unknown:
        raise FiguresError(f"unknown run(s): {', '.join(sorted(unknown))}; the runs are: "
                           + ", ".join(r.name for r in RUNS))
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / "runs.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() and names is not None else {"runs": {}}
    git = git_state(commit=commit)
    if record.get("git", {}).get("commit", git["commit"]) != git["commit"]:
        raise FiguresError(f"runs/figures/runs.json holds runs of commit {record['git']['commit']}, HEAD is "
                           f"{git['commit']}: rerun them all (without --only) so that every figure is of one commit")
    record.update({"git": git, "machine": machine(), "threads": threads,
                   "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")})
    code = out / f".code-{git['commit']}"
    if names is None:  # a full run replaces every earlier record and export
        for stale in [*out.glob("*.run.json"), *(p for p in out.glob(".code*") if p != code)]:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    if not code.is_dir():  # the commit the stamp names, even if HEAD moves meanwhile; shared by runners of one commit
        export_commit(code.with_name(code.name + ".partial"), git["commit"])
        code.with_name(code.name + ".partial").rename(code)
    # the commit's code first on the path, before the editable install of the working tree
    env = {**os.environ, "PYTHONPATH": str(code / "src"), "COLUMNS": "80", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "PYTHONUNBUFFERED": "1"}
    if threads:  # torch's threads per run (OMP_NUM_THREADS); on a loaded machine 1 avoids stalls at every barrier
        env["OMP_NUM_THREADS"] = str(threads)
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
                rc = subprocess.run(_argv(command, code), cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT).returncode
                if rc != 0:
                    raise FiguresError(f"run {run.name}: `{' '.join(command)}` exited with status {rc}; see {log}")
        seconds = time.perf_counter() - t0
        for source, destination in run.keep:
            shutil.rmtree(out / destination, ignore_errors=True)
            shutil.copytree(out / source, out / destination)
        entry = {"commands": [" ".join(c) for c in run.commands], "seconds": round(seconds, 1),
                 "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        record["runs"][run.name] = entry
        record_path.write_text(json.dumps(record, indent=2) + "\n")
        # each run's own record too, so that runners started side by side (--only) never drop each other's
        (out / f"{run.name}.run.json").write_text(json.dumps({**entry, "commit": git["commit"], "threads": threads}) + "\n")
        print(f"[figures] {run.name}: {seconds:.0f} s", flush=True)



# --------------------------------------------------------------------------------------------------
# Reading the runs' outputs (into one plain dict: what the renderers take)


def _json(path: Path) -> Any:
    if not path.is_file():
        raise FiguresError(f"{path} is missing: run `python scripts/figures.py run` (or `make figures`) first")
    return json.loads(path.read_text())


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FiguresError(f"{path} is missing: run `python scripts/figures.py run` (or `make figures`) first")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def result_section(log: str) -> str:
    """The demo's closing output: from the 'result' rule to the 'Report:' line (rich, 80 columns)."""
    lines = log.splitlines()
    start = next((i for i, line in enumerate(lines) if re.fullmatch(r"─+ result ─+", line.strip())), None)
    end = next((i for i in range(len(lines) - 1, -1, -1) if lines[i].startswith("Report: ")), None)
    if start is None or end is None or end < start:
        raise FiguresError("the demo's log has no result section (a '── result ──' rule ... 'Report:' line)")
    return "\n".join(line.rstrip() for line in lines[start : end + 1])


def demo_total_seconds(log: str) -> int:
    """The demo's own total, from its 'Demo total N s.' line (a fresh folder: no stage reused)."""
    found = re.findall(r"Demo\s+total\s+(\d+)\s+s\.", log)  # rich may wrap the line anywhere
    if not found:
        raise FiguresError("the demo's log has no 'Demo total N s.' line: was the folder fresh?")
    return int(found[-1])


def reward_train_output(log: str) -> str:
    """What `reward train` printed, from its 'data:' line to the end of the log."""
    lines = log.rstrip("\n").splitlines()
    start = max((i for i, line in enumerate(lines) if line.startswith("data: ")), default=None)
    if start is None:
        raise FiguresError("the reward-model log has no 'data:' line")
    return "\n".join(line.rstrip() for line in lines[start:])


def _stages(folder: Path) -> dict[str, Any]:
    return {p.stem: json.loads(p.read_text())["result"] for p in sorted((folder / ".stages").glob("*.json"))}


def _samples(path: Path, limit: int) -> list[dict[str, Any]]:
    """The rows of samples.csv for the first ``limit`` prompts."""
    if not path.is_file():
        raise FiguresError(f"{path} is missing")
    with path.open(newline="") as handle:
        return [row for row in csv.DictReader(handle) if int(row["prompt_index"]) < limit]


def load_results(out: Path = OUT) -> tuple[dict[str, Any], dict[str, str]]:
    """Everything the renderers need, read from runs/figures/, and why each group that could not be read is
    missing (group name → the problem)."""
    provenance = _json(out / "runs.json")
    for path in sorted(out.glob("*.run.json")):
        entry = json.loads(path.read_text())
        if entry["commit"] != provenance["git"]["commit"] or entry["threads"] != provenance.get("threads"):
            raise FiguresError(f"{path} is a run of commit {entry['commit']} with threads {entry['threads']}, "
                               f"runs.json's are of {provenance['git']['commit']} with {provenance.get('threads')}: "
                               "rerun them all")
        provenance["runs"][path.name[: -len(".run.json")]] = entry
    loaded: dict[str, Any] = {"provenance": provenance}
    missing: dict[str, str] = {}
    loaded["demo"] = {}
    for seed in (0, 1, 2):
        try:
            loaded["demo"][str(seed)] = _read_demo(out, seed)
        except (FiguresError, OSError, KeyError, ValueError) as error:
            missing["seeds"] = missing.get("seeds", str(error))
            if seed == 0:
                missing["demo0"] = str(error)
    for group, read in (("kl", _read_kl), ("sft", _read_sft), ("rm", _read_rm)):
        try:
            loaded[group] = read(out)
        except (FiguresError, OSError, KeyError, ValueError) as error:
            missing[group] = str(error)
    return loaded, missing


def _read_demo(out: Path, seed: int) -> dict[str, Any]:
    # seed 0's evaluation was copied aside before --kl-comparison re-evaluated its folder with three policies
    results = "demo0-eval-plain/results.json" if seed == 0 else f"demo{seed}/eval/results.json"
    log = out / f"demo{seed}.log"
    text = log.read_text() if log.is_file() else ""
    return {"results": _json(out / results), "stages": _stages(out / f"demo{seed}"),
            "result_text": result_section(text), "total_seconds": demo_total_seconds(text)}


def _read_kl(out: Path) -> dict[str, Any]:
    if not (out / "demo0/eval/plots/training_curves.png").is_file():
        raise FiguresError(f"{out / 'demo0/eval/plots/training_curves.png'} is missing")
    log = out / "demo0-kl.log"
    return {"result_text": result_section(log.read_text() if log.is_file() else ""),
            "results": _json(out / "demo0/eval/results.json"), "samples": _samples(out / "demo0/eval/samples.csv", 5),
          "curves": {name: [{k: r.get(k) for k in ("step", "kl/k1", "score/mean")} for r in
                            _jsonl(out / f"demo0/{name}/metrics.jsonl") if r.get("kl/k1") is not None]
                     for name in ("ppo", "ppo-beta0")}}  # fmt: skip


def _read_sft(out: Path) -> dict[str, Any]:
    sft = {}
    for name in ("tiny-t5", "tiny-llama"):
        final = _json(out / f"sft-{name}/final_metrics.json")
        config = (out / f"sft-{name}/config.yaml").read_text()
        precision = re.search(r"^\s+precision:\s*(\S+)", config, re.M)
        sft[name] = {"final": final, "precision": precision.group(1) if precision else "?"}
    return sft


def _read_rm(out: Path) -> dict[str, Any]:
    rm = {}
    for name in ("rm-minilm", "rm-minilm-flip"):
        rm[name] = {"report": _json(out / f"{name}/report.json"), "output": reward_train_output((out / f"{name}.log").read_text())}
    return rm
