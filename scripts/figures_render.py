"""Rendering for `make figures` (scripts/figures.py): pure functions from figures_runs.load_results()'s dict to
Markdown, one per marked block."""

from __future__ import annotations

from typing import Any, Callable

from figures_runs import FiguresError

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
