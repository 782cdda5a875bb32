"""The verdict of an evaluation in plain words: one paragraph per policy against the baseline (the first).

Computed once from results.json's figures, and shown by both the terminal (`rlhfkit eval`, `rlhfkit demo`)
and report.html, so the two never disagree. A change is called better or worse only when its bootstrap
interval lies entirely on one side of 0; otherwise it is "no clear change", whatever the point estimate.
"""

from __future__ import annotations

from typing import Any

# measures the verdict names beside the primary one (the first measure listed), when they were measured
SECONDARY = ("rougeL",)


def judgement(higher_is_better: bool | None, low: float, high: float) -> str | None:
    """"better" / "worse" when the interval of b − a lies entirely on one side of 0, else "no clear change";
    None for a measure without a better direction (KL, length)."""
    if higher_is_better is None:
        return None
    if low <= 0 <= high:
        return "no clear change"
    return "better" if (low > 0) == higher_is_better else "worse"


def _value(measure: dict[str, Any], x: float) -> str:
    return f"{x:.1%}" if measure.get("share") else f"{x:.3f}"


def _change(measure: dict[str, Any], x: float) -> str:
    return f"{100 * x:+.1f} points" if measure.get("share") else f"{x:+.3f}"


def _bound(measure: dict[str, Any], x: float) -> str:
    return f"{100 * x:+.1f}" if measure.get("share") else f"{x:+.3f}"


def format_p(p: float) -> str:
    """Two significant digits below 0.001, else three decimals."""
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def measure_sentence(results: dict[str, Any], measure: dict[str, Any], a: str, b: str) -> str:
    """'<label> <a's mean> → <b's mean> (<change>, 95% CI <low> to <high>, Wilcoxon p = ...): <judgement>.'"""
    key = measure["key"]
    comparison = next(c for c in results["comparisons"] if c["a"] == a and c["b"] == b)
    r = comparison["measures"][key]
    before, after = (results["policies"][n]["measures"][key]["mean"] for n in (a, b))
    level = round(results["confidence"] * 100)
    text = (f"{measure['label']} {_value(measure, before)} → {_value(measure, after)} ({_change(measure, r['mean_difference'])}, "
            f"{level}% CI {_bound(measure, r['ci']['low'])} to {_bound(measure, r['ci']['high'])}, "
            f"Wilcoxon p = {format_p(r['p_value'])})")  # fmt: skip
    verdict = judgement(measure["higher_is_better"], r["ci"]["low"], r["ci"]["high"])
    return f"{text}: {verdict}." if verdict else f"{text}."


def verdict_lines(results: dict[str, Any]) -> list[str]:
    """One paragraph per policy after the first: the primary measure (the first listed, e.g. toxicity), ROUGE-L,
    the KL to the reference policy and the share of repeated responses (the collapse check), each against the
    first policy, the baseline."""
    names = results["policy_order"]
    if len(names) < 2:
        return []
    a = names[0]
    by_key = {m["key"]: m for m in results["measures"]}
    shown = [results["measures"][0]] + [by_key[k] for k in SECONDARY if k in by_key and k != results["measures"][0]["key"]]
    lines = []
    for b in names[1:]:
        parts = [measure_sentence(results, m, a, b) for m in shown]
        extra = []
        if "kl" in by_key and b != results["reference"]:
            kl = results["policies"][b]["measures"]["kl"]["mean"]
            extra.append(f"KL to {results['reference']} {kl:.2f} nats per response")
        repeated = [results["policies"][n].get("repeated_share") for n in (a, b)]
        if None not in repeated:
            extra.append(f"repeated responses {repeated[0]:.1%} → {repeated[1]:.1%}")
        if extra:
            parts.append("; ".join(extra)[0].upper() + "; ".join(extra)[1:] + ".")
        lines.append(f"{b} against {a}: " + " ".join(parts))
    return lines
