"""`rlhfkit eval`: the command, and the headline table it (and the demo) prints."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.table import Table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="compare policies on held-out prompts with confidence intervals and paired tests",
        description="Sample every policy on the same held-out prompts (prompt i gets the same random stream under "
        "every policy), score the responses (toxicity, reward.rewards, ROUGE against the references, KL to the "
        "reference policy, length, distinct-n), and report bootstrap confidence intervals, paired differences "
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
    """Mean [CI] of each measure per policy, and the change from the first policy with its CI and p-value."""
    names = results["policy_order"]
    pct = round(results["confidence"] * 100)
    table = Table(title=f"{results['prompts']} {results['split']} prompts, {pct}% bootstrap intervals")
    table.add_column("measure")
    for name in names:
        table.add_column(name, justify="right")
    first = names[0]
    comparisons = {c["b"]: c for c in results["comparisons"] if c["a"] == first}
    for name in names[1:]:
        table.add_column(f"{name} − {first}", justify="right")
    for m in results["measures"]:
        cells = []
        for name in names:
            s = results["policies"][name]["measures"][m["key"]]
            low, high = _fixed(s["mean_ci"]["low"]), _fixed(s["mean_ci"]["high"])
            cells.append(f"{_fixed(s['mean'])}\n[dim][{low}, {high}][/dim]")
        for name in names[1:]:
            r = comparisons[name]["measures"][m["key"]]
            style = _style(m["higher_is_better"], r["ci"]["low"], r["ci"]["high"])
            text = f"{r['mean_difference']:+.3f} p={r['p_value']:.2g}\n[{r['ci']['low']:+.3f}, {r['ci']['high']:+.3f}]"
            cells.append(f"[{style}]{text}[/{style}]" if style else text)
        arrow = {True: " ↑", False: " ↓"}.get(m["higher_is_better"], "")
        table.add_row(m["label"] + arrow, *cells)
    table.add_row("distinct-2", *[f"{results['policies'][n]['distinct_2']:.3f}" for n in names],
                  *["" for _ in names[1:]])  # fmt: skip
    console.print(table)


def _fixed(value: float) -> str:
    """Three decimals, without the "-0.000" of a float-rounding residue."""
    text = f"{value:.3f}"
    return text[1:] if text == "-0.000" else text


def _style(higher_is_better: bool | None, low: float, high: float) -> str:
    """green when the interval shows an improvement, red when it shows a deterioration."""
    if higher_is_better is None or low <= 0 <= high:
        return ""
    improved = (low > 0) == higher_is_better
    return "green" if improved else "red"
