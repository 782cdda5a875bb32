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


# --------------------------------------------------------------------------------------------------
# Rendering: pure functions from load_results()'s dict to Markdown


def stamp(provenance: dict[str, Any], runs: tuple[str, ...]) -> str:
    """The line that ends every generated block: what made it, where, and how long its runs took."""
    git, m = provenance["git"], provenance["machine"]
    tree = ("its code exported from git; the working tree had uncommitted changes, not used" if git["dirty"]
            else "clean tree")
    times = ", ".join(f"{name} {_duration(provenance['runs'][name]['seconds'])}" for name in runs)
    threads = provenance.get("threads")
    cores = f"{m['cores']} cores" + (f" ({threads} torch thread{'s' if threads > 1 else ''} per run)" if threads else "")
    return (f"*Produced by `make figures` at commit {git['commit']} ({tree}) on {m['cpu']}, {cores}, "
            f"torch {m['torch']}, transformers {m['transformers']}; wall time of the runs: {times}.*")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 600 else f"{seconds / 60:.1f} min"


def _pct(x: float, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f}%"


def _signed(x: float, digits: int = 3) -> str:
    """A signed figure with a real minus sign, as the prose writes it."""
    text = f"{x:+.{digits}f}"
    return ("−" + text[1:]) if text.startswith("-") else text


def _p(p: float) -> str:
    return f"{p:.1g}" if p < 1e-3 else f"{p:.2g}"


def _comparison(results: dict[str, Any], a: str, b: str) -> dict[str, Any]:
    for c in results["comparisons"]:
        if c["a"] == a and c["b"] == b:
            return c["measures"]
    raise FiguresError(f"results.json has no comparison {a} vs {b}")


def _mean(results: dict[str, Any], policy: str, key: str) -> float:
    return results["policies"][policy]["measures"][key]["mean"]


def render_demo_duration(r: dict[str, Any]) -> str:
    seconds = r["demo"]["0"]["total_seconds"]
    preset = r["demo"]["0"]["stages"]["preset"]["stage_seconds"]
    return (f"On the machine named below it took {seconds} s, as the demo's last line says (`rlhfkit demo --seed 0` "
            f"into a fresh folder; building the preset took {preset:.0f} s of it: it is built once per machine).\n\n"
            + stamp(r["provenance"], ("demo0",)))


def render_demo_result(r: dict[str, Any]) -> str:
    return "```\n" + r["demo"]["0"]["result_text"] + "\n```\n\n" + stamp(r["provenance"], ("demo0",))


def render_eval_headline(r: dict[str, Any]) -> str:
    """What the terminal shows at the end of the demo (seed 0): the means, the changes and the verdict."""
    return "```\n" + r["demo"]["0"]["result_text"] + "\n```\n\n" + stamp(r["provenance"], ("demo0",))


def _rm(stages: dict[str, Any]) -> dict[str, Any]:
    return stages["reward_model"]


def render_demo_seeds(r: dict[str, Any]) -> str:
    header = ("| seed | toxic summaries, SFT → PPO | change (95% CI), Wilcoxon p | ROUGE-L, SFT → PPO (change, 95% CI) "
              "| KL(PPO‖SFT), nats per summary | reward model held-out accuracy | demo wall time |\n"
              "|---|---|---|---|---|---|---|")
    rows, drops_clear, rouge_moves = [], True, []
    for seed in sorted(r["demo"], key=int):
        d = r["demo"][seed]
        res = d["results"]
        c = _comparison(res, "sft", "ppo")
        tox, rl = c["toxicity"], c["rougeL"]
        kl = res["policies"]["ppo"]["measures"]["kl"]
        rm = _rm(d["stages"])
        drops_clear = drops_clear and tox["ci"]["high"] < 0
        rouge_moves.append(abs(rl["mean_difference"]))
        rows.append(
            f"| {seed} | {_pct(_mean(res, 'sft', 'toxicity'))} → {_pct(_mean(res, 'ppo', 'toxicity'))} "
            f"| {_signed(100 * tox['mean_difference'], 1)} pts ({_signed(100 * tox['ci']['low'], 1)} to "
            f"{_signed(100 * tox['ci']['high'], 1)}), p = {_p(tox['p_value'])} "
            f"| {_mean(res, 'sft', 'rougeL'):.3f} → {_mean(res, 'ppo', 'rougeL'):.3f} ({_signed(rl['mean_difference'])}, "
            f"{_signed(rl['ci']['low'])} to {_signed(rl['ci']['high'])}) "
            f"| {kl['mean']:.2f} ({kl['mean_ci']['low']:.2f}–{kl['mean_ci']['high']:.2f}) "
            f"| {_pct(rm['heldout_accuracy'])} (n = {rm['n']}) | {d['total_seconds']} s |"
        )
    verdict = ("In every seed the drop in toxicity is far from zero (its 95% interval lies below 0)"
               if drops_clear else "Not in every seed does the 95% interval of the change in toxicity lie below 0")
    limit = 0.05
    rouge = (f"ROUGE-L moves by at most {max(rouge_moves):.3f} (the limit we hold ourselves to is {limit})"
             if max(rouge_moves) < limit else
             f"ROUGE-L moves by up to {max(rouge_moves):.3f}, beyond the limit we hold ourselves to ({limit})")
    runs = tuple(f"demo{s}" for s in sorted(r["demo"], key=int))
    return header + "\n" + "\n".join(rows) + f"\n\n{verdict}, and {rouge}.\n\n" + stamp(r["provenance"], runs)


def render_demo_rm_accuracy(r: dict[str, Any]) -> str:
    rm = _rm(r["demo"]["0"]["stages"])
    return (f"The default simulated run holds out about {rm['n']} pairs, enough to judge: seed 0 reached "
            f"{_pct(rm['heldout_accuracy'])} accuracy (95% CI {_pct(rm['ci_low'])}–{_pct(rm['ci_high'])}, "
            f"n = {rm['n']}).\n\n" + stamp(r["provenance"], ("demo0",)))


def render_rm_accuracy_range(r: dict[str, Any]) -> str:
    seeds = sorted(r["demo"], key=int)
    accs = [_rm(r["demo"][s]["stages"]) for s in seeds]
    listed = ", ".join(f"{_pct(a['heldout_accuracy'])} (n = {a['n']})" for a in accs)
    return (f"The demo's reward model reaches {listed} held-out pairwise accuracy with seeds "
            f"{', '.join(seeds)}, on labels that are 90% right: the held-out labels are noisy too, so about 90% "
            "is the ceiling the label noise allows.\n\n" + stamp(r["provenance"], tuple(f"demo{s}" for s in seeds)))


def render_kl_curves(r: dict[str, Any]) -> str:
    penalised, free = r["kl"]["curves"]["ppo"], r["kl"]["curves"]["ppo-beta0"]
    kl_pen = [row["kl/k1"] for row in penalised]
    last = [row["kl/k1"] for row in free[-10:]]
    return ("![PPO training curves with and without the KL penalty](images/kl-penalty.png)\n\n"
            f"Per step, the penalised run's KL to the reference (nats per summary) reaches at most {max(kl_pen):.1f} "
            f"and ends at {kl_pen[-1]:.1f}; without the penalty it is {min(last):.1f}–{max(last):.1f} over the last "
            f"{len(last)} steps (median {sorted(last)[len(last) // 2]:.1f}), and {free[-1]['kl/k1']:.1f} in the last "
            "one.\n\n" + stamp(r["provenance"], ("demo0", "demo0-kl")))


def render_kl_table(r: dict[str, Any]) -> str:
    res = r["kl"]["results"]
    names = ("sft", "ppo", "ppo-beta0")
    rows = [("toxic summaries (lexicon judge)", "toxicity", _pct),
            ("reward-model score", "reward model", lambda x: _signed(x, 2).lstrip("+")),
            ("ROUGE-L against the references", "rougeL", lambda x: f"{x:.3f}"),
            ("KL to the SFT model (nats per summary)", "kl", lambda x: f"{x:.2f}")]
    lines = ["| | SFT | PPO, β = 0.3 | PPO, β = 0 |", "|---|---|---|---|"]
    for label, key, fmt in rows:
        key = _measure_key(res, key)
        lines.append(f"| {label} | " + " | ".join(fmt(_mean(res, n, key)) for n in names) + " |")
    if all("repeated_share" in res["policies"][n] for n in names):  # the collapse check, where results have it
        lines.append("| repeated responses (the collapse check) | "
                     + " | ".join(_pct(res["policies"][n]["repeated_share"]) for n in names) + " |")
    d03, d0 = _comparison(res, "sft", "ppo")["rougeL"], _comparison(res, "sft", "ppo-beta0")["rougeL"]
    text = (f"Over all {res['prompts']} held-out dialogues, ROUGE-L moved by {_signed(d03['mean_difference'])} (95% CI "
            f"{_signed(d03['ci']['low'])} to {_signed(d03['ci']['high'])}) with the penalty and by "
            f"{_signed(d0['mean_difference'])} ({_signed(d0['ci']['low'])} to {_signed(d0['ci']['high'])}) without it.")
    return "\n".join(lines) + "\n\n" + text + "\n\n" + stamp(r["provenance"], ("demo0", "demo0-kl"))


def _measure_key(results: dict[str, Any], key_or_label: str) -> str:
    for m in results["measures"]:
        if key_or_label in (m["key"], m["label"]):
            return m["key"]
    raise FiguresError(f"results.json has no measure {key_or_label!r}")


def render_kl_samples(r: dict[str, Any]) -> str:
    rows = r["kl"]["samples"]
    by = {(int(row["prompt_index"]), row["policy"]): row for row in rows}
    indices = sorted({int(row["prompt_index"]) for row in rows})
    toxic = [i for i in indices if float(by[(i, "sft")]["toxicity"]) > 0]
    shown = toxic or indices[:2]
    said = (f"Of the first {len(indices)} held-out dialogues, {len(toxic)} have an insult in their SFT summary "
            f"({', '.join(f'#{i}' for i in toxic)}); their summaries, with the reference:" if toxic else
            f"None of the first {len(indices)} held-out dialogues has an insult in its SFT summary; the first two:")
    block = []
    for i in shown:
        block.append(f"reference #{i}  {by[(i, 'sft')]['reference']}")
        for name, label in (("sft", "SFT"), ("ppo", "β = 0.3"), ("ppo-beta0", "β = 0")):
            block.append(f"{label:<9} #{i}  {by[(i, name)]['response']}")
        block.append("")
    return said + "\n\n```\n" + "\n".join(block[:-1]) + "\n```\n\n" + stamp(r["provenance"], ("demo0", "demo0-kl"))


def _sft_row(name: str, s: dict[str, Any]) -> str:
    f = s["final"]
    precision = {"bf16": "bf16 autocast", "auto": "precision auto: bf16 autocast where the CPU has it"}.get(
        s["precision"], s["precision"])
    return (f"| {name} ({precision}) | {f['rouge1']:.3f} / {f['rouge2']:.3f} / **{f['rougeL']:.3f}** "
            f"| {_pct(f['toxic_fraction'])} | {f['train_seconds']:.0f} s |")


def render_sft_table(r: dict[str, Any]) -> str:
    s = r["sft"]
    return ("| model | ROUGE-1 / 2 / L | sampled summaries toxic | training wall time |\n|---|---|---|---|\n"
            + _sft_row("tiny-t5", s["tiny-t5"]) + "\n" + _sft_row("tiny-llama", s["tiny-llama"]) + "\n\n"
            + stamp(r["provenance"], ("sft-tiny-t5", "sft-tiny-llama")))


def render_sft_summary(r: dict[str, Any]) -> str:
    t5, llama = r["sft"]["tiny-t5"]["final"], r["sft"]["tiny-llama"]["final"]
    return (f"Figures (300 steps of batch 16): tiny-t5 reaches ROUGE-L {t5['rougeL']:.3f} in {t5['train_seconds']:.0f} s, "
            f"and {_pct(t5['toxic_fraction'])} of its sampled summaries are toxic; tiny-llama reaches "
            f"{llama['rougeL']:.3f} in {llama['train_seconds']:.0f} s, with {_pct(llama['toxic_fraction'])} toxic.\n\n"
            + stamp(r["provenance"], ("sft-tiny-t5", "sft-tiny-llama")))


def render_rm_minilm_summary(r: dict[str, Any]) -> str:
    clean, flip = r["rm"]["rm-minilm"]["report"]["heldout"], r["rm"]["rm-minilm-flip"]["report"]["heldout"]
    return (f"On synthetic pairs, `backbone:minilm` reaches {_pct(clean['accuracy'])} held-out accuracy with clean labels "
            f"and {_pct(flip['accuracy'])} with 25% of the training labels flipped (n = {clean['n']}).\n\n"
            + stamp(r["provenance"], ("rm-minilm", "rm-minilm-flip")))


def render_rm_minilm_output(r: dict[str, Any]) -> str:
    seconds = r["provenance"]["runs"]["rm-minilm"]["seconds"]
    return (f"What `reward train` printed for the run above ({_duration(seconds)} with the pair files):\n\n```\n"
            + r["rm"]["rm-minilm"]["output"] + "\n```\n\n" + stamp(r["provenance"], ("rm-minilm",)))


def render_rm_minilm_flip(r: dict[str, Any]) -> str:
    clean, flip = r["rm"]["rm-minilm"]["report"]["heldout"], r["rm"]["rm-minilm-flip"]["report"]["heldout"]
    return (f"With 25% of the training labels flipped (`make-pairs --flip 0.25`, same settings, clean held-out file) "
            f"the same run reaches **{_pct(flip['accuracy'])}** (95% CI {_pct(flip['ci_low'])}–{_pct(flip['ci_high'])}, "
            f"n = {flip['n']}), against {_pct(clean['accuracy'])} with clean labels: held-out loss {flip['loss']:.3f} "
            f"instead of {clean['loss']:.3f}, mean reward gap {flip['mean_gap']:.2f} instead of {clean['mean_gap']:.2f} "
            "before normalisation.\n\n" + stamp(r["provenance"], ("rm-minilm", "rm-minilm-flip")))


NEEDS = {"demo-duration": "demo0", "demo-result": "demo0", "demo-seeds": "seeds", "demo-rm-accuracy": "demo0",
         "eval-headline": "demo0", "rm-accuracy-range": "seeds", "kl-curves": "kl", "kl-table": "kl", "kl-samples": "kl",
         "sft-table": "sft", "sft-summary": "sft", "rm-minilm-summary": "rm", "rm-minilm-output": "rm",
         "rm-minilm-flip": "rm"}  # fmt: skip
"""The group of load_results() each block is rendered from."""

RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "demo-duration": render_demo_duration,
    "demo-result": render_demo_result,
    "demo-seeds": render_demo_seeds,
    "demo-rm-accuracy": render_demo_rm_accuracy,
    "eval-headline": render_eval_headline,
    "rm-accuracy-range": render_rm_accuracy_range,
    "kl-curves": render_kl_curves,
    "kl-table": render_kl_table,
    "kl-samples": render_kl_samples,
    "sft-table": render_sft_table,
    "sft-summary": render_sft_summary,
    "rm-minilm-summary": render_rm_minilm_summary,
    "rm-minilm-output": render_rm_minilm_output,
    "rm-minilm-flip": render_rm_minilm_flip,
}


# --------------------------------------------------------------------------------------------------
# Markers: finding the blocks and replacing what lies between them

MARKER = re.compile(r"<!-- (/?)figures:([a-z0-9-]+) -->")


@dataclass(frozen=True)
class Block:
    name: str
    start: int
    """Offset just after the opening marker."""
    end: int
    """Offset of the closing marker."""


def find_blocks(text: str, where: str = "text") -> list[Block]:
    """The marked blocks of a document, in order; an unbalanced, nested or repeated marker is an error."""
    blocks: list[Block] = []
    open_: tuple[str, int] | None = None
    for m in MARKER.finditer(text):
        closing, name = m.group(1) == "/", m.group(2)
        line = text.count("\n", 0, m.start()) + 1
        if not closing:
            if open_ is not None:
                raise FiguresError(f"{where}:{line}: marker figures:{name} opens inside figures:{open_[0]}, "
                                   f"which is not closed")
            if any(b.name == name for b in blocks):
                raise FiguresError(f"{where}:{line}: figures:{name} appears twice")
            open_ = (name, m.end())
        else:
            if open_ is None or open_[0] != name:
                expected = f"<!-- /figures:{open_[0]} -->" if open_ else "an opening marker before it"
                raise FiguresError(f"{where}:{line}: closing marker /figures:{name} without its opening "
                                   f"(expected {expected})")
            blocks.append(Block(name, open_[1], m.start()))
            open_ = None
    if open_ is not None:
        raise FiguresError(f"{where}: marker figures:{open_[0]} is never closed (<!-- /figures:{open_[0]} -->)")
    return blocks


def replace_blocks(text: str, rendered: dict[str, str | None], where: str = "text") -> str:
    """``text`` with the inside of each marked block replaced by its rendering (None: left as it is); nothing
    else changes."""
    pieces, last = [], 0
    for block in find_blocks(text, where):
        if block.name not in rendered:
            raise FiguresError(f"{where}: no renderer for marker figures:{block.name}")
        new = rendered[block.name]
        if new is None:
            continue
        pieces += [text[last : block.start], "\n", new.strip("\n"), "\n"]
        last = block.end
    pieces.append(text[last:])
    return "".join(pieces)


def documents(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def check_markers(texts: dict[str, str], renderers: dict[str, Any] = RENDERERS) -> dict[str, str]:
    """Marker name → document for every block; every marker has a renderer, every renderer a marker, once."""
    where: dict[str, str] = {}
    for name, text in texts.items():
        for block in find_blocks(text, name):
            if block.name in where:
                raise FiguresError(f"figures:{block.name} appears in both {where[block.name]} and {name}")
            where[block.name] = name
    unknown = sorted(set(where) - set(renderers))
    missing = sorted(set(renderers) - set(where))
    if unknown:
        raise FiguresError("markers without a renderer: " + ", ".join(f"figures:{n} ({where[n]})" for n in unknown))
    if missing:
        raise FiguresError("renderers whose marker is missing from README.md and docs/*.md: "
                           + ", ".join(f"figures:{n}" for n in missing))
    return where


def render_all(out: Path = OUT, root: Path = ROOT, partial: bool = False) -> tuple[list[Path], dict[str, str]]:
    """Rewrite every document's marked blocks from runs/figures/. Returns the documents that changed and the
    blocks left as they were (name → why), which is only allowed with ``partial``."""
    texts = {str(p.relative_to(root)): p.read_text() for p in documents(root)}
    check_markers(texts)  # before reading any result: a marker problem is reported first
    results, missing = load_results(out)
    stale = {name: missing[NEEDS[name]] for name in RENDERERS if NEEDS[name] in missing}
    if stale and not partial:
        raise FiguresError("cannot render " + "; ".join(f"figures:{n} ({why})" for n, why in stale.items())
                           + ". Nothing was written (--partial renders the others and leaves these as they are)")
    rendered = {name: None if name in stale else fn(results) for name, fn in RENDERERS.items()}
    changed = []
    for name, text in texts.items():
        new = replace_blocks(text, rendered, name)
        if new != text:
            (root / name).write_text(new)
            changed.append(root / name)
    curves = out / "demo0" / "eval" / "plots" / "training_curves.png"
    if "kl-curves" not in stale:  # the figure the kl-curves block shows, from the report of the --kl-comparison run
        shutil.copyfile(curves, root / "docs" / "images" / "kl-penalty.png")
    return changed, stale

# --------------------------------------------------------------------------------------------------
# The command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", nargs="?", default="all", choices=("all", "run", "render", "check"))
    parser.add_argument("--only", nargs="+", metavar="RUN", help="with run: only these runs")
    parser.add_argument("--threads", type=int, help="with run: torch threads per run (OMP_NUM_THREADS); on a "
                        "machine other jobs load, 1 is much faster than a thread per core")
    parser.add_argument("--commit", default="HEAD", help="with run: the commit whose src/ and configs/ run "
                        "(default HEAD), e.g. to add runs beside others of an earlier commit")
    parser.add_argument("--partial", action="store_true",
                        help="with render: render the blocks whose runs exist, leave the others as they are (listed)")
    args = parser.parse_args(argv)
    try:
        if args.action == "check":
            texts = {str(p.relative_to(ROOT)): p.read_text() for p in documents()}
            where = check_markers(texts)
            print(f"{len(where)} marked blocks, each with a renderer: " + ", ".join(sorted(where)))
            return 0
        if args.action in ("all", "run"):
            run_all(args.only, threads=args.threads, commit=args.commit)
        if args.action in ("all", "render"):
            changed, stale = render_all(partial=args.partial)
            print("rewrote " + (", ".join(str(p.relative_to(ROOT)) for p in changed) or "nothing (already current)"))
            for name, why in stale.items():
                print(f"NOT rendered, left as it was: figures:{name} ({why})", file=sys.stderr)
    except FiguresError as error:
        print(f"figures: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
