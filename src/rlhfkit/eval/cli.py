"""`rlhfkit eval`: the command, and the headline table it (and the demo) prints."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.table import Table

from rlhfkit.eval.verdict import format_p, judgement


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="compare policies on held-out prompts with confidence intervals and paired tests",
        description="Sample every policy on the same held-out prompts (prompt i gets the same random stream under "
        "every policy), score the responses (toxicity, reward.rewards, ROUGE against the references, KL to the "
        "reference policy, length, the repeated-response share), and report bootstrap confidence intervals, paired differences "
        "with a Wilcoxon test and win rates. Writes report.html, results.json and CSV tables.",
        epilog="example: rlhfkit eval --config configs/ppo-tiny-t5.yaml --policy sft=runs/sft-tiny-t5/adapter "
        "--policy ppo=runs/ppo-tiny-t5/adapter -o runs/eval",
    )
    p.add_argument("--config", "-c", action="append", default=[], metavar="FILE",
                   help="YAML config (model, data, generation, reward, eval); repeat to layer several")  # fmt: skip
    p.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override one setting, e.g. --set eval.prompts=512")  # fmt: skip
    p.add_argument("--policy", "-p", action="append", default=[], metavar="NAME=PATH",
                   help="a policy to evaluate: NAME=ADAPTER_FOLDER, an adapter folder, or 'base'; repeat (the first "
                   "is the baseline). Replaces eval.policies.")  # fmt: skip
    p.add_argument("--prompts", "-n", type=int, help="number of held-out prompts (eval.prompts, default 256)")
    p.add_argument("--output-dir", "-o", help="where to write the report (overrides run.output_dir)")
    p.add_argument("--no-progress", action="store_true", help="print nothing but the headline table")
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    from rlhfkit.config import load_config, replace
    from rlhfkit.eval.evaluate import run_eval

    cfg = load_config(args.config, args.overrides)
    changes: dict[str, Any] = {"run.output_dir": args.output_dir or _default_output(cfg.run.output_dir)}
    if args.policy:
        changes["eval.policies"] = list(args.policy)
    if args.prompts is not None:
        changes["eval.prompts"] = args.prompts
    cfg = replace(cfg, **changes)
    cfg.validate()  # the command-line values obey the same rules as the file's
    result = run_eval(cfg, progress=not args.no_progress)
    print_headline(result.results, Console())
    print(f"report: {result.report}   results: {result.output_dir / 'results.json'}")
    return 0


def _default_output(configured: str) -> str:
    """A config written for training points run.output_dir at the training run; eval writes beside it."""
    return configured.rstrip("/") + "-eval"


def print_headline(results: dict[str, Any], console: Console) -> None:
    """What the terminal shows, readable at 80 columns: the means per policy (each interval on the line below
    its mean), then one table per policy against the first (the change, its interval, the Wilcoxon p-value
    and the judgement), then the verdict in words (:func:`rlhfkit.eval.verdict.verdict_lines`, as in report.html)."""
    from rlhfkit.eval.verdict import verdict_lines

    names = results["policy_order"]
    pct = round(results["confidence"] * 100)
    table = Table(title=f"{results['prompts']} {results['split']} prompts: mean, {pct}% bootstrap interval below")
    table.add_column("measure", min_width=12)
    for name in names:
        table.add_column(name, justify="right", no_wrap=True)
    for m in results["measures"]:
        cells = []
        for name in names:
            s = results["policies"][name]["measures"][m["key"]]
            cells.append(f"{_short(s['mean'])}\n[dim][{_short(s['mean_ci']['low'])}, {_short(s['mean_ci']['high'])}][/dim]")
        table.add_row(_label(m), *cells)
    if all("repeated_share" in results["policies"][n] for n in names):
        table.add_row("repeated responses (collapse)", *[f"{results['policies'][n]['repeated_share']:.1%}" for n in names])
    console.print(table)

    first = names[0]
    for name in names[1:]:
        comparison = next(c for c in results["comparisons"] if c["a"] == first and c["b"] == name)
        pairs = Table(title=f"{name} − {first}, paired on the same prompts")
        pairs.add_column("measure", min_width=12)
        for title in ("change", f"{pct}% interval", "Wilcoxon p", "verdict"):
            pairs.add_column(title, justify="right", no_wrap=True)
        for m in results["measures"]:
            r = comparison["measures"][m["key"]]
            style = _style(m["higher_is_better"], r["ci"]["low"], r["ci"]["high"])
            change = f"{_short(r['mean_difference'], sign=True)}"
            interval = f"[{_short(r['ci']['low'], sign=True)}, {_short(r['ci']['high'], sign=True)}]"
            word = judgement(m["higher_is_better"], r["ci"]["low"], r["ci"]["high"]) or "–"
            if style:
                change, word = f"[{style}]{change}[/{style}]", f"[{style}]{word}[/{style}]"
            pairs.add_row(_label(m), change, interval, format_p(r["p_value"]), word)
        console.print(pairs)
    for line in verdict_lines(results):
        console.print()
        console.print(line)


def _label(m: dict[str, Any]) -> str:
    arrow = {True: " ↑", False: " ↓"}.get(m["higher_is_better"], "")
    return m["label"] + arrow


def _short(value: float, sign: bool = False) -> str:
    """Three decimals below 10, one above (length in tokens), without the "-0.000" of a float-rounding residue."""
    decimals = 3 if abs(value) < 10 else 1
    return f"{0.0 if round(value, decimals) == 0 else value:{'+' if sign else ''}.{decimals}f}"


def _style(higher_is_better: bool | None, low: float, high: float) -> str:
    """green when the interval shows an improvement, red when it shows a deterioration."""
    word = judgement(higher_is_better, low, high)
    return {"better": "green", "worse": "red"}.get(word or "", "")
